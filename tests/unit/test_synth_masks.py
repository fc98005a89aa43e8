"""Anatomy masks of the synthetic generator: they coincide with the organs it draws."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from primia.cli import main
from primia.data import open_dataset
from primia.data.synth import MASK_COLUMNS, SynthConfig, _plan, write_dataset
from primia.data.synth_anatomy import anatomy_masks, draw_scene

SMALL = SynthConfig(sites=2, patients_per_site=3, images_per_patient=2, size=32, seed=3)


def test_masks_sit_where_the_renderer_darkens_lungs_and_brightens_the_heart() -> None:
    config = SynthConfig(sites=2, patients_per_site=20, images_per_patient=2, size=64, seed=1)
    plan = _plan(config)
    params = plan.params
    density = draw_scene(params, config.size, np.random.default_rng(0))
    lungs, heart = anatomy_masks(params, config.size)
    assert set(np.unique(lungs)) <= {0, 255} and set(np.unique(heart)) <= {0, 255}
    inside_lungs, inside_heart = lungs == 255, heart == 255
    assert inside_lungs.any(axis=(1, 2)).all() and inside_heart.any(axis=(1, 2)).all()
    assert not (inside_lungs & inside_heart).any()
    # Per image without a finding (findings fill the lungs' air): lungs are clearly darker
    # than the heart and than the rest of the body.
    healthy = np.flatnonzero(plan.meta.labels.sum(axis=1) == 0)
    assert len(healthy) >= 5
    for i in healthy:
        lung_mean = density[i][inside_lungs[i]].mean()
        heart_mean = density[i][inside_heart[i]].mean()
        rest = density[i][~inside_lungs[i] & ~inside_heart[i] & (density[i] > 0.2)].mean()
        assert lung_mean < heart_mean - 0.2
        assert lung_mean < rest - 0.15


def test_write_dataset_writes_masks_and_the_manifest_lists_them(tmp_path: Path) -> None:
    write_dataset(tmp_path, SMALL, progress=False, masks=True)
    with (tmp_path / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SMALL.n_images
    for row in rows:
        for column in MASK_COLUMNS:
            mask = np.asarray(Image.open(tmp_path / row[column]))
            assert mask.shape == (SMALL.size, SMALL.size)
            assert set(np.unique(mask)) <= {0, 255}
    dataset = open_dataset(tmp_path, image_size=SMALL.size)
    assert len(dataset) == SMALL.n_images
    write_dataset(tmp_path, SMALL, progress=False, overwrite=True)
    assert not list(tmp_path.rglob("*_lungs.png"))


def test_the_cli_writes_masks_on_request(tmp_path: Path) -> None:
    code = main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--sites",
            "1",
            "--patients-per-site",
            "2",
            "--images-per-patient",
            "1",
            "--size",
            "32",
            "--masks",
            "--no-progress",
        ]
    )
    assert code == 0
    assert len(list(tmp_path.rglob("*_heart.png"))) == 2

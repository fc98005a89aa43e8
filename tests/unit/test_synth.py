"""The synthetic radiograph generator: determinism, files, validation and what images show."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from primia.data.synth import (
    FINDINGS,
    MANIFEST_COLUMNS,
    SynthBatch,
    SynthConfig,
    generate,
    write_dataset,
)
from primia.errors import ConfigError, DataError

SMALL = SynthConfig(sites=2, patients_per_site=3, images_per_patient=2, size=32, seed=3)


@pytest.fixture(scope="module")
def batch() -> SynthBatch:
    """Enough images at 48 px for statistics: 3 sites x 30 patients x 4 images."""
    return generate(SynthConfig(sites=3, patients_per_site=30, images_per_patient=4, size=48))


def test_same_seed_gives_identical_arrays_and_another_seed_differs() -> None:
    first, second = generate(SMALL), generate(SMALL)
    assert first.images.dtype == np.uint8
    assert first.images.shape == (SMALL.n_images, 32, 32)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.age, second.age)
    other = generate(SynthConfig(sites=2, patients_per_site=3, images_per_patient=2, size=32))
    assert not np.array_equal(first.images, other.images)


def test_metadata_is_consistent(batch: SynthBatch) -> None:
    n = len(batch)
    assert batch.labels.shape == (n, len(FINDINGS))
    assert set(np.unique(batch.labels)) <= {0, 1}
    assert set(batch.sex) == {"F", "M"}
    assert set(batch.view) <= {"PA", "AP"}
    assert batch.age.min() >= 1 and batch.age.max() <= 90
    assert len(set(batch.patient_id)) == 90
    # Sex, age, cardiomegaly and nodule belong to the patient, not the image.
    for column in (batch.sex, batch.age, batch.label("cardiomegaly"), batch.label("nodule")):
        for patient in np.unique(batch.patient_id)[:20]:
            assert len(set(column[batch.patient_id == patient].tolist())) == 1
    prevalence = batch.labels.mean(axis=0)
    assert np.all(prevalence > 0.12) and np.all(prevalence < 0.5), prevalence


def test_manifest_has_the_columns_and_one_row_per_image(tmp_path: Path) -> None:
    summary = write_dataset(tmp_path / "synth", SMALL, progress=False)
    with summary.manifest.open(newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    assert header == "path,patient_id,site,view,sex,age,pneumonia,effusion,cardiomegaly,nodule"
    assert tuple(header.split(",")) == MANIFEST_COLUMNS
    assert len(rows) == SMALL.n_images == summary.n_images
    assert summary.n_patients == 6 and summary.sites == ("site0", "site1")
    assert rows[0]["path"] == "images/site0/site0-p0000_0.png"
    assert all((tmp_path / "synth" / row["path"]).is_file() for row in rows)
    assert {row["pneumonia"] for row in rows} <= {"0", "1"}


def test_png_matches_the_in_memory_array(tmp_path: Path) -> None:
    write_dataset(tmp_path, SMALL, progress=False)
    batch = generate(SMALL)
    for index, path in enumerate(batch.paths()):
        with Image.open(tmp_path / path) as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), batch.images[index])


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", SMALL, progress=False)
    second = write_dataset(tmp_path / "b", SMALL, progress=False)
    assert first.manifest.read_bytes() == second.manifest.read_bytes()
    for path in generate(SMALL).paths():
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()


def test_refuses_to_overwrite_a_dataset_unless_asked(tmp_path: Path) -> None:
    write_dataset(tmp_path, SMALL, progress=False)
    with pytest.raises(DataError, match="overwrite"):
        write_dataset(tmp_path, SMALL, progress=False)
    smaller = SynthConfig(sites=1, patients_per_site=2, images_per_patient=1, size=32)
    summary = write_dataset(tmp_path, smaller, progress=False, overwrite=True)
    assert summary.n_images == 2
    # The old dataset's images are gone, so a folder scan sees only the new ones.
    assert len(list((tmp_path / "images").rglob("*.png"))) == 2


def test_refuses_a_file_as_the_output_folder(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    with pytest.raises(DataError, match="not a folder"):
        write_dataset(target, SMALL, progress=False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("size", 16, "size must be between 32 and 1024"),
        ("size", 2048, "size must be between 32 and 1024"),
        ("sites", 0, "sites must be between 1"),
        ("sites", 25, "own burned-in marker"),
        ("patients_per_site", 0, "patients_per_site"),
        ("images_per_patient", 2.5, "must be an integer"),
        ("seed", -1, "seed must be between 0"),
        ("sites", True, "must be an integer"),
    ],
)
def test_config_validation_names_the_value(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**{field: value})  # type: ignore[arg-type]


def test_images_of_one_patient_look_alike(batch: SynthBatch) -> None:
    pixels = batch.images.astype(np.float32)
    # 4 x 4 block means: the anatomy without most of the detector noise.
    blocks = pixels.reshape(len(batch), 12, 4, 12, 4).mean(axis=(2, 4))
    for images, ratio in ((pixels, 1.0), (blocks, 0.8)):
        flat = images.reshape(len(batch), -1)
        # Pairs within a site, so that site looks do not set different patients apart.
        same = [np.abs(flat[i] - flat[i + 1]).mean() for i in range(0, 120, 4)]
        different = [np.abs(flat[i] - flat[i + 5]).mean() for i in range(0, 120, 4)]
        assert np.mean(same) < ratio * np.mean(different)


def test_sites_differ_in_intensity_and_noise(batch: SynthBatch) -> None:
    images = batch.images.astype(np.float32)
    # High-pass residual: the image minus its 3 x 3 mean, dominated by detector noise.
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    local_mean = sum(
        padded[:, 1 + dy : 1 + dy + 48, 1 + dx : 1 + dx + 48]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ) / np.float32(9.0)
    residual = (images - local_mean)[:, 8:40, 8:40].std(axis=(1, 2))
    means, noises = [], []
    for site in np.unique(batch.site):
        chosen = batch.site == site
        means.append(images[chosen].mean())
        noises.append(residual[chosen].mean())
    assert max(means) - min(means) > 3.0, means
    assert max(noises) > 1.3 * min(noises), noises


def test_site_marker_is_burned_in(batch: SynthBatch) -> None:
    # Each site's corner regions differ: the marker makes one corner bright.
    corners = batch.images[:, :8, :8].mean(axis=(1, 2)), batch.images[:, :8, -8:].mean(axis=(1, 2))
    site0 = batch.site == "site0"
    site1 = batch.site == "site1"
    assert corners[0][site0].mean() > corners[0][site1].mean() + 20
    assert corners[1][site1].mean() > corners[1][site0].mean() + 20


def _lung_band(batch: SynthBatch) -> np.ndarray:
    """Mean grey level over the middle and lower lung fields of 48 px images."""
    region = batch.images[:, 14:30, 4:44].astype(np.float32)
    # Normalise each image by its own mean, which removes most of the site's exposure.
    return region.mean(axis=(1, 2)) / batch.images.reshape(len(batch), -1).mean(axis=1)


@pytest.mark.parametrize("finding", ["pneumonia", "effusion"])
def test_lung_opacities_brighten_the_lungs(batch: SynthBatch, finding: str) -> None:
    band = _lung_band(batch)
    present = batch.label(finding) == 1
    assert band[present].mean() > band[~present].mean() + 0.05


def test_every_finding_is_separable_by_a_linear_model_on_few_pixels(batch: SynthBatch) -> None:
    # A ridge-regularised least-squares classifier on 12 x 12 block means, trained on the
    # first two sites' patients and scored on the third: a finding the pixels show.
    blocks = batch.images.reshape(len(batch), 12, 4, 12, 4).astype(np.float32).mean(axis=(2, 4))
    features = blocks.reshape(len(batch), -1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    features = np.hstack([features, np.ones((len(batch), 1), np.float32)])
    train, test = batch.site != "site2", batch.site == "site2"
    for finding in ("pneumonia", "effusion", "cardiomegaly"):
        target = batch.label(finding).astype(np.float32) * 2 - 1
        gram = features[train].T @ features[train] + 10.0 * np.eye(features.shape[1])
        weights = np.linalg.solve(gram, features[train].T @ target[train])
        score = features[test] @ weights
        assert _auroc(batch.label(finding)[test], score) > 0.8, finding


def test_nodules_add_a_small_bright_spot(batch: SynthBatch) -> None:
    # A top-hat filter: the largest excess of a 3 x 3 mean over its 9 x 9 surroundings,
    # over the lung fields. Ribs and the heart are too wide to stand out in it.
    images = batch.images.astype(np.float32)
    spot = ndimage.uniform_filter(images, size=(1, 3, 3))
    surroundings = ndimage.uniform_filter(images, size=(1, 9, 9))
    excess = (spot - surroundings)[:, 6:40, 4:44].max(axis=(1, 2))
    assert _auroc(batch.label("nodule"), excess) > 0.9


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from primia.cli import data

    parser = argparse.ArgumentParser(prog="primia")
    data.register(parser.add_subparsers())
    out = tmp_path / "cli"
    argv = ["data", "synth", "--out", str(out), "--sites", "1", "--patients-per-site", "2"]
    args = parser.parse_args([*argv, "--size", "32", "--no-progress"])
    assert args.handler(args) == 0
    assert (out / "manifest.csv").is_file()
    assert "8 of 32x32 px" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="size must be between"):
        bad = parser.parse_args([*argv, "--size", "8", "--overwrite"])
        bad.handler(bad)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)

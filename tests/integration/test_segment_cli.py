"""``primia segment train|apply`` end to end on tiny synthetic radiographs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from primia.api.segment import load_segmenter
from primia.cli import main
from primia.data import open_dataset
from primia.data.synth import SynthConfig, write_dataset
from primia.segment import dataset_masks, dice


def test_train_reports_heldout_dice_and_apply_writes_a_mask_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_dataset(
        data,
        SynthConfig(sites=1, patients_per_site=20, images_per_patient=2, size=32, seed=3),
        progress=False,
        masks=True,
    )
    seg = tmp_path / "seg"
    common = ["--image-size", "32", "--threads", "1"]
    assert (
        main(["segment", "train", "--data", str(data), "--out", str(seg), "--steps", "40", *common])
        == 0
    )
    printed = capsys.readouterr().out
    assert "held-out patients" in printed and "lungs" in printed and "heart" in printed
    summary = json.loads((seg / "segmenter.json").read_text())
    for region in ("lungs", "heart"):
        assert summary["heldout_dice"][region] > summary["all_foreground_dice"][region] + 0.2
    _, spec = load_segmenter(seg)
    assert spec.image_size == 32 and spec.regions == ("lungs", "heart")
    assert not (seg / "segmenter.safetensors").read_bytes().startswith(b"\x80")  # no pickle

    out = tmp_path / "masked"
    assert (
        main(
            [
                "segment",
                "apply",
                "--segmenter",
                str(seg),
                "--data",
                str(data),
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    original = open_dataset(data, image_size=32)
    copy = open_dataset(out, image_size=32)
    assert copy.patient_ids == original.patient_ids
    assert (copy.targets() == original.targets()).all()
    predicted = dataset_masks(copy, out).float()
    truth = dataset_masks(original, data).float()
    assert predicted.shape == truth.shape == (len(original), 2, 32, 32)
    assert min(dice(predicted, truth)) > 0.6
    assert torch.equal(copy.uint8_tensors()[0], original.uint8_tensors()[0])
    assert (
        main(["segment", "apply", "--segmenter", str(seg), "--data", str(data), "--out", str(out)])
        == 2
    )


def test_a_manifest_without_masks_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "plain"
    write_dataset(
        data,
        SynthConfig(sites=1, patients_per_site=4, images_per_patient=2, size=32),
        progress=False,
    )
    assert (
        main(
            [
                "segment",
                "train",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "s"),
                "--image-size",
                "32",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "mask_lungs" in error and "primia data synth --masks" in error
    assert (
        main(
            [
                "segment",
                "apply",
                "--segmenter",
                str(tmp_path / "none"),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "primia segment train" in capsys.readouterr().err

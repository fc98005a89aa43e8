"""The re-identification audit on synthetic radiographs: the verifier learns identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from primia.audit import AttackConfig, AttackName, InversionConfig, run_inversion_audit
from primia.audit.reid import ReidConfig, run_reid_audit
from primia.cli import main
from primia.data.synth import SynthConfig, write_dataset
from primia.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def patients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reid")
    write_dataset(
        root,
        SynthConfig(sites=1, patients_per_site=80, images_per_patient=4, size=32, seed=4),
        progress=False,
    )
    return root


def tiny(data: Path, **changes: object) -> ReidConfig:
    """A verifier small and quick enough for a test (a CNN at 32 px)."""
    values: dict = dict(
        data=data, model="cnn", width=4, image_size=32, epochs=1, pairs_per_epoch=200, resamples=50
    )
    values.update(changes)
    return ReidConfig(**values)


def reid_command(data: Path, out: Path, *options: object) -> int:
    """``primia audit reid`` with a CNN at 32 px and 50 resamples, plus ``options``."""
    return main(
        [
            "audit",
            "reid",
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            "cnn",
            "--image-size",
            "32",
            "--resamples",
            "50",
            *map(str, options),
        ]
    )


def test_the_verifier_recognises_unseen_patients(patients: Path) -> None:
    audit, _ = run_reid_audit(tiny(patients, width=8, epochs=4, pairs_per_epoch=800, resamples=200))
    assert audit.test_patients >= 20 and audit.test_images == 4 * audit.test_patients
    assert audit.auroc.lower > 0.6, audit.auroc  # clearly above chance on unseen patients
    assert audit.auroc.lower <= audit.auroc.value <= audit.auroc.upper
    chance = 3 / (audit.test_images - 1)  # a random best match is the same patient
    assert audit.chance_precision_at_1 == pytest.approx(chance)
    assert audit.precision_at_1 > chance
    assert len(audit.history) == 4 and 1 <= audit.best_epoch <= 4


def test_cli_writes_the_report(patients: Path, tmp_path: Path) -> None:
    out = tmp_path / "reid"
    assert reid_command(patients, out, "--width", 4, "--epochs", 1, "--pairs-per-epoch", 200) == 0
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["verification_auroc"]["value"] <= 1
    assert len(list(out.glob("pair-*.png"))) == 3
    page = (out / "report.html").read_text()
    assert "Re-identification audit" in page and "above 0.6" in page
    assert "chance" in page and "chance_precision_at_1" in report
    assert page.count("<figure>") == 3 and "validation AUROC per epoch" in page  # the chart


def test_one_image_per_patient_is_a_clear_error(tmp_path: Path) -> None:
    write_dataset(
        tmp_path / "single",
        SynthConfig(sites=1, patients_per_site=30, images_per_patient=1, size=32),
        progress=False,
    )
    with pytest.raises(DataError, match="single image"):
        run_reid_audit(
            ReidConfig(data=tmp_path / "single", model="cnn", width=4, image_size=32, epochs=1)
        )


def test_linkage_attack_on_images_that_keep_nothing_is_at_chance(patients: Path) -> None:
    config = tiny(patients)
    blank, _ = run_reid_audit(config, transform=lambda images: images * 0)
    # Every shared image alike: a score depends on the real image alone, not on the pair.
    assert blank.auroc.lower < 0.5 < blank.auroc.upper
    assert abs(blank.auroc.value - 0.5) < 0.1
    with pytest.raises(ValueError, match="changed the images"):
        run_reid_audit(config, transform=lambda images: images[:, :, :16])


def test_the_inversion_audit_links_reconstructions_with_the_verifier(
    patients: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reid"
    assert reid_command(patients, out, "--width", 8, "--epochs", 3, "--pairs-per-epoch", 600) == 0
    assert (out / "verifier.safetensors").exists()
    config = InversionConfig(
        data=patients,
        model="lenet",
        image_size=32,
        images=4,
        verifier=out,
        attack=AttackConfig(name=AttackName.IDLG, iterations=100),
        progress=False,
    )
    audit = run_inversion_audit(config).audits[0]
    linked = [s.verifier_patient_correct for o in audit.outcomes for s in o.scores]
    assert len(linked) == 4 and all(isinstance(value, bool) for value in linked)
    assert audit.summary.reidentified_by_verifier == pytest.approx(sum(linked) / 4)
    with pytest.raises(ConfigError, match="trained at 32 px"):
        run_inversion_audit(
            InversionConfig(
                data=patients, model="lenet", image_size=48, images=1, verifier=out, progress=False
            )
        )

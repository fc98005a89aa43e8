"""The audit report: strict JSON, one grid per audit laid out as documented, escaped HTML."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from primia.audit.report import MIN_TILE_PX, PRIOR_GAP, TILE_GAP, write_report
from primia.audit.results import (
    LEAKAGE_THRESHOLD,
    PSNR_MARGIN_DB,
    AttackOutcome,
    ImageScore,
    InversionAudit,
    chance_tail,
    summarize,
)

SIZE = 32


def score(index: int, psnr: float, leakage: float) -> ImageScore:
    return ImageScore(
        dataset_index=index,
        patient_id=f"p{index}",
        mse=0.01,
        psnr=psnr,
        ssim=0.5 + leakage / 2,
        prior_psnr=15.0,
        prior_ssim=0.5,
        leakage=leakage,
        label_accuracy=1.0,
        nearest_image_correct=leakage > 0,
        nearest_patient_correct=leakage > 0,
    )


def outcome(rng: np.random.Generator, scores: list[ImageScore]) -> AttackOutcome:
    shape = (len(scores), SIZE, SIZE)
    return AttackOutcome(
        originals=rng.random(shape, dtype=np.float32),
        reconstructions=rng.random(shape, dtype=np.float32),
        scores=scores,
        seconds=2.0,
        attack_loss=0.1,
    )


def audit(settings: dict, psnrs: tuple[float, float, float], leakage: float) -> InversionAudit:
    """3 images in 2 attacks (2 + 1) of random 32×32 images."""
    rng = np.random.default_rng(len(settings))
    outcomes = [
        outcome(rng, [score(0, psnrs[0], leakage), score(1, psnrs[1], leakage)]),
        outcome(rng, [score(2, psnrs[2], leakage)]),
    ]
    return InversionAudit(
        settings=settings,
        prior=np.full((SIZE, SIZE), 0.5, dtype=np.float32),
        outcomes=outcomes,
        summary=summarize(outcomes),
        epsilon=None,
        notes=["the attack ran on a CPU"],
    )


@pytest.fixture
def audits() -> list[InversionAudit]:
    settings = {"attack": "invertinggradients", "batch_size": 2, "model": "<script>x</script>"}
    leaky = audit({**settings, "defense": "none"}, (math.inf, 30.0, 28.0), leakage=0.8)
    private = audit({**settings, "defense": "dp"}, (14.0, 15.0, 14.5), leakage=0.0)
    return [leaky, replace(private, epsilon=3.5)]


def reject(constant: str) -> None:
    raise ValueError(f"{constant} is not strict JSON")


def test_the_audits_reach_both_verdicts(audits):
    assert [a.summary.verdict for a in audits] == [
        "leaks: 3 of 3 images reconstructed or re-identified",
        "no leak found by these attacks: inconclusive, not a proof of safety",
    ]


def test_chance_tail_is_the_binomial_tail():
    assert chance_tail([0.5] * 3, 2) == pytest.approx(0.5)  # (3 + 1) / 8
    assert chance_tail([0.1, 0.2], 0) == 1.0 and chance_tail([0.1, 0.2], 2) == pytest.approx(0.02)


def test_re_identification_counts_only_beyond_chance():
    rng = np.random.default_rng(0)
    # 16 images, 240 in the gallery, 4 per patient. No reconstruction: leaks only by re-id.
    blank = replace(score(0, 15.0, 0.0), gallery_size=240, patient_images=4)
    # One nearest-patient hit: chance alone gives one in 4 audits (1 − (1 − 1/60)^16).
    lucky = [replace(blank, nearest_patient_correct=i == 0) for i in range(16)]
    summary = summarize([outcome(rng, lucky)])
    assert summary.verdict == "no leak found by these attacks: inconclusive, not a proof of safety"
    assert summary.chance_level == ("pixels patient",)
    # Four hits: P ≈ 2e-4, a real attacker's.
    found = [replace(blank, nearest_patient_correct=i < 4) for i in range(16)]
    assert summarize([outcome(rng, found)]).leaked_images == 4
    # One image alone found among 240 by its features: p = 1/240 counts.
    exact = replace(blank, feature_image_correct=True, feature_patient_correct=False)
    assert summarize([outcome(rng, [exact])]).leaked_images == 1
    # Without the gallery's size the chance is unknown and a hit counts, as before.
    assert summarize([outcome(rng, [replace(lucky[0], gallery_size=None)])]).leaked_images == 1


def test_json_is_strict_and_has_every_audit(audits, tmp_path):
    files = write_report(audits, tmp_path / "report")
    assert files.json == tmp_path / "report" / "report.json"
    document = json.loads(files.json.read_text(), parse_constant=reject)
    assert document["thresholds"] == {
        "leakage": LEAKAGE_THRESHOLD,
        "psnr_margin_db": PSNR_MARGIN_DB,
    }
    assert [a["settings"]["defense"] for a in document["audits"]] == ["none", "dp"]
    leaky, private = document["audits"]
    assert leaky["images"][0]["psnr"] is None  # ∞: an exact copy
    assert leaky["images"][1]["psnr"] == 30.0
    assert [image["dataset_index"] for image in leaky["images"]] == [0, 1, 2]
    assert [attack["images"] for attack in leaky["attacks"]] == [2, 1]
    assert leaky["summary"]["verdict"].startswith("leaks: 3 of 3")
    assert leaky["summary"]["leaked_images"] == 3
    assert all(image["leaked"] for image in leaky["images"])
    assert leaky["epsilon"] is None and private["epsilon"] == 3.5
    assert private["notes"] == ["the attack ran on a CPU"]


def test_grids_have_the_documented_layout(audits, tmp_path):
    files = write_report(audits, tmp_path)
    assert [path.name for path in files.grids] == ["grid-none.png", "grid-dp.png"]
    tile = SIZE * 3  # 32-px images are upscaled 3× to reach MIN_TILE_PX
    assert tile >= MIN_TILE_PX
    width = 3 * tile + 2 * TILE_GAP + PRIOR_GAP + tile
    height = 2 * tile + TILE_GAP
    for path in files.grids:
        with Image.open(path) as image:
            assert image.mode == "L"
            assert image.size == (width, height)
    with Image.open(files.grids[0]) as image:
        pixels = np.asarray(image)
    first = audits[0].outcomes[0]
    expected = np.round(first.originals[0] * 255).astype(np.uint8)
    assert np.array_equal(pixels[:tile:3, :tile:3], expected)
    expected = np.round(first.reconstructions[1] * 255).astype(np.uint8)
    second_column = pixels[tile + TILE_GAP :: 3, tile + TILE_GAP : 2 * tile + TILE_GAP : 3]
    assert np.array_equal(second_column, expected)
    assert (pixels[:tile, -tile:] == 128).all()  # the prior, 0.5 grey, in both rows
    assert (pixels[tile + TILE_GAP :, -tile:] == 128).all()
    assert (pixels[tile : tile + TILE_GAP] == 255).all()
    assert (pixels[:, width - tile - PRIOR_GAP : width - tile] == 255).all()


def test_grids_show_at_most_16_images_and_the_page_says_so(tmp_path):
    many = audit({"defense": "none"}, (20.0, 20.0, 20.0), leakage=0.0)
    outcomes = many.outcomes * 6  # 18 images
    many = replace(many, outcomes=outcomes, summary=summarize(outcomes))
    files = write_report([many], tmp_path)
    with Image.open(files.grids[0]) as image:
        assert image.width == 17 * SIZE * 3 + 15 * TILE_GAP + PRIOR_GAP
    assert "the first 16 of the 18 attacked images" in files.html.read_text()


def test_html_has_verdicts_thresholds_grids_and_escapes_settings(audits, tmp_path):
    files = write_report(audits, tmp_path)
    page = files.html.read_text()
    assert "leaks: 3 of 3 images reconstructed or re-identified" in page
    assert "no leak found by these attacks: inconclusive, not a proof of safety" in page
    assert "not a proof of safety" in page and "never its absence" in page
    assert 'class="verdict safe' not in page and "#e2f4e5" not in page  # no green box
    assert f"leakage value ≥ {LEAKAGE_THRESHOLD}" in page
    assert f"+ {PSNR_MARGIN_DB} dB" in page
    for grid in files.grids:
        assert f'<img src="{grid.name}"' in page
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "ε = 3.50" in page
    assert "the attack ran on a CPU" in page


def test_grid_labels_are_unique(audits, tmp_path):
    leaky = audits[0]
    without_defense = replace(leaky, settings={"attack": "dlg"})
    odd_name = replace(leaky, settings={"defense": "dp / clip"})
    files = write_report([leaky, leaky, without_defense, leaky, odd_name], tmp_path)
    names = [path.name for path in files.grids]
    assert names == [
        "grid-none.png",
        "grid-none-2.png",
        "grid-2.png",
        "grid-none-3.png",
        "grid-dp-clip.png",
    ]
    assert all(path.exists() for path in files.grids)
    assert "<h2>audit 2</h2>" in files.html.read_text()  # named like its grid

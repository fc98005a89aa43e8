import math

import numpy as np
import pytest

from primia.audit.metrics import (
    feature_matches,
    leakage_value,
    match,
    mse,
    nearest,
    pairwise_mse,
    psnr,
    score_images,
    ssim,
)


def images(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


def noisy(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0, scale, image.shape), 0, 1).astype(np.float32)


def slow_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM straight from the definition: an explicit 11×11 Gaussian window (σ = 1.5) at every
    position where it fits inside the image, population moments, mean of the map."""
    offsets = np.arange(-5, 6)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    a, b = a.astype(np.float64), b.astype(np.float64)
    values = []
    for row in range(5, a.shape[0] - 5):
        for col in range(5, a.shape[1] - 5):
            window = np.s_[row - 5 : row + 6, col - 5 : col + 6]
            wa, wb = a[window], b[window]
            ma, mb = (kernel * wa).sum(), (kernel * wb).sum()
            va, vb = (kernel * (wa - ma) ** 2).sum(), (kernel * (wb - mb) ** 2).sum()
            cov = (kernel * (wa - ma) * (wb - mb)).sum()
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def test_psnr_of_a_known_mse():
    a = np.zeros((16, 16), np.float32)
    b = np.full((16, 16), 0.1, np.float32)
    assert mse(a, b) == pytest.approx(0.01)
    assert psnr(a, b) == pytest.approx(20.0)


def test_psnr_is_infinite_for_identical_images():
    a = images(np.random.default_rng(0), 16, 16)
    assert psnr(a, a.copy()) == math.inf


def test_ssim_of_an_image_with_itself_is_one():
    a = images(np.random.default_rng(1), 16, 16)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("size", [16, 20])
def test_ssim_matches_the_definition(size: int):
    rng = np.random.default_rng(size)
    a = images(rng, size, size)
    for b in (images(rng, size, size), noisy(a, 0.1, rng)):
        assert ssim(a, b) == pytest.approx(slow_ssim(a, b), abs=1e-6)


def test_ssim_rejects_images_smaller_than_the_window():
    a = np.zeros((10, 12), np.float32)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(a, a)


def test_ssim_falls_as_noise_grows():
    rng = np.random.default_rng(2)
    a = images(rng, 32, 32)
    values = [ssim(a, noisy(a, scale, rng)) for scale in (0.01, 0.05, 0.1, 0.2, 0.4)]
    assert values == sorted(values, reverse=True)


def test_pairwise_mse_matches_mse():
    rng = np.random.default_rng(3)
    x, y = images(rng, 3, 8, 8), images(rng, 4, 8, 8)
    expected = [[mse(xi, yj) for yj in y] for xi in x]
    np.testing.assert_allclose(pairwise_mse(x, y), expected, rtol=1e-10)


def test_match_recovers_a_shuffled_permutation():
    rng = np.random.default_rng(4)
    originals = images(rng, 8, 16, 16)
    permutation = rng.permutation(8)
    reconstructions = np.stack([noisy(originals[i], 0.1, rng) for i in permutation])
    order = match(reconstructions, originals)
    assert (permutation[order] == np.arange(8)).all()


def test_match_refuses_unequal_counts():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="3 reconstructions to 2 originals"):
        match(images(rng, 3, 16, 16), images(rng, 2, 16, 16))


def test_nearest_finds_the_source_of_noisy_copies(monkeypatch: pytest.MonkeyPatch):
    # Blocks of 7 images, so that the search crosses block boundaries.
    monkeypatch.setattr("primia.audit.metrics.NEAREST_CHUNK_BYTES", 7 * 8 * 16 * 16)
    rng = np.random.default_rng(6)
    reference = images(rng, 200, 16, 16)
    sources = np.array([0, 6, 7, 123, 199])
    queries = np.stack([noisy(reference[i], 0.1, rng) for i in sources])
    assert (nearest(queries, reference) == sources).all()


def test_leakage_is_zero_for_the_prior_and_one_for_the_original():
    rng = np.random.default_rng(7)
    original = images(rng, 16, 16)
    prior = np.full_like(original, 0.5)
    prior_ssim = ssim(prior, original)
    assert leakage_value(prior_ssim, prior_ssim) == 0.0
    assert leakage_value(ssim(original, original), prior_ssim) == pytest.approx(1.0)
    assert leakage_value(0.3, 1.0) == 0.0


def test_score_images_fills_every_field():
    rng = np.random.default_rng(8)
    reference = images(rng, 6, 16, 16)
    patients = ["p0", "p0", "p1", "p1", "p2", "p2"]
    prior = reference.mean(0)
    originals = reference[[1, 4]]
    # The first is an exact copy; the second is nearest to image 5: the wrong image of the
    # right patient.
    reconstructions = np.stack([originals[0], 0.2 * originals[1] + 0.8 * reference[5]])
    first, second = score_images(
        originals,
        reconstructions,
        prior=prior,
        dataset_indices=[1, 4],
        reference=reference,
        reference_patient_ids=patients,
        label_accuracies=[1.0, 0.5],
    )
    assert (first.dataset_index, first.patient_id) == (1, "p0")
    assert (first.mse, first.psnr, first.ssim, first.leakage) == (0.0, math.inf, 1.0, 1.0)
    assert first.prior_psnr == pytest.approx(psnr(prior, originals[0]))
    assert first.prior_ssim == pytest.approx(ssim(prior, originals[0]))
    assert first.label_accuracy == 1.0
    assert first.nearest_image_correct and first.nearest_patient_correct

    assert (second.dataset_index, second.patient_id) == (4, "p2")
    assert second.mse == pytest.approx(mse(reconstructions[1], originals[1]))
    assert second.psnr == pytest.approx(psnr(reconstructions[1], originals[1]))
    assert second.ssim == pytest.approx(ssim(reconstructions[1], originals[1]))
    assert second.leakage == pytest.approx(leakage_value(second.ssim, second.prior_ssim))
    assert second.label_accuracy == 0.5
    assert not second.nearest_image_correct and second.nearest_patient_correct


def test_feature_matches_find_the_original_and_the_patient_left_out():
    rng = np.random.default_rng(0)
    # Three patients, two images each: a patient's images share most of their features.
    centres = rng.normal(0, 1, (3, 16))
    gallery = np.repeat(centres, 2, axis=0) + rng.normal(0, 0.1, (6, 16))
    patients = ["a", "a", "b", "b", "c", "c"]
    queries = gallery[[0, 3]] + rng.normal(0, 0.01, (2, 16))
    assert feature_matches(queries, gallery, dataset_indices=[0, 3], patient_ids=patients) == [
        (True, True),
        (True, True),
    ]
    # Another patient's features: the original is not found, nor its patient.
    assert feature_matches(gallery[[4]], gallery, dataset_indices=[0], patient_ids=patients) == [
        (False, False)
    ]
    # No features recovered (NaN): no match, whatever the gallery holds.
    assert feature_matches(
        np.full((1, 16), np.nan), gallery, dataset_indices=[0], patient_ids=patients
    ) == [(False, False)]


def test_feature_matches_ignore_what_every_image_shares():
    # A constant feature (a trap's counting channel) set huge must not decide the match.
    rng = np.random.default_rng(1)
    gallery = rng.normal(0, 1, (5, 8))
    gallery[:, 0] = 1e6
    query = gallery[[2]].copy()
    query[0, 1:] += rng.normal(0, 0.05, 7)
    (found,) = feature_matches(query, gallery, dataset_indices=[2], patient_ids=list("vwxyz"))
    assert found == (True, False)

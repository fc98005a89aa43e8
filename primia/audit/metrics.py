"""Image-similarity metrics for the gradient-inversion audit.

Images are ``float32[S, S]`` arrays (stacks ``[n, S, S]``) with values in [0, 1], so the
data range is 1 throughout. Everything is computed in float64.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import linear_sum_assignment

from primia.audit.results import ImageScore

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
"""5: the Gaussian window is 11×11, as scipy (and so scikit-image) truncates it."""

NEAREST_CHUNK_BYTES = 32 * 2**20
"""Reference images are compared in float64 blocks of at most this size."""


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error: mean((a − b)²)."""
    return float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio for data range 1: 10·log10(1 / MSE); ``math.inf`` when
    ``a`` and ``b`` are identical."""
    error = mse(a, b)
    return math.inf if error == 0 else 10 * math.log10(1 / error)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004) of two grayscale images, data range 1.

    With Gaussian-weighted (σ = 1.5, 11×11 window) local means μ, population variances σ²
    and covariance σ_ab, C1 = (0.01)², C2 = (0.03)²::

        SSIM map = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))

    and the result is the mean of the map over the pixels whose window lies inside the
    image (a border of 5 is cropped). This equals scikit-image's
    ``structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM needs two images of one 2-D shape, got {a.shape} and {b.shape}")
    window = 2 * SSIM_RADIUS + 1
    if min(a.shape) < window:
        raise ValueError(f"SSIM needs images of at least {window}×{window} pixels, got {a.shape}")

    def local_mean(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE)

    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mean_a * mean_a
    var_b = local_mean(b * b) - mean_b * mean_b
    cov = local_mean(a * b) - mean_a * mean_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    # Only windows entirely inside the image: the filter's border padding is made up.
    r = SSIM_RADIUS
    return float(ssim_map[r:-r, r:-r].mean())


def pairwise_mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[n, m]`` matrix of MSE(x[i], y[j]) = (‖x_i‖² + ‖y_j‖² − 2 x_i·y_j) / P over the
    P pixels, in float64 (clipped at 0 against rounding)."""
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"images of different shapes: {x.shape[1:]} and {y.shape[1:]}")
    xf = np.asarray(x, np.float64).reshape(len(x), -1)
    yf = np.asarray(y, np.float64).reshape(len(y), -1)
    squared = (xf * xf).sum(1)[:, None] + (yf * yf).sum(1)[None, :] - 2 * xf @ yf.T
    return np.maximum(squared, 0.0) / xf.shape[1]


def match(reconstructions: np.ndarray, originals: np.ndarray) -> np.ndarray:
    """The one-to-one assignment minimising the total MSE (Hungarian algorithm):
    ``reconstructions[order[i]]`` is matched to ``originals[i]``."""
    if len(reconstructions) != len(originals):
        raise ValueError(
            f"cannot match {len(reconstructions)} reconstructions to {len(originals)} originals"
        )
    # A square cost matrix: the row indices come back as 0, 1, ..., n − 1.
    _, order = linear_sum_assignment(pairwise_mse(originals, reconstructions))
    return order.astype(np.int64)


def leakage_value(ssim_reconstruction: float, ssim_prior: float) -> float:
    """Relative data leakage (SSIM_rec − SSIM_prior) / (1 − SSIM_prior): 0 when as close as
    the prior, 1 for a perfect copy; 0 when the prior is itself perfect (SSIM_prior ≥ 1)."""
    if ssim_prior >= 1:
        return 0.0
    return (ssim_reconstruction - ssim_prior) / (1 - ssim_prior)


def nearest(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each query, the index argmin_j MSE(query, reference[j]) (the first on ties).

    The reference is compared in blocks of ``NEAREST_CHUNK_BYTES`` so that a large dataset
    is never copied to float64 whole.
    """
    if len(reference) == 0:
        raise ValueError("no reference images to search")
    pixels = math.prod(reference.shape[1:])
    chunk = max(1, NEAREST_CHUNK_BYTES // (8 * pixels))
    best = np.full(len(queries), np.inf)
    index = np.zeros(len(queries), np.int64)
    for start in range(0, len(reference), chunk):
        distances = pairwise_mse(queries, reference[start : start + chunk])
        local = distances.argmin(1)
        value = distances[np.arange(len(queries)), local]
        better = value < best  # strict: an earlier block wins ties
        best[better] = value[better]
        index[better] = start + local[better]
    return index


def feature_matches(
    features: np.ndarray,
    gallery: np.ndarray,
    *,
    dataset_indices: Sequence[int] | np.ndarray,
    patient_ids: Sequence[str],
) -> list[tuple[bool, bool]]:
    """Re-identification in the attacked model's feature space, per query image.

    With μ the gallery's mean feature vector, query q and gallery image g are compared by
    the cosine of q − μ and g − μ (centring removes what every image shares, e.g. a trap's
    constant counting feature). Per query i (``features[i]``, whose original is gallery
    image ``dataset_indices[i]``): (the most similar gallery image is the original, the
    most similar gallery image *other than the original* belongs to the original's
    patient) — the second is the attacker's question when its gallery holds only other
    images of the patient. A query with NaN features (none recovered) matches nothing.
    """
    if len(features) != len(dataset_indices):
        raise ValueError(f"{len(features)} feature rows for {len(dataset_indices)} images")
    if len(patient_ids) != len(gallery):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(gallery)} gallery images")
    gallery = np.asarray(gallery, np.float64)
    centre = gallery.mean(0)

    def unit(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.float64) - centre
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)

    known = np.asarray(np.isfinite(np.asarray(features, np.float64)).all(axis=1), dtype=bool)
    similarity = unit(np.nan_to_num(features)) @ unit(gallery).T
    matches = []
    for i, index in enumerate(int(j) for j in dataset_indices):
        if not known[i]:
            matches.append((False, False))
            continue
        row = similarity[i].copy()
        image = int(np.argmax(row)) == index
        row[index] = -np.inf  # the original left out of the gallery
        matches.append((image, patient_ids[int(np.argmax(row))] == patient_ids[index]))
    return matches


def score_images(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    *,
    prior: np.ndarray,
    dataset_indices: Sequence[int] | np.ndarray,
    reference: np.ndarray,
    reference_patient_ids: Sequence[str],
    label_accuracies: Sequence[float] | np.ndarray,
    features: np.ndarray | None = None,
    reference_features: np.ndarray | None = None,
) -> list[ImageScore]:
    """Scores of each original against its (already matched) reconstruction and against the
    prior; re-identification searches ``reference``, in which ``originals[i]`` is image
    ``dataset_indices[i]``. With ``features`` (the attack's recovered features, matched like
    the reconstructions) and ``reference_features`` (the reference's, through the model
    the attacker sent), also by features (:func:`feature_matches`)."""
    n = len(originals)
    if not len(reconstructions) == len(dataset_indices) == len(label_accuracies) == n:
        raise ValueError(
            f"{n} originals, {len(reconstructions)} reconstructions, {len(dataset_indices)} "
            f"dataset indices and {len(label_accuracies)} label accuracies"
        )
    if len(reference_patient_ids) != len(reference):
        raise ValueError(
            f"{len(reference_patient_ids)} patient ids for {len(reference)} reference images"
        )
    found = nearest(reconstructions, reference).tolist()
    patient_images = Counter(reference_patient_ids)
    by_features: list[tuple[bool | None, bool | None]] = [(None, None)] * n
    if features is not None and reference_features is not None:
        by_features = list(
            feature_matches(
                features,
                reference_features,
                dataset_indices=dataset_indices,
                patient_ids=reference_patient_ids,
            )
        )
    scores = []
    for i in range(n):
        original, reconstruction = originals[i], reconstructions[i]
        index = int(dataset_indices[i])
        rec_ssim, prior_ssim = ssim(reconstruction, original), ssim(prior, original)
        patient = reference_patient_ids[index]
        scores.append(
            ImageScore(
                dataset_index=index,
                patient_id=patient,
                mse=mse(reconstruction, original),
                psnr=psnr(reconstruction, original),
                ssim=rec_ssim,
                prior_psnr=psnr(prior, original),
                prior_ssim=prior_ssim,
                leakage=leakage_value(rec_ssim, prior_ssim),
                label_accuracy=float(label_accuracies[i]),
                labels_exact=float(label_accuracies[i]) == 1.0,
                nearest_image_correct=found[i] == index,
                nearest_patient_correct=reference_patient_ids[found[i]] == patient,
                feature_image_correct=by_features[i][0],
                feature_patient_correct=by_features[i][1],
                gallery_size=len(reference),
                patient_images=patient_images[patient],
            )
        )
    return scores

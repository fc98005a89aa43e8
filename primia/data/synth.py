"""Synthetic chest radiographs from several sites, for tests, demos and benchmarks.

Real radiograph datasets cannot be downloaded everywhere, so primia makes its own. The
generator models the three things private multi-site training has to cope with:

* **patients** — each has a stable anatomy (body and lung outline, heart size and position,
  rib spacing, bone density), a sex (F/M) and an age (1–90). Children have smaller chests,
  older patients fainter ribs, women a breast shadow over the lower lungs. Images of one
  patient look alike and images of different patients differ, so membership and
  re-identification attacks have something to find;
* **images** — each varies the pose (shift, rotation, scale), the exposure (contrast,
  brightness, gamma) and the noise, and is a PA or an AP view (AP magnifies the heart a
  little and shows smaller lung volumes);
* **sites** — each has its own intensity curve, noise level, blur, horizontal exposure
  gradient, share of AP views, disease prevalence and a burned-in marker (a bright letter
  or square in a site-specific corner): a real domain shift.

Four binary findings are drawn so that a small CNN learns them easily (see
:mod:`primia.data.synth_anatomy` for how each is drawn). Cardiomegaly and nodules belong
to a patient; effusion mostly does (it comes and goes in a few images); pneumonia is drawn
per image. Each has a prevalence of roughly 20–40 %, nearly independent of the others.

Everything follows from :class:`SynthConfig`; the same seed gives byte-identical images.

>>> batch = generate(SynthConfig(sites=2, patients_per_site=5, size=64))
>>> batch.images.shape
(40, 64, 64)
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from primia.data.synth_anatomy import MAX_MARKERS, RenderParams, anatomy_masks, render
from primia.errors import ConfigError, DataError

FINDINGS = ("pneumonia", "effusion", "cardiomegaly", "nodule")
"""The binary labels, in the order of :attr:`SynthBatch.labels` and the manifest columns."""

MANIFEST_COLUMNS = ("path", "patient_id", "site", "view", "sex", "age", *FINDINGS)
# Optional columns (``write_dataset(masks=True)``): 0/255 PNG masks of the drawn organs.
MASK_COLUMNS = ("mask_lungs", "mask_heart")

# Images are rendered in chunks of about this many pixels (64 images of 128 px): big enough
# that numpy's per-call overhead is small, small enough that the float32 working arrays stay
# in cache. It is part of the output (each chunk has its own noise stream), so changing it
# changes the images.
_CHUNK_PIXELS = 64 * 128 * 128
_MAX_IMAGES = 1_000_000
_MAX_IN_MEMORY_BYTES = 4 * 1024**3
# Independent random streams, so that e.g. adding a site parameter draw leaves patients be.
_SITE_STREAM, _PATIENT_STREAM, _IMAGE_STREAM, _RENDER_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: ``sites * patients_per_site * images_per_patient`` images.

    Raises:
        ConfigError: a value is not an integer or is out of range; the message says which.
    """

    sites: int = 3
    patients_per_site: int = 40
    images_per_patient: int = 4
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        limits = {
            "sites": (1, MAX_MARKERS, "each site needs its own burned-in marker"),
            "patients_per_site": (1, 100_000, ""),
            "images_per_patient": (1, 1_000, ""),
            "size": (32, 1024, "images are square, size x size pixels"),
            "seed": (0, 2**63 - 1, ""),
        }
        for name, (low, high, why) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                reason = f" ({why})" if why else ""
                raise ConfigError(
                    f"{name} must be between {low} and {high}{reason}, got {value}; "
                    f"choose a value in that range"
                )
        if self.n_images > _MAX_IMAGES:
            raise ConfigError(
                f"the config asks for {self.n_images:,} images; at most {_MAX_IMAGES:,} are "
                "supported, so lower sites, patients_per_site or images_per_patient"
            )

    @property
    def n_patients(self) -> int:
        return self.sites * self.patients_per_site

    @property
    def n_images(self) -> int:
        return self.n_patients * self.images_per_patient

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(f"site{k}" for k in range(self.sites))


@dataclass(frozen=True)
class SynthBatch:
    """Generated images and their metadata; one row per image, ordered site, patient, k.

    ``labels`` is ``uint8[N, 4]`` with the columns of :data:`FINDINGS`; ``image_index`` is
    the number of the image within its patient (the ``k`` of its file name).
    """

    images: npt.NDArray[np.uint8]
    patient_id: npt.NDArray[np.str_]
    site: npt.NDArray[np.str_]
    view: npt.NDArray[np.str_]
    sex: npt.NDArray[np.str_]
    age: npt.NDArray[np.int64]
    labels: npt.NDArray[np.uint8]
    image_index: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.images)

    def label(self, finding: str) -> npt.NDArray[np.uint8]:
        """The 0/1 column of one finding."""
        if finding not in FINDINGS:
            raise ConfigError(f"unknown finding {finding!r}; choose one of {', '.join(FINDINGS)}")
        return self.labels[:, FINDINGS.index(finding)]

    def paths(self) -> list[str]:
        """Each image's path relative to the dataset folder, with forward slashes."""
        return [
            f"images/{site}/{patient}_{k}.png"
            for site, patient, k in zip(self.site, self.patient_id, self.image_index, strict=True)
        ]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_dataset` wrote."""

    out_dir: Path
    n_images: int
    n_patients: int
    sites: tuple[str, ...]
    prevalence: Mapping[str, float]
    seconds: float

    @property
    def manifest(self) -> Path:
        return self.out_dir / "manifest.csv"


@dataclass(frozen=True)
class _Plan:
    """Metadata and render parameters of every image, before any pixel is drawn."""

    meta: SynthBatch  # with no images yet: an array of shape [0, S, S]
    params: RenderParams


def generate(config: SynthConfig) -> SynthBatch:
    """All images of ``config`` and their metadata, in memory.

    Raises:
        ConfigError: the images would need more than 4 GiB; use :func:`write_dataset`,
            which streams them to disk.
    """
    needed = config.n_images * config.size**2
    if needed > _MAX_IN_MEMORY_BYTES:
        raise ConfigError(
            f"the images would take {needed / 1024**3:.1f} GiB of memory; make fewer or "
            "smaller images, or use write_dataset (primia data synth), which streams to disk"
        )
    plan = _plan(config)
    images = np.empty((config.n_images, config.size, config.size), dtype=np.uint8)
    for start, chunk in _render_chunks(plan, config):
        images[start : start + len(chunk)] = chunk
    return replace(plan.meta, images=images)


def write_dataset(
    out_dir: Path,
    config: SynthConfig,
    *,
    progress: bool = True,
    overwrite: bool = False,
    masks: bool = False,
) -> SynthSummary:
    """Write ``config``'s images as PNGs and a ``manifest.csv`` into ``out_dir``.

    Images go to ``out_dir/images/<site>/<patient_id>_<k>.png`` (8-bit grey); the manifest
    has the columns of :data:`MANIFEST_COLUMNS`, paths relative to ``out_dir``. Images are
    rendered and written in chunks, so memory stays small for any dataset size. The
    manifest is written last, so an interrupted run leaves no manifest behind and can simply
    be repeated.

    With ``masks``, each image also gets lung and heart masks beside it
    (``<patient_id>_<k>_lungs.png``, ``..._heart.png``, 0/255, from the very maps the
    renderer draws the organs with) and the manifest the optional :data:`MASK_COLUMNS`.

    With ``overwrite``, an existing dataset's images (the files its manifest lists) and its
    manifest are deleted first; other files in ``out_dir`` are left alone.

    Raises:
        DataError: ``out_dir`` is a file, already holds a manifest.csv and ``overwrite`` is
            false, or cannot be written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file, not a folder; choose a folder for the dataset")
    if manifest.exists():
        if not overwrite:
            raise DataError(
                f"{out_dir} already holds a dataset ({manifest} exists); choose another "
                "folder, or pass overwrite=True (--overwrite) to replace it"
            )
        _remove_dataset(out_dir)
    plan = _plan(config)
    try:
        _write_files(out_dir, plan, config, progress, masks)
    except OSError as error:
        raise DataError(
            f"cannot write the dataset into {out_dir}: {error}; check that the folder is "
            "writable and the disk has space"
        ) from error
    prevalence = {name: float(plan.meta.label(name).mean()) for name in FINDINGS}
    return SynthSummary(
        out_dir=out_dir,
        n_images=config.n_images,
        n_patients=config.n_patients,
        sites=config.site_names,
        prevalence=prevalence,
        seconds=time.perf_counter() - started,
    )


def _write_files(
    out_dir: Path, plan: _Plan, config: SynthConfig, progress: bool, masks: bool
) -> None:
    paths = plan.meta.paths()
    mask_paths = [_mask_paths(path) for path in paths] if masks else None
    for site in config.site_names:
        (out_dir / "images" / site).mkdir(parents=True, exist_ok=True)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("writing synthetic radiographs", total=config.n_images)
        for start, chunk in _render_chunks(plan, config):
            for offset, image in enumerate(chunk):
                Image.fromarray(image).save(out_dir / paths[start + offset], format="PNG")
            if mask_paths is not None:
                params = plan.params.take(slice(start, start + len(chunk)))
                for offset, organs in enumerate(
                    zip(*anatomy_masks(params, config.size), strict=True)
                ):
                    for mask, relative in zip(organs, mask_paths[start + offset], strict=True):
                        Image.fromarray(mask).save(out_dir / relative, format="PNG")
            bar.advance(task, len(chunk))
    _write_manifest(out_dir / "manifest.csv", plan.meta, paths, mask_paths)


def _mask_paths(path: str) -> tuple[str, str]:
    """The lung and heart mask files beside an image (same folder, suffixed names)."""
    stem = path.removesuffix(".png")
    return f"{stem}_lungs.png", f"{stem}_heart.png"


def _write_manifest(
    manifest: Path,
    meta: SynthBatch,
    paths: list[str],
    mask_paths: list[tuple[str, str]] | None = None,
) -> None:
    partial = manifest.with_name(manifest.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS + (MASK_COLUMNS if mask_paths is not None else ()))
        for i, path in enumerate(paths):
            writer.writerow(
                (
                    path,
                    meta.patient_id[i],
                    meta.site[i],
                    meta.view[i],
                    meta.sex[i],
                    int(meta.age[i]),
                    *(int(v) for v in meta.labels[i]),
                    *(mask_paths[i] if mask_paths is not None else ()),
                )
            )
    os.replace(partial, manifest)


def _remove_dataset(out_dir: Path) -> None:
    """Delete the PNGs a dataset's manifest lists (only under ``images/``), then the manifest."""
    manifest = out_dir / "manifest.csv"
    images = (out_dir / "images").resolve()
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            listed = [
                row.get(column) or ""
                for row in csv.DictReader(handle)
                for column in ("path", *MASK_COLUMNS)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"cannot read the existing {manifest} to replace its dataset ({error}); "
            "delete the folder yourself or choose another one"
        ) from error
    for relative in listed:
        path = (out_dir / relative).resolve()
        # A manifest is data: never let one of its rows delete a file outside images/.
        if path.suffix == ".png" and path.is_relative_to(images):
            path.unlink(missing_ok=True)
    manifest.unlink()


def _render_chunks(plan: _Plan, config: SynthConfig) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """``(first index, uint8 images)`` for consecutive chunks of the plan."""
    chunk = max(1, _CHUNK_PIXELS // config.size**2)
    for number, start in enumerate(range(0, config.n_images, chunk)):
        rng = np.random.default_rng([config.seed, _RENDER_STREAM, number])
        params = plan.params.take(slice(start, start + chunk))
        yield start, render(params, config.size, rng)


def _stratified(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values spread over [low, high], one in each of n equal strata, shuffled.

    Sites drawn this way always differ, even with two sites and an unlucky seed.
    """
    position = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
    return low + (high - low) * position


Columns = dict[str, np.ndarray]
"""Named arrays with one row per site, patient or image."""


def _plan(config: SynthConfig) -> _Plan:
    """Draw every site, patient and image parameter (see the module docstring)."""
    sites = _draw_sites(config)
    patients = _draw_patients(config, sites)
    return _draw_images(config, sites, patients)


def _draw_sites(config: SynthConfig) -> Columns:
    rng = np.random.default_rng([config.seed, _SITE_STREAM])
    n = config.sites
    return {
        "gamma": np.exp(_stratified(rng, n, np.log(0.75), np.log(1.33))),
        "contrast": _stratified(rng, n, 0.85, 1.15),
        "brightness": _stratified(rng, n, -0.07, 0.07),
        "gradient": _stratified(rng, n, -0.08, 0.08),
        "noise": _stratified(rng, n, 0.012, 0.05),
        "blur": _stratified(rng, n, 0.0, 1.6),
        "ap_fraction": _stratified(rng, n, 0.05, 0.45),
        "prevalence": _stratified(rng, n, 0.85, 1.15),
    }


def _draw_patients(config: SynthConfig, sites: Columns) -> Columns:
    """Sex, age, findings that belong to the patient, and the anatomy (PA view)."""
    rng = np.random.default_rng([config.seed, _PATIENT_STREAM])
    n = config.n_patients
    site = np.repeat(np.arange(config.sites), config.patients_per_site)
    male = rng.random(n) < 0.5
    child = rng.random(n) < 0.08
    adult_age = np.clip(np.rint(rng.normal(55.0, 17.0, n)), 18, 90).astype(np.int64)
    age = np.where(child, rng.integers(1, 18, n), adult_age)
    # Chest size grows until about 18; sexes differ a little in chest width.
    growth = 0.8 + 0.2 * np.clip((age - 1) / 17.0, 0.0, 1.0)
    width = growth * np.where(male, 1.03, 0.97) * rng.normal(1.0, 0.07, n)
    height = growth * rng.normal(1.0, 0.06, n)
    prevalence = sites["prevalence"][site]
    cardiomegaly = rng.random(n) < (0.17 + 0.2 * age / 90.0) * prevalence
    heart_scale = np.where(cardiomegaly, rng.uniform(1.5, 1.7, n), 1.0)
    lung_offset = rng.normal(0.38, 0.025, n) * width
    lung_center_y = rng.normal(-0.1, 0.04, n) * height
    lung_width = rng.normal(0.26, 0.025, n) * width
    lung_height = rng.normal(0.5, 0.04, n) * height
    # A nodule sits anywhere in the inner 55 % of either lung.
    nodule_side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    nodule_reach = np.sqrt(rng.random(n)) * 0.55
    nodule_angle = rng.uniform(0.0, 2 * np.pi, n)
    return {
        "site": site,
        "male": male,
        "age": age,
        "growth": growth,
        "cardiomegaly": cardiomegaly,
        "nodule": rng.random(n) < 0.27 * prevalence,
        "effusion": rng.random(n) < 0.28 * prevalence,
        "effusion_side": rng.choice(3, n, p=[0.4, 0.3, 0.3]),  # right, left, both
        "effusion_fill": rng.uniform(0.4, 0.6, n),
        "body_width": 0.84 * width,
        "body_height": 1.25 * height,
        "body_center_y": rng.normal(0.25, 0.05, n),
        "lung_offset": lung_offset,
        "lung_center_y": lung_center_y,
        "lung_width": lung_width,
        "lung_height": lung_height,
        "left_lung_ratio": rng.uniform(0.88, 0.96, n),
        "heart_x": rng.normal(0.08, 0.03, n) * width,
        "heart_width": rng.normal(0.26, 0.015, n) * width * heart_scale,
        "heart_height": rng.normal(0.19, 0.012, n) * height * np.sqrt(heart_scale),
        "rib_spacing": rng.uniform(0.17, 0.23, n) * height,
        "rib_phase": rng.uniform(0.0, 2 * np.pi, n),
        "rib_curve": rng.uniform(0.7, 1.1, n),
        # Bone density falls with age.
        "rib_density": rng.uniform(0.09, 0.13, n) - 0.04 * age / 90.0,
        "spine_width": rng.uniform(0.06, 0.085, n) * width,
        "clavicle_y": rng.normal(-0.68, 0.03, n) * height,
        "breast": np.where(male | child, 0.0, rng.uniform(0.03, 0.07, n)),
        "nodule_x": nodule_side * lung_offset + nodule_reach * np.cos(nodule_angle) * lung_width,
        "nodule_y": lung_center_y + nodule_reach * np.sin(nodule_angle) * 0.8 * lung_height,
        "nodule_radius": rng.uniform(0.09, 0.12, n) * growth,
    }


# Patient columns that are drawn unchanged into every image of the patient.
_ANATOMY = (
    "body_width",
    "body_height",
    "body_center_y",
    "lung_offset",
    "lung_center_y",
    "lung_width",
    "left_lung_ratio",
    "heart_x",
    "heart_height",
    "rib_spacing",
    "rib_phase",
    "rib_curve",
    "rib_density",
    "spine_width",
    "clavicle_y",
    "breast",
    "nodule_x",
    "nodule_y",
    "nodule_radius",
)


def _draw_images(config: SynthConfig, sites: Columns, patients: Columns) -> _Plan:
    """View, pose, exposure and the findings that change from image to image."""
    rng = np.random.default_rng([config.seed, _IMAGE_STREAM])
    n = config.n_images
    owner = np.repeat(np.arange(config.n_patients), config.images_per_patient)
    site = patients["site"][owner]
    ap = rng.random(n) < sites["ap_fraction"][site]
    # AP films magnify the heart and are often taken in poorer inspiration.
    lung_height = patients["lung_height"][owner] * np.where(ap, 0.94, 1.0)
    heart_y = patients["lung_center_y"][owner] + 0.5 * lung_height

    # Effusion mostly persists: it clears in some images and appears in a few others.
    effusion = np.where(patients["effusion"][owner], rng.random(n) < 0.88, rng.random(n) < 0.04)
    side = patients["effusion_side"][owner]
    fill = np.where(effusion, patients["effusion_fill"][owner] * rng.uniform(0.9, 1.1, n), 0.0)
    pneumonia = rng.random(n) < 0.3 * sites["prevalence"][site]
    pneumonia_side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    lung_offset, lung_width = patients["lung_offset"][owner], patients["lung_width"][owner]
    lung_center_y = patients["lung_center_y"][owner]
    nodule = patients["nodule"][owner]

    columns: Columns = {
        **{name: patients[name][owner] for name in _ANATOMY},
        "lung_height": lung_height,
        "heart_y": heart_y,
        "heart_width": patients["heart_width"][owner] * np.where(ap, 1.08, 1.0),
        "shift_x": np.clip(rng.normal(0.0, 0.02, n), -0.05, 0.05),
        "shift_y": np.clip(rng.normal(0.0, 0.02, n), -0.05, 0.05),
        "rotation": np.clip(rng.normal(0.0, 0.035, n), -0.08, 0.08),
        "scale": np.clip(rng.normal(1.0, 0.03, n), 0.92, 1.08),
        "pneumonia": pneumonia.astype(float),
        "pneumonia_x": pneumonia_side * lung_offset + rng.uniform(-0.35, 0.35, n) * lung_width,
        "pneumonia_y": lung_center_y + rng.uniform(-0.3, 0.45, n) * lung_height,
        "pneumonia_radius": rng.uniform(0.26, 0.34, n) * patients["growth"][owner],
        "effusion_right": np.where(side != 1, fill, 0.0),
        "effusion_left": np.where(side != 0, fill, 0.0),
        "nodule": nodule.astype(float),
        "contrast": sites["contrast"][site] * rng.normal(1.0, 0.04, n),
        "brightness": sites["brightness"][site] + rng.normal(0.0, 0.015, n),
        "gradient": sites["gradient"][site],
        "gamma": sites["gamma"][site] * np.exp(rng.normal(0.0, 0.05, n)),
        "blur": sites["blur"][site],
        "noise": sites["noise"][site] * rng.uniform(0.85, 1.15, n),
    }
    params = RenderParams(
        **{name: values.astype(np.float32) for name, values in columns.items()}, site=site
    )

    labels = np.stack([pneumonia, effusion, patients["cardiomegaly"][owner], nodule], axis=1)
    names = np.array(config.site_names)
    patient_id = np.array(
        [f"{name}-p{j:04d}" for name in config.site_names for j in range(config.patients_per_site)]
    )
    meta = SynthBatch(
        images=np.empty((0, config.size, config.size), dtype=np.uint8),
        patient_id=patient_id[owner],
        site=names[site],
        view=np.where(ap, "AP", "PA"),
        sex=np.where(patients["male"], "M", "F")[owner],
        age=patients["age"][owner].astype(np.int64),
        labels=labels.astype(np.uint8),
        image_index=np.tile(np.arange(config.images_per_patient), config.n_patients),
    )
    return _Plan(meta=meta, params=params)

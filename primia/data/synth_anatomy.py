"""Drawing for the synthetic radiograph generator: anatomy, findings and acquisition.

Everything works on a batch: pixels of a ``float32[B, S, S]`` array are computed from
coordinate grids broadcast against per-image parameters of shape ``[B, 1, 1]``, so there
is no loop over pixels and none over images (only over sites, for blur and markers).
Coordinates are normalised to [-1, 1] (x to the image's right, y down), so every image
size from 32 to 1024 pixels draws the same picture.

The scene is a density map (denser = brighter, as on a radiograph):

* **pose** — each image's grid is shifted, rotated and scaled before anything is drawn, so
  the whole anatomy moves with it;
* **body** — a soft-edged ellipse of soft tissue, thicker (brighter) at the midline;
* **lungs** — two ellipses of air that darken the body; the patient's left lung (the
  image's right) is shorter, and the heart is cut out of it;
* **heart** — an ellipse low and left of the midline; cardiomegaly widens it by about half;
* **ribs** — a cosine in y bent by ``curve * x²`` (arcs that fall laterally), thresholded
  into bands and kept inside the rib cage; spacing, phase and density vary by patient;
* **spine, clavicles, trachea** — bands around lines; a breast shadow over the lower lungs
  of female patients;
* **pneumonia** — a Gaussian patch inside one lung, broken up by a smooth random texture;
* **effusion** — fluid filling the bottom of one or both lungs up to a meniscus that rises
  laterally, which blunts the costophrenic angle;
* **nodule** — a small dense disk inside a lung.

Acquisition turns density into grey levels: contrast, brightness and a horizontal gradient
(per site and per image), a gamma curve, a site's blur (a separable Gaussian), detector
noise, 8-bit quantisation, and a burned-in site marker (a bright letter or square in a
site-specific corner).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# How much aerated lung darkens the body, in density units; lung findings fill this back in.
_AIR = 0.36
# A lung filled to 1 is as dense as the surrounding soft tissue; findings go a little
# beyond, so that they stand out, but are capped where they overlap.
_MAX_FILLING = 1.4

# Marker glyphs on a 5 x 3 cell grid; "#" cells are burned in at full brightness.
_GLYPHS: tuple[tuple[str, ...], ...] = (
    ("#..", "#..", "#..", "#..", "###"),  # L
    ("##.", "#.#", "##.", "#.#", "#.#"),  # R
    (".#.", "#.#", "###", "#.#", "#.#"),  # A
    ("##.", "#.#", "##.", "#..", "#.."),  # P
    ("###", "###", "###", "###", "###"),  # square
    ("#.#", "#.#", ".#.", "#.#", "#.#"),  # X
)
MAX_MARKERS = 4 * len(_GLYPHS)
"""How many sites can have distinct markers (a glyph in one of four corners)."""


@dataclass(frozen=True)
class RenderParams:
    """Everything that decides the pixels of a batch: one ``float32`` value per image.

    Lengths are in normalised coordinates (the image spans [-1, 1]). A finding whose flag
    or fill is 0 is not drawn. ``site`` (an integer array) picks the burned-in marker.
    """

    shift_x: FloatArray
    shift_y: FloatArray
    rotation: FloatArray
    scale: FloatArray
    body_width: FloatArray
    body_height: FloatArray
    body_center_y: FloatArray
    lung_offset: FloatArray
    lung_center_y: FloatArray
    lung_width: FloatArray
    lung_height: FloatArray
    left_lung_ratio: FloatArray
    heart_x: FloatArray
    heart_y: FloatArray
    heart_width: FloatArray
    heart_height: FloatArray
    rib_spacing: FloatArray
    rib_phase: FloatArray
    rib_curve: FloatArray
    rib_density: FloatArray
    spine_width: FloatArray
    clavicle_y: FloatArray
    breast: FloatArray
    pneumonia: FloatArray
    pneumonia_x: FloatArray
    pneumonia_y: FloatArray
    pneumonia_radius: FloatArray
    effusion_right: FloatArray
    effusion_left: FloatArray
    nodule: FloatArray
    nodule_x: FloatArray
    nodule_y: FloatArray
    nodule_radius: FloatArray
    contrast: FloatArray
    brightness: FloatArray
    gradient: FloatArray
    gamma: FloatArray
    blur: FloatArray
    noise: FloatArray
    site: IntArray

    def take(self, index: slice | npt.NDArray[np.intp]) -> RenderParams:
        """The parameters of a sub-batch."""
        return RenderParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.site)


def render(params: RenderParams, size: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """The ``uint8[B, size, size]`` radiographs of a batch; ``rng`` draws texture and noise."""
    density = draw_scene(params, size, rng)
    return acquire(density, params, size, rng)


def _col(values: FloatArray) -> FloatArray:
    return values[:, None, None]


def _grid(size: int) -> FloatArray:
    """Pixel centres in normalised coordinates."""
    return (np.arange(size, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0 / size) - 1


def _ramp(values: npt.NDArray[np.floating[Any]], sharpness: float) -> FloatArray:
    """``clip(sharpness * values, 0, 1)``: a soft step that is 1 where ``values`` is large."""
    # Always float32 at run time (numpy keeps an array's dtype against Python floats); the
    # cast, free then, is for the type checker, whose stubs widen ``float - array``.
    return np.clip(values * np.float32(sharpness), 0.0, 1.0).astype(np.float32, copy=False)


def _ellipse(
    x: FloatArray,
    y: FloatArray,
    cx: FloatArray | float,
    cy: FloatArray,
    ax: FloatArray,
    ay: FloatArray,
    sharpness: float = 6.0,
) -> FloatArray:
    """A soft-edged ellipse: 1 inside, 0 outside, an edge about ``1 / (2 sharpness)`` wide."""
    r2 = np.square((x - cx) / ax) + np.square((y - cy) / ay)
    return _ramp(1.0 - r2, sharpness)


def _posed_grid(params: RenderParams, size: int) -> tuple[FloatArray, FloatArray]:
    """Anatomical coordinates of every pixel: the image grid under each image's pose."""
    u = _grid(size)
    px = u[None, None, :] - _col(params.shift_x)
    py = u[None, :, None] - _col(params.shift_y)
    cos = _col((np.cos(params.rotation) / params.scale).astype(np.float32))
    sin = _col((np.sin(params.rotation) / params.scale).astype(np.float32))
    return cos * px + sin * py, cos * py - sin * px


def draw_scene(params: RenderParams, size: int, rng: np.random.Generator) -> FloatArray:
    """The density map of a batch (see the module docstring); mostly in [0, 1]."""
    x, y = _posed_grid(params, size)
    p = params
    ax = np.abs(x)

    body = _ellipse(x, y, 0.0, _col(p.body_center_y), _col(p.body_width), _col(p.body_height))
    # Tissue is thickest at the midline, so the body brightens towards it.
    density = body * (0.46 + 0.14 * (1.0 - np.square(x / _col(p.body_width))))

    lung_y, lung_w, lung_h = _col(p.lung_center_y), _col(p.lung_width), _col(p.lung_height)
    offset = _col(p.lung_offset)
    heart, air_right, air_left = _organs(x, y, p)
    air = air_right + air_left
    density -= _AIR * air
    density += 0.16 * heart

    cage = _ellipse(x, y, 0.0, lung_y, offset + lung_w + 0.05, lung_h + 0.08, sharpness=4.0)
    rib_wave = np.cos(
        (y - _col(p.rib_curve) * np.square(x)) * _col(2 * np.pi / p.rib_spacing) + _col(p.rib_phase)
    )
    # Posterior ribs start at the spine; none cross the midline.
    beside_spine = _ramp(ax - _col(p.spine_width), 30.0)
    density += _col(p.rib_density) * _ramp(rib_wave - 0.2, 1.6) * cage * beside_spine

    density += 0.10 * _ramp(_col(p.spine_width) - ax, 50.0) * body
    clavicle = _ramp(0.035 - np.abs(y - _col(p.clavicle_y) + 0.12 * ax), 60.0)
    density += 0.13 * clavicle * _ramp(0.72 - ax, 20.0) * _ramp(ax - 0.06, 20.0)
    trachea = _ramp(0.04 - ax, 60.0) * _ramp(lung_y - 0.15 - y, 20.0) * body
    density -= 0.12 * trachea

    _add_breast(density, x, y, p)
    # Pneumonia and effusion fill the lungs' air with denser matter; where they overlap
    # the filling is capped, so that two findings never add up to a white-out.
    filling = np.zeros_like(density)
    _fill_pneumonia(filling, p, size, rng)
    _fill_effusion(filling, x, y, air_right, air_left, p)
    density += _AIR * np.minimum(filling, _MAX_FILLING) * air
    _add_nodule(density, x, y, p)
    return density


def _organs(
    x: FloatArray, y: FloatArray, p: RenderParams
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Soft heart, right-lung and left-lung maps in [0, 1] (the lungs stop at the heart)."""
    lung_y, lung_w, lung_h = _col(p.lung_center_y), _col(p.lung_width), _col(p.lung_height)
    offset = _col(p.lung_offset)
    heart = _ellipse(
        x, y, _col(p.heart_x), _col(p.heart_y), _col(p.heart_width), _col(p.heart_height)
    )
    outside_heart = 1.0 - heart
    # "right"/"left" are the patient's: the right lung is on the image's left (PA view).
    air_right = _ellipse(x, y, -offset, lung_y, lung_w, lung_h) * outside_heart
    left_h = lung_h * _col(p.left_lung_ratio)
    left_y = lung_y + lung_h - left_h  # both lungs end at the diaphragm
    air_left = _ellipse(x, y, offset, left_y, lung_w, left_h) * outside_heart
    return heart, air_right, air_left


def anatomy_masks(
    params: RenderParams, size: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``uint8[B, size, size]`` lung and heart masks (0/255) of a batch.

    They come from the very maps :func:`draw_scene` darkens (lungs) and brightens (heart),
    thresholded at half their soft edge, so a mask pixel is 255 exactly where the organ
    covers more than half of it in the rendered image.
    """
    x, y = _posed_grid(params, size)
    heart, air_right, air_left = _organs(x, y, params)
    lungs = (air_right + air_left) > 0.5
    return (lungs * np.uint8(255)).astype(np.uint8), ((heart > 0.5) * np.uint8(255)).astype(
        np.uint8
    )


def _add_breast(density: FloatArray, x: FloatArray, y: FloatArray, p: RenderParams) -> None:
    index = np.flatnonzero(p.breast > 0)
    if index.size == 0:
        return
    q = p.take(index)
    cy = _col(q.lung_center_y + 0.8 * q.lung_height)
    cx = _col(q.lung_offset + 0.08)
    xs, ys = x[index], y[index]
    shadow = np.exp(-(np.square(np.abs(xs) - cx) * 8.0 + np.square(ys - cy) * 20.0))
    density[index] += _col(q.breast) * shadow


def smooth_texture(count: int, size: int, rng: np.random.Generator) -> FloatArray:
    """``count`` smooth random fields in [0, 1]: 10 x 10 noise interpolated to ``size``.

    Interpolation is a fixed matrix ``W`` (Gaussian weights from each pixel to the coarse
    nodes), so a field is ``W @ noise @ W.T`` — two batched matrix products.
    """
    nodes = np.linspace(-1.0, 1.0, 10, dtype=np.float32)
    weights = np.exp(-np.square(_grid(size)[:, None] - nodes[None, :]) * np.float32(30.0))
    weights /= weights.sum(axis=1, keepdims=True)
    coarse = rng.standard_normal((count, 10, 10), dtype=np.float32)
    field = weights @ coarse @ weights.T
    field /= field.std(axis=(1, 2), keepdims=True) + np.float32(1e-6)
    return np.clip(0.5 + 0.4 * field, 0.0, 1.0)


def _fill_pneumonia(
    filling: FloatArray, p: RenderParams, size: int, rng: np.random.Generator
) -> None:
    index = np.flatnonzero(p.pneumonia > 0)
    if index.size == 0:
        return
    q = p.take(index)
    # The patch is placed in image coordinates around the posed centre, so it needs no
    # posed grid of its own; its texture varies per image anyway.
    u = _grid(size)
    cos, sin = np.cos(q.rotation) * q.scale, np.sin(q.rotation) * q.scale
    cx = q.shift_x + cos * q.pneumonia_x - sin * q.pneumonia_y
    cy = q.shift_y + sin * q.pneumonia_x + cos * q.pneumonia_y
    inv = _col((-0.5 / np.square(q.pneumonia_radius * q.scale)).astype(np.float32))
    gx = np.exp(np.square(u[None, None, :] - _col(cx.astype(np.float32))) * inv)
    gy = np.exp(np.square(u[None, :, None] - _col(cy.astype(np.float32))) * inv)
    patch = np.clip(1.5 * gx * gy, 0.0, 1.0)
    texture = smooth_texture(index.size, size, rng)
    filling[index] += 1.4 * patch * (0.55 + 0.45 * texture)


def _fill_effusion(
    filling: FloatArray,
    x: FloatArray,
    y: FloatArray,
    air_right: FloatArray,
    air_left: FloatArray,
    p: RenderParams,
) -> None:
    for fill, air, side in ((p.effusion_right, air_right, -1.0), (p.effusion_left, air_left, 1.0)):
        index = np.flatnonzero(fill > 0)
        if index.size == 0:
            continue
        q = p.take(index)
        xs, ys = x[index], y[index]
        bottom = _col(q.lung_center_y + q.lung_height)
        level = bottom - 2.0 * _col(q.lung_height * fill[index])
        # The meniscus climbs towards the lateral chest wall (away from the midline).
        lateral = _ramp(side * xs - _col(q.lung_offset), 1.0 / 0.3)
        meniscus = level - 0.18 * _col(q.lung_height) * lateral
        fluid = _ramp(ys - meniscus, 25.0)
        filling[index] += 1.35 * fluid * air[index]


def _add_nodule(density: FloatArray, x: FloatArray, y: FloatArray, p: RenderParams) -> None:
    index = np.flatnonzero(p.nodule > 0)
    if index.size == 0:
        return
    q = p.take(index)
    d2 = np.square(x[index] - _col(q.nodule_x)) + np.square(y[index] - _col(q.nodule_y))
    disk = _ramp(1.0 - d2 / _col(np.square(q.nodule_radius)), 2.5)
    density[index] += 0.65 * disk


def acquire(
    density: FloatArray, params: RenderParams, size: int, rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """Grey levels from density: exposure, gamma, blur, noise, quantisation, site marker."""
    p = params
    u = _grid(size)
    grey = (density - 0.35) * _col(p.contrast) + (0.35 + _col(p.brightness))
    grey += _col(p.gradient) * u[None, None, :]
    np.clip(grey, 0.0, 1.0, out=grey)
    np.power(grey, _col(p.gamma), out=grey)
    for blur in np.unique(p.blur):
        # Sigma is given for 128 px images and scales with the size, like the anatomy.
        sigma = float(blur) * size / 128.0
        if sigma < 0.3:
            continue
        index = np.flatnonzero(p.blur == blur)
        grey[index] = ndimage.gaussian_filter(grey[index], sigma=(0.0, sigma, sigma), truncate=3.0)
    grey += _col(p.noise) * rng.standard_normal(grey.shape, dtype=np.float32)
    grey *= 255.0
    grey += 0.5
    np.clip(grey, 0.0, 255.0, out=grey)
    images = grey.astype(np.uint8)
    burn_markers(images, p.site)
    return images


def burn_markers(images: npt.NDArray[np.uint8], sites: IntArray) -> None:
    """Burn each site's marker into its images, in place (see :func:`marker_mask`)."""
    size = images.shape[-1]
    for site in np.unique(sites):
        mask, rows, cols = marker_mask(int(site), size)
        index = np.flatnonzero(sites == site)
        region = images[index, rows, cols]
        region[:, mask] = 250
        images[index, rows, cols] = region


def marker_mask(site: int, size: int) -> tuple[npt.NDArray[np.bool_], slice, slice]:
    """Site ``site``'s marker: a boolean glyph mask and the image rows and columns it covers.

    Site k uses glyph ``k % 6`` in corner ``(k + k // 6) % 4``, which differs for every
    k below :data:`MAX_MARKERS`.
    """
    glyph = np.array([[c == "#" for c in row] for row in _GLYPHS[site % len(_GLYPHS)]])
    cell = max(1, size // 40)
    mask = np.repeat(np.repeat(glyph, cell, axis=0), cell, axis=1)
    height, width = mask.shape
    margin = max(1, size // 20)
    corner = (site + site // len(_GLYPHS)) % 4
    top = margin if corner < 2 else size - margin - height
    left = margin if corner % 2 == 0 else size - margin - width
    return mask, slice(top, top + height), slice(left, left + width)

"""Per-scan sampling and per-slice rendering of the synthetic CT phantom.

:func:`sample_scan` draws everything random about one scan (anatomy, acquisition, contrast, clots,
mixing artifacts); :func:`render_slice` rasterizes one slice into HU, the vein mask and a tissue label
map; :func:`render_scan` renders a whole scan. Grids coarser than 192 pixels are rendered
supersampled and block-averaged (partial volume of big pixels), so a 64^2 phantom looks like a
downsampled 512^2 one. Each slice is vectorized (OpenCV drawing, lookup tables, separable blurs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .anatomy import sample_anatomy, slice_geometry
from .lesions import ClotSegment, MixSegment, sample_clots, sample_mixes
from .presets import (
    AIR,
    ARTERY,
    BOWEL_AIR,
    BOWEL_CONTRAST,
    BOWEL_WALL,
    CANCELLOUS,
    CORTICAL,
    FAT,
    FLUID,
    HU_MAX,
    HU_MIN,
    MUSCLE,
    N_TISSUES,
    NODE,
    OTHER_VEIN,
    SKIN,
    TABLE,
    Preset,
)
from .raster import Canvas, add_noise, add_streaks, draw_target, reduce_grid
from .shapes import Anatomy, Ellipse, track

_THICKNESSES_MM = (1.25, 2.0, 2.5, 3.0)
_TEXTURE_GRID = 6
_MIN_RENDER = 192  # finest grid actually drawn for small sizes

#: Amplitude (HU per unit of the smooth texture field, clipped to +-2.5) of each tissue's texture.
_TEXTURE_AMP = np.zeros(N_TISSUES, dtype=np.float32)
for _t, _amp in ((SKIN, 4.0), (FAT, 5.0), (MUSCLE, 2.4), (CANCELLOUS, 16.0), (CORTICAL, 120.0)):
    _TEXTURE_AMP[_t] = _amp
for _t in (BOWEL_WALL, NODE, FLUID):
    _TEXTURE_AMP[_t] = 2.0

#: Per-scan draw ranges of the base HU of each tissue (texture keeps them inside ``TISSUE_HU``).
_BASE_HU = {
    AIR: (-1000, -1000),
    TABLE: (100, 250),
    SKIN: (32, 48),
    FAT: (-96, -72),
    MUSCLE: (46, 54),
    CORTICAL: (1100, 1700),
    CANCELLOUS: (190, 250),
    BOWEL_WALL: (55, 85),
    BOWEL_AIR: (-990, -950),
    FLUID: (5, 20),
    BOWEL_CONTRAST: (220, 380),
    NODE: (35, 50),
}


@dataclass(frozen=True)
class ScanSpec:
    """Everything random about one scan; rendering a slice only adds the noise draws."""

    anatomy: Anatomy
    size: int
    spacing_mm: float  # pixel spacing at ``size``
    thickness_mm: float
    noise_sd: float  # HU at 512^2
    blur_mm: float
    streak_hu: np.ndarray  # per slice
    lut: np.ndarray  # base HU per tissue code
    vein_hu: tuple[float, float]
    artery_hu: float
    enhance: np.ndarray  # per-slice contrast factor
    texture: np.ndarray  # [n, g, g] smooth texture field
    clots: tuple[ClotSegment, ...]
    mixes: tuple[MixSegment, ...]

    @property
    def n(self) -> int:
        """Number of slices."""
        return self.anatomy.n

    def labels(self) -> np.ndarray:
        """``int8[n]``: 1 where a clot is drawn in the slice."""
        out = np.zeros(self.n, dtype=np.int8)
        for c in self.clots:
            out[c.z0 : c.z1] = 1
        return out


def sample_scan(
    kind: str, rng: np.random.Generator, prng: np.random.Generator, n: int, size: int, preset: Preset
) -> ScanSpec:
    """Sample one scan of ``n`` slices of ``kind`` anatomy at ``size``^2 (``prng``: patient habitus)."""
    thickness = float(rng.choice(_THICKNESSES_MM))
    anat = sample_anatomy(kind, rng, prng, n, thickness, preset)
    lo = min(max(0.68, (anat.extent_mm() + 8.0) / 256.0), 0.98)  # field of view holds the body
    spacing512 = float(rng.uniform(lo, 0.98))
    corr = 35.0 / thickness
    vein = float(rng.uniform(*preset.vein_hu))
    lut = np.zeros(N_TISSUES, dtype=np.float32)
    for tissue, (low, high) in _BASE_HU.items():
        lut[tissue] = rng.uniform(low, high)
    lut[OTHER_VEIN] = vein - rng.uniform(0, 12)
    texture = np.stack([track(rng, n, 1.0, corr) for _ in range(_TEXTURE_GRID**2)], axis=1)
    return ScanSpec(
        anatomy=anat,
        size=int(size),
        spacing_mm=spacing512 * 512.0 / size,
        thickness_mm=thickness,
        noise_sd=float(rng.uniform(*preset.noise_sd)),
        blur_mm=float(rng.uniform(*preset.blur_mm)),
        streak_hu=float(rng.uniform(*preset.streak_hu)) * np.clip(1.0 + track(rng, n, 0.3, corr), 0.2, 2.0),
        lut=lut,
        vein_hu=(vein + rng.uniform(-4, 4), vein + rng.uniform(-4, 4)),
        artery_hu=min(vein + float(rng.uniform(0, 50)), 205.0),
        enhance=1.0 + track(rng, n, 0.02, corr),
        texture=np.clip(texture, -2.5, 2.5).reshape(n, _TEXTURE_GRID, _TEXTURE_GRID).astype(np.float32),
        clots=sample_clots(rng, n, preset),
        mixes=sample_mixes(rng, n, preset),
    )


def render_slice(
    spec: ScanSpec, z: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render slice ``z`` of ``spec``: ``(hu int16[H, W], vein mask uint8[H, W], tissue uint8[H, W])``.

    ``rng`` supplies the noise. The tissue map holds the codes of :mod:`.presets`; clot pixels
    (:data:`~.presets.CLOT`) lie inside the mask, and a slice holds some iff
    ``spec.labels()[z] == 1``. On supersampled (small) grids the tissue map is sampled at block centres.
    """
    factor = max(1, math.ceil(_MIN_RENDER / spec.size))
    size = spec.size * factor
    cv = Canvas(size, spec.spacing_mm / factor)
    clots = [c for c in spec.clots if c.z0 <= z < c.z1]
    expand = [0.0, 0.0]
    for c in clots:
        expand[c.target] = max(expand[c.target], c.expansion * c.envelope(z))
    geom = slice_geometry(spec.anatomy, z, (expand[0], expand[1]))
    tissue = np.zeros((size, size), dtype=np.uint8)
    for shape in geom.layers:
        (cv.ellipse if isinstance(shape, Ellipse) else cv.band)(tissue, shape, shape.tissue)
    mask = np.zeros((size, size), dtype=np.uint8)
    targets = []
    for v in geom.vessels:
        if v.target < 0:
            cv.ellipse(tissue, v, v.tissue)
        else:
            targets.append((v.target, draw_target(cv, tissue, mask, v, z, clots, spec.mixes)))

    lut = spec.lut.copy()
    lut[ARTERY] = spec.artery_hu * spec.enhance[z]
    lut[OTHER_VEIN] *= spec.enhance[z]
    hu = lut[tissue]
    field = cv2.resize(spec.texture[z], (size, size), interpolation=cv2.INTER_LINEAR)
    hu += field * _TEXTURE_AMP[tissue]
    for k, target in targets:
        target.paint(hu, tissue, float(np.clip(spec.vein_hu[k] * spec.enhance[z], 90.0, 160.0)))
    sigma = spec.blur_mm / cv.sp
    if sigma >= 0.3:
        hu = cv2.GaussianBlur(hu, (0, 0), sigma)
    add_streaks(cv, hu, tissue, geom.streak, float(spec.streak_hu[z]))
    hu, mask, tissue = reduce_grid(hu, mask, tissue, factor)
    add_noise(hu, rng, spec.noise_sd)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    return np.rint(hu).astype(np.int16), mask, tissue


def render_scan(
    spec: ScanSpec, rng: np.random.Generator, *, with_tissue: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Render every slice: ``(int16 HU [Z, H, W], uint8 mask [Z, H, W], tissue [Z, H, W] or None)``."""
    shape = (spec.n, spec.size, spec.size)
    image, mask = np.empty(shape, dtype=np.int16), np.empty(shape, dtype=np.uint8)
    tissue = np.empty(shape, dtype=np.uint8) if with_tissue else None
    for z in range(spec.n):
        image[z], mask[z], t = render_slice(spec, z, rng)
        if tissue is not None:
            tissue[z] = t
    return image, mask, tissue

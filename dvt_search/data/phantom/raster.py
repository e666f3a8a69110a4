"""Raster operations of the phantom renderer: shapes in mm onto pixel grids, vessels with clots,
beam-hardening streaks, CT noise and coarse-grid reduction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .lesions import ClotSegment, MixSegment
from .presets import CLOT, FAT, SKIN, VEIN
from .shapes import Band, Ellipse, Vessel

_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates in 1/16 pixel
_ONE = 1 << _SHIFT


class Canvas:
    """Millimetre -> pixel mapping of a ``size`` x ``size`` grid of ``spacing_mm`` pixels."""

    def __init__(self, size: int, spacing_mm: float) -> None:
        self.size, self.sp, self.c = size, spacing_mm, (size - 1) / 2.0

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel coordinates (column, row) of the point (x, y) mm."""
        return self.c + x / self.sp, self.c + y / self.sp

    def ellipse(self, img: np.ndarray, e: Ellipse | Vessel, value: float, offset=(0, 0)) -> None:
        """Fill ellipse ``e`` with ``value`` (``img`` covers the grid from pixel ``offset``)."""
        x, y = self.px(e.cx, e.cy)
        center = (round((x - offset[0]) * _ONE), round((y - offset[1]) * _ONE))
        axes = (max(round(e.ax / self.sp * _ONE), 1), max(round(e.ay / self.sp * _ONE), 1))
        cv2.ellipse(img, center, axes, e.angle, 0, 360, value, -1, cv2.LINE_8, _SHIFT)

    def band(
        self, img: np.ndarray, b: Band, value: float, line_type: int = cv2.LINE_8, offset=(0, 0)
    ) -> None:
        """Draw band ``b`` with ``value`` (at least one pixel wide)."""
        (x0, y0), (x1, y1) = self.px(b.x0, b.y0), self.px(b.x1, b.y1)
        p0 = (round((x0 - offset[0]) * _ONE), round((y0 - offset[1]) * _ONE))
        p1 = (round((x1 - offset[0]) * _ONE), round((y1 - offset[1]) * _ONE))
        cv2.line(img, p0, p1, value, max(1, round(b.width / self.sp)), line_type, _SHIFT)

    def roi(self, v: Vessel, margin_mm: float) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` holding vessel ``v`` plus ``margin_mm``, clipped to the grid."""
        x, y = self.px(v.cx, v.cy)
        r = (max(v.ax, v.ay) + margin_mm) / self.sp + 2
        x0, y0 = max(int(x - r), 0), max(int(y - r), 0)
        return x0, y0, min(int(x + r) + 2, self.size), min(int(y + r) + 2, self.size)


@dataclass
class TargetVein:
    """A drawn target vein: its pixel box, lumen and clot pixels, and how to colour them."""

    box: tuple[int, int, int, int]
    lumen: np.ndarray
    clot: np.ndarray
    clot_hu: float
    blend: np.ndarray | None  # weight of unopacified blood per pixel (mixing artifact)
    blend_hu: float
    edema: np.ndarray | None  # HU added to the surrounding fat (perivenous edema)

    def paint(self, hu: np.ndarray, tissue: np.ndarray, vein_hu: float) -> None:
        """Colour the lumen (opacified blood, inflow blend), the clot and its edema in the HU image."""
        x0, y0, x1, y1 = self.box
        roi = hu[y0:y1, x0:x1]
        if self.edema is not None:
            roi += self.edema * (tissue[y0:y1, x0:x1] == FAT)
        roi[self.lumen] = vein_hu
        if self.blend is not None:
            roi[:] = roi * (1.0 - self.blend) + self.blend_hu * self.blend
        roi[self.clot] = self.clot_hu


def draw_target(
    cv: Canvas,
    tissue: np.ndarray,
    mask: np.ndarray,
    v: Vessel,
    z: int,
    clots: list[ClotSegment],
    mixes: tuple[MixSegment, ...],
) -> TargetVein:
    """Draw target vein ``v`` (lumen into ``mask``, :data:`VEIN`/:data:`CLOT` into ``tissue``)."""
    x0, y0, x1, y1 = cv.roi(v, max(v.ax, v.ay) + 4.0)
    off = (x0, y0)
    lumen = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv.ellipse(lumen, v, 1, off)
    empty = np.zeros(lumen.shape, dtype=bool)
    if not lumen.any():  # vessel outside the grid
        return TargetVein((x0, y0, x1, y1), empty, empty, 0.0, None, 0.0, None)
    rmin = min(v.ax, v.ay)
    clot = np.zeros_like(lumen)
    clot_hu, edema = 0.0, None
    for c in clots:
        if c.target != v.target:
            continue
        clot_hu = c.hu
        if c.edema_hu > 0:
            halo = np.zeros(lumen.shape, dtype=np.float32)
            cv.ellipse(halo, Vessel(0, v.cx, v.cy, v.ax + 3.0, v.ay + 3.0, v.angle), 1.0, off)
            halo = cv2.GaussianBlur(halo, (0, 0), max(2.0 / cv.sp, 0.5))
            edema = halo * np.float32(c.edema_hu * c.envelope(z))
        rc, dx, dy = c.disc(z, rmin)
        if math.isinf(rc):
            clot[:] = 1
            continue
        disc = Vessel(CLOT, v.cx + dx, v.cy + dy, rc, rc, 0.0)
        one = np.zeros_like(lumen)
        cv.ellipse(one, disc, 1, off)
        if not (one & lumen).any():  # sub-pixel clot: keep the lumen pixel nearest to its centre
            px, py = cv.px(disc.cx, disc.cy)
            ys, xs = np.nonzero(lumen)
            i = int(np.argmin((xs + x0 - px) ** 2 + (ys + y0 - py) ** 2))
            one[ys[i], xs[i]] = 1
        clot |= one
    lumen_b = lumen.astype(bool)
    clot_b = lumen_b & clot.astype(bool)
    t_roi = tissue[y0:y1, x0:x1]
    t_roi[lumen_b] = VEIN
    t_roi[clot_b] = CLOT
    mask[y0:y1, x0:x1] |= lumen
    blend, blend_hu = None, 0.0
    for m in mixes:
        if m.target == v.target and m.z0 <= z < m.z1:
            blob = np.zeros(lumen.shape, dtype=np.float32)
            r, ang = m.radius * rmin, math.radians(m.angle)
            centre = (v.cx + math.cos(ang) * m.offset * rmin, v.cy + math.sin(ang) * m.offset * rmin)
            cv.ellipse(blob, Vessel(0, *centre, r, r, 0.0), 1.0, off)
            soft = 0.35 * r / cv.sp
            if soft >= 0.3:
                blob = cv2.GaussianBlur(blob, (0, 0), soft)
            weight = blob * np.float32(m.strength(z)) * (lumen_b & ~clot_b)
            blend = weight if blend is None else np.maximum(blend, weight)
            blend_hu = m.hu
    return TargetVein((x0, y0, x1, y1), lumen_b, clot_b, clot_hu, blend, blend_hu, edema)


def add_streaks(cv: Canvas, hu: np.ndarray, tissue: np.ndarray, streak: Band | None, depth: float) -> None:
    """A dark beam-hardening band along ``streak`` (plus two fainter oblique ones), inside the body."""
    if depth <= 0 or streak is None:
        return
    s = streak
    (ax, ay), (bx, by) = cv.px(s.x0, s.y0), cv.px(s.x1, s.y1)
    pad = 25.0 / cv.sp
    x0, y0 = max(int(min(ax, bx) - pad), 0), max(int(min(ay, by) - pad), 0)
    x1, y1 = min(int(max(ax, bx) + pad) + 1, cv.size), min(int(max(ay, by) + pad) + 1, cv.size)
    if x1 <= x0 or y1 <= y0:
        return
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    cv.band(canvas, s, 1.0, cv2.LINE_AA, (x0, y0))
    mx, my = (s.x0 + s.x1) / 2, (s.y0 + s.y1) / 2
    hx, hy = (s.x1 - s.x0) / 2, (s.y1 - s.y0) / 2
    for tilt in (-8.0, 8.0):
        c, sn = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
        rx, ry = c * hx - sn * hy, sn * hx + c * hy
        cv.band(canvas, Band(0, mx - rx, my - ry, mx + rx, my + ry, 2.0), 0.5, cv2.LINE_AA, (x0, y0))
    sigma = 1.5 / cv.sp
    if sigma >= 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    body = tissue[y0:y1, x0:x1] >= SKIN
    hu[y0:y1, x0:x1] -= depth * canvas * body


def add_noise(hu: np.ndarray, rng: np.random.Generator, sd512: float) -> None:
    """Spatially correlated noise; per-pixel SD ``sd512`` at 512^2, less on coarser grids.

    Fine grids blur uniform noise (4x cheaper to draw than normal; the blur makes it Gaussian by the
    central limit theorem), coarse grids draw white Gaussian noise.
    """
    size = hu.shape[0]
    sd = sd512 * min(1.0, 2.5 * size / 512.0)
    sigma = 0.7 * size / 512.0
    if sigma < 0.3:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sd)
        return
    noise = rng.random(hu.shape, dtype=np.float32)
    k = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma)
    noise = cv2.sepFilter2D(noise, -1, k, k)
    gain = sd * math.sqrt(12.0) / float(np.sum(k**2))
    hu += (noise - np.float32(0.5)) * np.float32(gain)


def reduce_grid(
    hu: np.ndarray, mask: np.ndarray, tissue: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average a supersampled render down by ``factor`` (partial-volume effect of bigger pixels).

    HU is the block mean; the mask keeps blocks at least half vein, plus the best-covered block of any
    vein that no block covers by half (so thin veins never vanish); the tissue map is sampled at block
    centres, with mask pixels forced to vein (or clot where the block holds clot). A slice with clot
    keeps at least one clot block in the mask.
    """
    if factor == 1:
        return hu, mask, tissue
    size = hu.shape[0] // factor
    hu = cv2.resize(hu, (size, size), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    out = cover >= 0.5
    count, comp = cv2.connectedComponents((cover > 0).astype(np.uint8), connectivity=8)
    for i in range(1, count):
        inside = comp == i
        if not out[inside].any():
            out.flat[int(np.argmax(np.where(inside, cover, -1.0)))] = True
    clot_cover = cv2.resize((tissue == CLOT).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    clot = clot_cover > 0
    if clot.any() and not (out & clot).any():  # a clot only in thinly covered blocks: keep its best one
        out.flat[int(np.argmax(clot_cover))] = True
    half = factor // 2
    small = tissue[half::factor, half::factor].copy()
    small[(small == VEIN) | (small == CLOT)] = FAT  # vein sampled outside the coarse mask
    small[out] = VEIN
    small[out & clot] = CLOT
    return hu, out.astype(np.uint8), small

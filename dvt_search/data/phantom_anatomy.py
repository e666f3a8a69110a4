"""Geometry of the phantom's two anatomies (femoral thigh level, iliac pelvis level), in millimetres.

A scan's anatomy is sampled once (:func:`sample_anatomy`): static parameters plus smooth per-slice
tracks (Gaussian-smoothed random walks along z), so organs and vessels drift slowly from slice to
slice. :func:`slice_geometry` turns one slice index into the shapes the renderer rasterizes.
Coordinates: x to the image's right (patient's left), y down (posterior), origin at the image centre.
Slice 0 is the most inferior one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .phantom_presets import (
    ARTERY,
    BOWEL_AIR,
    BOWEL_CONTRAST,
    BOWEL_WALL,
    CANCELLOUS,
    CORTICAL,
    FAT,
    FLUID,
    MUSCLE,
    NODE,
    OTHER_VEIN,
    SKIN,
    TABLE,
    VEIN,
    Preset,
)

_SKIN_MM = 2.0
_BOWEL_CONTENTS = (BOWEL_AIR, FLUID, BOWEL_CONTRAST)


@dataclass(frozen=True)
class Ellipse:
    """A filled ellipse of one tissue (centre, semi-axes in mm, rotation in degrees)."""

    tissue: int
    cx: float
    cy: float
    ax: float
    ay: float
    angle: float = 0.0


@dataclass(frozen=True)
class Band:
    """A straight band of one tissue from (x0, y0) to (x1, y1), ``width`` mm wide."""

    tissue: int
    x0: float
    y0: float
    x1: float
    y1: float
    width: float


@dataclass(frozen=True)
class Vessel:
    """A vessel lumen; ``target`` is 0/1 for the two masked veins (where clots live), else -1."""

    tissue: int
    cx: float
    cy: float
    ax: float
    ay: float
    angle: float
    target: int = -1


@dataclass
class SliceGeometry:
    """Everything drawn on one slice, in painting order: ``layers`` then ``vessels``."""

    layers: list[Ellipse | Band] = field(default_factory=list)
    vessels: list[Vessel] = field(default_factory=list)
    streaks: list[Band] = field(default_factory=list)  # beam-hardening streak paths (tissue unused)


@dataclass(frozen=True)
class Anatomy:
    """Sampled anatomy of one scan: static parameters ``p`` and per-slice tracks ``t`` (length n)."""

    kind: str
    n: int
    p: dict[str, float]
    t: dict[str, np.ndarray]
    nodes: tuple[tuple[int, int, int, float, float, float], ...] = ()  # side, z0, z1, angle, dist, r
    loops: tuple[tuple[int, int, int, float, float, float], ...] = ()  # content, z0, z1, rho, theta, r

    def extent_mm(self) -> float:
        """Half-width of the body (mm): the field of view must hold it."""
        return self.p["extent"]


def track(rng: np.random.Generator, n: int, sd: float, corr: float) -> np.ndarray:
    """A smooth random walk of ``n`` samples with standard deviation ~``sd``, correlation ``corr`` slices."""
    sigma = max(corr, 0.5)
    pad = int(3 * sigma) + 2
    sm = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma=sigma, mode="reflect")[pad : pad + n]
    x = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return sm * (sd / math.sqrt(float(np.sum((k / k.sum()) ** 2))))


def _patient_shape(prng: np.random.Generator) -> dict[str, float]:
    """Patient habitus shared by all scans of a patient."""
    return {
        "habitus": float(prng.uniform(0.0, 1.0)),
        "scale": float(prng.uniform(0.9, 1.1)),
        "vein_scale": float(prng.uniform(0.9, 1.1)),
    }


def sample_anatomy(
    kind: str,
    rng: np.random.Generator,
    prng: np.random.Generator,
    n: int,
    thickness_mm: float,
    preset: Preset,
) -> Anatomy:
    """Sample the anatomy of one scan of ``n`` slices (``prng`` draws the patient-level habitus)."""
    shape = _patient_shape(prng)
    corr = 35.0 / thickness_mm  # correlation length of the drift: ~35 mm along z
    zmm = np.arange(n, dtype=np.float64) * thickness_mm
    u = np.clip(1.0 - (zmm[-1] - zmm) / 200.0, 0.0, 1.0)  # 1 at the top slice, 0 200 mm below
    if kind == "femoral":
        return _sample_femoral(rng, shape, n, corr, u, preset)
    if kind == "iliac":
        return _sample_iliac(rng, shape, n, corr, u, preset)
    raise ValueError(f"unknown anatomy {kind!r}; expected 'femoral' or 'iliac'")


def _sample_femoral(rng, shape, n, corr, u, preset) -> Anatomy:
    h, s = shape["habitus"], shape["scale"]
    fat = 6.0 + 26.0 * h + rng.uniform(-3, 3)
    a = s * rng.uniform(62, 76) + fat
    b = s * rng.uniform(56, 70) + fat * 0.9
    gap = rng.uniform(-0.15, 0.2) * a
    p = {
        "fat": fat,
        "a": a,
        "b": b,
        "sep": 2 * a + gap,
        "body_y": rng.uniform(-15, 5),
        "fx": rng.uniform(0.1, 0.25),
        "fy": rng.uniform(0.0, 0.2),
        "fr": rng.uniform(12, 15),
        "cortex": rng.uniform(4, 7),
        "vx": rng.uniform(14, 26),
        "vy_top": rng.uniform(-36, -24),
        "vy_bot": rng.uniform(-14, 0),
        "rv": 5.25 * shape["vein_scale"],
        "ra": rng.uniform(3.6, 4.4),
        "a_top": rng.uniform(10, 40),
        "a_bot": rng.uniform(50, 85),
        "gsv_r": rng.uniform(1.8, 3.0),
        "gsv_b": rng.uniform(200, 240),
        "pad": rng.uniform(*preset.pad_mm),
        "septum": rng.uniform(1.0, 2.0),
    }
    p["extent"] = p["sep"] / 2 + a * 1.05
    t = {"legy": track(rng, n, 2.0, corr), "u": u}
    for k in (0, 1):
        t[f"legx{k}"] = track(rng, n, 2.0, corr)
        t[f"a{k}"] = track(rng, n, 0.02, corr)
        t[f"vx{k}"] = track(rng, n, 2.5, corr)
        t[f"vy{k}"] = track(rng, n, 2.5, corr)
        t[f"rv{k}"] = track(rng, n, 0.06, corr)
        t[f"ov{k}"] = np.clip(0.12 + track(rng, n, 0.08, corr), 0.0, 0.3)
        t[f"va{k}"] = track(rng, n, 15.0, corr)
        t[f"aa{k}"] = track(rng, n, 10.0, corr)
        t[f"sept{k}"] = rng.uniform(0, 360, size=3) + track(rng, 3, 0.0, 1.0)
    nodes = []
    for side in (0, 1):
        for _ in range(int(rng.poisson(preset.node_rate))):
            z0 = int(rng.integers(0, n))
            nodes.append(
                (
                    side,
                    z0,
                    z0 + int(rng.integers(2, 12)),
                    rng.uniform(0, 360),
                    rng.uniform(3, 9),
                    rng.uniform(2.5, 5),
                )
            )
    return Anatomy("femoral", n, p, t, nodes=tuple(nodes))


def _sample_iliac(rng, shape, n, corr, u, preset) -> Anatomy:
    h, s = shape["habitus"], shape["scale"]
    fat = 8.0 + 30.0 * h + rng.uniform(-3, 3)
    am = s * rng.uniform(125, 150)
    bm = s * rng.uniform(78, 95)
    p = {
        "fat": fat,
        "am": am,
        "bm": bm,
        "body_y": rng.uniform(-10, 8),
        "wing_angle": rng.uniform(35, 50),
        "rv": 6.2 * shape["vein_scale"],
        "ra": rng.uniform(3.8, 4.8),
        "bladder_u": rng.uniform(0.2, 0.5),
        "pad": rng.uniform(*preset.pad_mm),
    }
    p["extent"] = (am + fat) * 1.08
    t = {"u": u, "bx": track(rng, n, 2.0, corr), "by": track(rng, n, 2.0, corr)}
    for k in (0, 1):
        t[f"vx{k}"] = track(rng, n, 3.0, corr)
        t[f"vy{k}"] = track(rng, n, 3.0, corr)
        t[f"rv{k}"] = track(rng, n, 0.06, corr)
        t[f"ov{k}"] = np.clip(0.15 + track(rng, n, 0.08, corr), 0.0, 0.35)
        t[f"aa{k}"] = track(rng, n, 15.0, corr)
    loops = []
    for i in range(int(rng.integers(5, 10))):
        z0 = int(rng.integers(-n // 3, n // 2))
        content = _BOWEL_CONTENTS[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
        loops.append(
            (
                content,
                z0,
                z0 + int(rng.integers(n // 3, n + 1)),
                rng.uniform(0, 0.7),
                rng.uniform(0, 360),
                0.0,
            )
        )
        t[f"lx{i}"] = track(rng, n, 0.1, corr / 3)
        t[f"ly{i}"] = track(rng, n, 0.1, corr / 3)
        t[f"lr{i}"] = rng.uniform(7, 15) * (1 + track(rng, n, 0.15, corr / 3))
    return Anatomy("iliac", n, p, t, loops=tuple(loops))


def slice_geometry(anat: Anatomy, z: int, clot_expansion: tuple[float, float] = (0.0, 0.0)) -> SliceGeometry:
    """Shapes of slice ``z``; ``clot_expansion[k]`` distends target vein ``k`` (acute occlusive clot)."""
    if anat.kind == "femoral":
        return _femoral_slice(anat, z, clot_expansion)
    return _iliac_slice(anat, z, clot_expansion)


def _dir(angle_deg: float) -> tuple[float, float]:
    r = math.radians(angle_deg)
    return math.cos(r), math.sin(r)


def _table(g: SliceGeometry, y: float) -> None:
    g.layers.append(Band(TABLE, -600.0, y, 600.0, y, 3.0))
    g.layers.append(Band(TABLE, -600.0, y + 45.0, 600.0, y + 45.0, 2.0))


def _femoral_slice(anat: Anatomy, z: int, expand: tuple[float, float]) -> SliceGeometry:
    p, t = anat.p, anat.t
    u = float(t["u"][z])
    g = SliceGeometry()
    legs = []
    for k in (0, 1):
        sgn = -1.0 if k == 0 else 1.0
        grow = (0.9 + 0.1 * u) * (1.0 + float(t[f"a{k}"][z]))
        a, b = p["a"] * grow, p["b"] * grow
        cx, cy = sgn * p["sep"] / 2 + float(t[f"legx{k}"][z]), p["body_y"] + float(t["legy"][z])
        legs.append((sgn, cx, cy, a, b))
    _table(g, max(cy + b for _, _, cy, _, b in legs) + 8.0)
    for tissue, inset in ((SKIN, 0.0), (FAT, _SKIN_MM)):
        g.layers += [Ellipse(tissue, cx, cy, a - inset, b - inset) for _, cx, cy, a, b in legs]
    fat = p["fat"]
    g.layers += [
        Ellipse(MUSCLE, cx + sgn * 0.15 * fat, cy + 0.1 * fat, a - fat, b - fat) for sgn, cx, cy, a, b in legs
    ]
    big = 1.0 + 0.35 * max(0.0, u - 0.75) / 0.25
    for k, (sgn, cx, cy, a, b) in enumerate(legs):
        fr = p["fr"] * big
        fx, fy = cx + sgn * p["fx"] * (a - fat) * (0.6 + 0.4 * u), cy + p["fy"] * (b - fat)
        for ang in t[f"sept{k}"]:
            dx, dy = _dir(float(ang))
            g.layers.append(Band(FAT, fx, fy, fx + dx * a, fy + dy * b, p["septum"]))
        g.layers.append(Ellipse(CORTICAL, fx, fy, fr * 1.08, fr, 20.0 * sgn))
        inner = max(fr - p["cortex"] / big, 3.0)
        g.layers.append(Ellipse(CANCELLOUS, fx, fy, inner * 1.08, inner, 20.0 * sgn))
        g.streaks.append(Band(0, fx, fy, 0.0, 0.0, 0.0))  # femur centres: endpoints of the streaks
        # femoral vein (medial), artery (lateral -> anterior distally), profunda pair, saphenous vein
        vcx = fx - sgn * (p["vx"] + float(t[f"vx{k}"][z]))
        vcy = fy + p["vy_top"] * u + p["vy_bot"] * (1 - u) + float(t[f"vy{k}"][z])
        rv = p["rv"] * (1.0 + float(t[f"rv{k}"][z])) * (1.0 + expand[k])
        ov = float(t[f"ov{k}"][z])
        alpha = math.radians(p["a_top"] * u + p["a_bot"] * (1 - u) + float(t[f"aa{k}"][z]))
        dist = rv + p["ra"] + 1.5
        acx, acy = vcx + sgn * math.cos(alpha) * dist, vcy - math.sin(alpha) * dist
        pad = p["pad"]
        g.layers.append(
            Ellipse(
                FAT,
                (vcx + acx) / 2,
                (vcy + acy) / 2,
                dist / 2 + rv + pad,
                rv + pad,
                math.degrees(math.atan2(acy - vcy, acx - vcx)),
            )
        )
        for side, z0, z1, ang, d, r in anat.nodes:
            if side == k and z0 <= z < z1:
                dx, dy = _dir(ang)
                g.layers.append(Ellipse(NODE, vcx + dx * (rv + d), vcy + dy * (rv + d), r, r * 0.7, ang))
        g.vessels.append(
            Vessel(VEIN, vcx, vcy, rv * (1 + ov), rv * (1 - ov), float(t[f"va{k}"][z]), target=k)
        )
        g.vessels.append(Vessel(ARTERY, acx, acy, p["ra"], p["ra"], 0.0))
        pcx, pcy = fx - sgn * (fr + 7.0), fy - 2.0
        g.vessels.append(Vessel(ARTERY, pcx, pcy - 3.0, 2.4, 2.4, 0.0))
        g.vessels.append(Vessel(OTHER_VEIN, pcx - sgn * 1.0, pcy + 3.0, 3.0, 2.4, 0.0))
        gx, gy = _dir(p["gsv_b"] if sgn > 0 else 180.0 - p["gsv_b"])
        rad = 1.0 - (_SKIN_MM + fat / 2) / max(a, b)
        g.vessels.append(
            Vessel(OTHER_VEIN, cx + gx * a * rad, cy + gy * b * rad, p["gsv_r"], p["gsv_r"], 0.0)
        )
    (x0, y0), (x1, y1) = [(s.x0, s.y0) for s in g.streaks]
    g.streaks = [Band(0, x0, y0, x1, y1, 5.0)]
    return g


def _iliac_slice(anat: Anatomy, z: int, expand: tuple[float, float]) -> SliceGeometry:
    p, t = anat.p, anat.t
    u = float(t["u"][z])
    g = SliceGeometry()
    am, bm, fat = p["am"], p["bm"], p["fat"]
    cx, cy = float(t["bx"][z]), p["body_y"] + float(t["by"][z])
    parts = [(cx, cy, am, bm)] + [(cx + s * 0.45 * am, cy + 0.3 * bm, 0.55 * am, 0.72 * bm) for s in (-1, 1)]
    _table(g, cy + 1.02 * bm + fat + 8.0)
    for tissue, grow in ((SKIN, fat), (FAT, fat - _SKIN_MM), (MUSCLE, 0.0)):
        g.layers += [Ellipse(tissue, x, y, a + grow, b + grow) for x, y, a, b in parts]
    low = 1.0 - u  # grows toward the acetabulum
    g.layers.append(Ellipse(FAT, cx, cy - 0.12 * bm, 0.42 * am, 0.45 * bm))  # pelvic cavity
    for s in (-1.0, 1.0):
        g.layers.append(Band(FAT, cx + s * 0.5 * am, cy + 0.2 * bm, cx + s * 0.95 * am, cy + 0.8 * bm, 2.0))
        g.layers.append(Ellipse(MUSCLE, cx + s * 0.40 * am, cy, 0.13 * am, 0.17 * bm, s * 20.0))  # psoas
        wx, wy = cx + s * 0.56 * am, cy + 0.22 * bm
        hl, th = (0.27 - 0.05 * low) * am, 8.0 + 7.0 * low
        ang = -s * p["wing_angle"]
        g.layers.append(Ellipse(CORTICAL, wx, wy, hl, th, ang))
        g.layers.append(Ellipse(CANCELLOUS, wx, wy, hl - 2.5, th - 2.5, ang))
        g.streaks.append(Band(0, wx, wy, 0.0, 0.0, 0.0))
    g.layers.append(Ellipse(CORTICAL, cx, cy + 0.55 * bm, 0.28 * am, 0.18 * bm))  # sacrum
    g.layers.append(Ellipse(CANCELLOUS, cx, cy + 0.55 * bm, 0.28 * am - 2.5, 0.18 * bm - 2.5))
    if u < p["bladder_u"]:
        grow = math.sqrt(1.0 - u / p["bladder_u"])
        g.layers.append(Ellipse(BOWEL_WALL, cx, cy - 0.3 * bm, 38 * grow + 2, 26 * grow + 2))
        g.layers.append(Ellipse(FLUID, cx, cy - 0.3 * bm, 38 * grow, 26 * grow))
    for i, (content, z0, z1, rho, theta, _) in enumerate(anat.loops):
        if z0 <= z < z1:
            dx, dy = _dir(theta)
            lx = cx + (rho * dx + float(t[f"lx{i}"][z])) * 0.42 * am
            ly = cy - 0.12 * bm + (rho * dy + float(t[f"ly{i}"][z])) * 0.45 * bm
            r = float(t[f"lr{i}"][z])
            g.layers.append(Ellipse(BOWEL_WALL, lx, ly, r, r * 0.85, theta))
            g.layers.append(Ellipse(content, lx, ly, r - 2.5, r * 0.85 - 2.5, theta))
    for k, s in enumerate((-1.0, 1.0)):
        rv = p["rv"] * (1.0 + float(t[f"rv{k}"][z])) * (1.0 + expand[k])
        ov = float(t[f"ov{k}"][z])
        vcx = cx + s * (0.27 * am - rv - 1.0) + float(t[f"vx{k}"][z])
        vcy = cy + 0.02 * bm + float(t[f"vy{k}"][z])
        alpha = math.radians(60.0 + float(t[f"aa{k}"][z]))
        dist = rv + p["ra"] + 1.5
        acx, acy = vcx + s * math.cos(alpha) * dist, vcy - math.sin(alpha) * dist
        pad = p["pad"]
        g.layers.append(
            Ellipse(
                FAT,
                (vcx + acx) / 2,
                (vcy + acy) / 2,
                dist / 2 + rv + pad,
                rv + pad,
                math.degrees(math.atan2(acy - vcy, acx - vcx)),
            )
        )
        g.vessels.append(Vessel(VEIN, vcx, vcy, rv * (1 + ov), rv * (1 - ov), 30.0 * s, target=k))
        g.vessels.append(Vessel(ARTERY, acx, acy, p["ra"], p["ra"], 0.0))
        g.vessels.append(Vessel(ARTERY, cx + s * 0.22 * am, cy + 0.3 * bm, 2.8, 2.8, 0.0))  # internal iliac
        g.vessels.append(Vessel(OTHER_VEIN, cx + s * 0.2 * am, cy + 0.36 * bm, 3.4, 2.8, 0.0))
    (x0, y0), (x1, y1) = [(s.x0, s.y0) for s in g.streaks]
    g.streaks = [Band(0, x0, y0, x1, y1, 6.0)]
    return g

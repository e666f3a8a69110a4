"""Geometry of the phantom's two anatomies, femoral (thigh level) and iliac (pelvis level), in mm.

A scan's anatomy is sampled once (:func:`sample_anatomy`): static parameters plus smooth per-slice
tracks (Gaussian-smoothed random walks along z), so organs and vessels drift slowly from slice to
slice. :func:`slice_geometry` turns one slice index into the shapes the renderer rasterizes.
Slice 0 is the most inferior one; the two target veins are index 0 (image left, the patient's right)
and 1.
"""

from __future__ import annotations

import math

import numpy as np

from .presets import (
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
    Preset,
)
from .shapes import (
    Anatomy,
    Band,
    Ellipse,
    Loop,
    Node,
    SliceGeometry,
    Vessel,
    add_table,
    add_vessel_pair,
    direction,
    track,
)

_SKIN_MM = 2.0
_BOWEL_CONTENTS = (BOWEL_AIR, FLUID, BOWEL_CONTRAST)


def sample_anatomy(
    kind: str,
    rng: np.random.Generator,
    prng: np.random.Generator,
    n: int,
    thickness_mm: float,
    preset: Preset,
) -> Anatomy:
    """Sample the anatomy of one scan of ``n`` slices (``prng`` draws the patient's habitus)."""
    habitus = {
        "habitus": prng.uniform(0.0, 1.0),
        "scale": prng.uniform(0.9, 1.1),
        "vein": prng.uniform(0.9, 1.1),
    }
    corr = 35.0 / thickness_mm  # drift correlation length: ~35 mm along z
    zmm = np.arange(n, dtype=np.float64) * thickness_mm
    u = np.clip(1.0 - (zmm[-1] - zmm) / 200.0, 0.0, 1.0)  # 1 at the top slice, 0 200 mm below
    if kind == "femoral":
        return _sample_femoral(rng, habitus, n, corr, u, preset)
    if kind == "iliac":
        return _sample_iliac(rng, habitus, n, corr, u, preset)
    raise ValueError(f"unknown anatomy {kind!r}; expected 'femoral' or 'iliac'")


def slice_geometry(anat: Anatomy, z: int, distension: tuple[float, float] = (0.0, 0.0)) -> SliceGeometry:
    """Shapes of slice ``z``; ``distension[k]`` widens target vein ``k`` (acute occlusive clot)."""
    if anat.kind == "femoral":
        return _femoral_slice(anat, z, distension)
    return _iliac_slice(anat, z, distension)


def _sample_femoral(
    rng: np.random.Generator, habitus: dict, n: int, corr: float, u: np.ndarray, preset: Preset
) -> Anatomy:
    h, s = habitus["habitus"], habitus["scale"]
    fat = 6.0 + 26.0 * h + rng.uniform(-3, 3)
    a = s * rng.uniform(62, 76) + fat
    b = s * rng.uniform(56, 70) + fat * 0.9
    p = {
        "fat": fat,
        "a": a,
        "b": b,
        "sep": 2 * a + rng.uniform(-0.15, 0.2) * a,  # legs may touch (overlap) or lie apart
        "body_y": rng.uniform(-15, 5),
        "fx": rng.uniform(0.1, 0.25),
        "fy": rng.uniform(0.0, 0.2),
        "fr": rng.uniform(12, 15),
        "cortex": rng.uniform(4, 7),
        "vx": rng.uniform(14, 26),
        "vy_top": rng.uniform(-36, -24),
        "vy_bot": rng.uniform(-14, 0),
        "rv": 5.25 * habitus["vein"],
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
        t[f"sept{k}"] = rng.uniform(0, 360, size=3)
    nodes = []
    for side in (0, 1):
        for _ in range(int(rng.poisson(preset.node_rate))):
            z0 = int(rng.integers(0, n))
            length = int(rng.integers(2, 12))
            nodes.append(
                Node(side, z0, z0 + length, rng.uniform(0, 360), rng.uniform(3, 9), rng.uniform(2.5, 5))
            )
    return Anatomy("femoral", n, p, t, nodes=tuple(nodes))


def _sample_iliac(
    rng: np.random.Generator, habitus: dict, n: int, corr: float, u: np.ndarray, preset: Preset
) -> Anatomy:
    h, s = habitus["habitus"], habitus["scale"]
    fat = 8.0 + 30.0 * h + rng.uniform(-3, 3)
    am, bm = s * rng.uniform(125, 150), s * rng.uniform(78, 95)  # semi-axes inside the fat
    p = {
        "fat": fat,
        "am": am,
        "bm": bm,
        "body_y": rng.uniform(-10, 8),
        "wing_angle": rng.uniform(35, 50),
        "rv": 6.2 * habitus["vein"],
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
    for i in range(int(rng.integers(5, 10))):  # bowel loops come and go quickly along z
        z0 = int(rng.integers(-n // 3, n // 2))
        content = _BOWEL_CONTENTS[int(rng.choice(3, p=(0.4, 0.4, 0.2)))]
        length = int(rng.integers(n // 3, n + 1))
        loops.append(Loop(content, z0, z0 + length, rng.uniform(0, 0.7), rng.uniform(0, 360)))
        t[f"lx{i}"] = track(rng, n, 0.1, corr / 3)
        t[f"ly{i}"] = track(rng, n, 0.1, corr / 3)
        t[f"lr{i}"] = rng.uniform(7, 15) * (1 + track(rng, n, 0.15, corr / 3))
    return Anatomy("iliac", n, p, t, loops=tuple(loops))


def _femoral_slice(anat: Anatomy, z: int, distension: tuple[float, float]) -> SliceGeometry:
    p, t = anat.p, anat.t
    u = float(t["u"][z])
    g = SliceGeometry()
    legs = []
    for k, sgn in ((0, -1.0), (1, 1.0)):
        grow = (0.9 + 0.1 * u) * (1.0 + float(t[f"a{k}"][z]))  # thighs widen proximally
        cx = sgn * p["sep"] / 2 + float(t[f"legx{k}"][z])
        legs.append((sgn, cx, p["body_y"] + float(t["legy"][z]), p["a"] * grow, p["b"] * grow))
    add_table(g, max(cy + b for _, _, cy, _, b in legs) + 8.0)
    fat = p["fat"]
    for tissue, inset in ((SKIN, 0.0), (FAT, _SKIN_MM)):  # layer by layer, so touching legs merge
        g.layers += [Ellipse(tissue, cx, cy, a - inset, b - inset) for _, cx, cy, a, b in legs]
    g.layers += [
        Ellipse(MUSCLE, cx + sg * 0.15 * fat, cy + 0.1 * fat, a - fat, b - fat) for sg, cx, cy, a, b in legs
    ]
    trochanter = 1.0 + 0.35 * max(0.0, u - 0.75) / 0.25
    femurs = []
    for k, (sgn, cx, cy, a, b) in enumerate(legs):
        fr = p["fr"] * trochanter
        fx, fy = cx + sgn * p["fx"] * (a - fat) * (0.6 + 0.4 * u), cy + p["fy"] * (b - fat)
        femurs.append((fx, fy))
        for ang in t[f"sept{k}"]:  # intermuscular fat planes
            dx, dy = direction(float(ang))
            g.layers.append(Band(FAT, fx, fy, fx + dx * a, fy + dy * b, p["septum"]))
        g.layers.append(Ellipse(CORTICAL, fx, fy, fr * 1.08, fr, 20.0 * sgn))
        inner = max(fr - p["cortex"] / trochanter, 3.0)
        g.layers.append(Ellipse(CANCELLOUS, fx, fy, inner * 1.08, inner, 20.0 * sgn))
        # femoral vein anteromedial to the femur; the artery lateral to it, turning anterior distally
        vcx = fx - sgn * (p["vx"] + float(t[f"vx{k}"][z]))
        vcy = fy + p["vy_top"] * u + p["vy_bot"] * (1 - u) + float(t[f"vy{k}"][z])
        rv = p["rv"] * (1.0 + float(t[f"rv{k}"][z])) * (1.0 + distension[k])
        alpha = math.radians(p["a_top"] * u + p["a_bot"] * (1 - u) + float(t[f"aa{k}"][z]))
        vein = (vcx, vcy, rv, float(t[f"ov{k}"][z]), float(t[f"va{k}"][z]))
        add_vessel_pair(g, vein, p["ra"], (sgn * math.cos(alpha), -math.sin(alpha)), p["pad"], k)
        for node in anat.nodes:
            if node.side == k and node.z0 <= z < node.z1:
                dx, dy = direction(node.angle)
                d = rv + node.gap
                g.layers.append(
                    Ellipse(NODE, vcx + dx * d, vcy + dy * d, node.radius, node.radius * 0.7, node.angle)
                )
        pcx, pcy = fx - sgn * (fr + 7.0), fy - 2.0  # profunda femoris artery and vein
        g.vessels.append(Vessel(ARTERY, pcx, pcy - 3.0, 2.4, 2.4, 0.0))
        g.vessels.append(Vessel(OTHER_VEIN, pcx - sgn * 1.0, pcy + 3.0, 3.0, 2.4, 0.0))
        gx, gy = direction(p["gsv_b"] if sgn > 0 else 180.0 - p["gsv_b"])  # great saphenous vein
        rad = 1.0 - (_SKIN_MM + fat / 2) / max(a, b)
        g.vessels.append(
            Vessel(OTHER_VEIN, cx + gx * a * rad, cy + gy * b * rad, p["gsv_r"], p["gsv_r"], 0.0)
        )
    (x0, y0), (x1, y1) = femurs
    g.streak = Band(0, x0, y0, x1, y1, 5.0)
    return g


def _iliac_slice(anat: Anatomy, z: int, distension: tuple[float, float]) -> SliceGeometry:
    p, t = anat.p, anat.t
    u = float(t["u"][z])
    g = SliceGeometry()
    am, bm, fat = p["am"], p["bm"], p["fat"]
    cx, cy = float(t["bx"][z]), p["body_y"] + float(t["by"][z])
    parts = [(cx, cy, am, bm)] + [(cx + s * 0.45 * am, cy + 0.3 * bm, 0.55 * am, 0.72 * bm) for s in (-1, 1)]
    add_table(g, cy + 1.02 * bm + fat + 8.0)
    for tissue, grow in ((SKIN, fat), (FAT, fat - _SKIN_MM), (MUSCLE, 0.0)):  # trunk and buttocks
        g.layers += [Ellipse(tissue, x, y, a + grow, b + grow) for x, y, a, b in parts]
    low = 1.0 - u  # toward the acetabulum the wings get shorter and thicker
    g.layers.append(Ellipse(FAT, cx, cy - 0.12 * bm, 0.42 * am, 0.45 * bm))  # pelvic cavity
    wings = []
    for s in (-1.0, 1.0):
        g.layers.append(Band(FAT, cx + s * 0.5 * am, cy + 0.2 * bm, cx + s * 0.95 * am, cy + 0.8 * bm, 2.0))
        g.layers.append(Ellipse(MUSCLE, cx + s * 0.40 * am, cy, 0.13 * am, 0.17 * bm, s * 20.0))  # psoas
        wx, wy = cx + s * 0.56 * am, cy + 0.22 * bm
        wings.append((wx, wy))
        hl, th, ang = (0.27 - 0.05 * low) * am, 8.0 + 7.0 * low, -s * p["wing_angle"]
        g.layers.append(Ellipse(CORTICAL, wx, wy, hl, th, ang))
        g.layers.append(Ellipse(CANCELLOUS, wx, wy, hl - 2.5, th - 2.5, ang))
    g.layers.append(Ellipse(CORTICAL, cx, cy + 0.55 * bm, 0.28 * am, 0.18 * bm))  # sacrum
    g.layers.append(Ellipse(CANCELLOUS, cx, cy + 0.55 * bm, 0.28 * am - 2.5, 0.18 * bm - 2.5))
    if u < p["bladder_u"]:
        grow = math.sqrt(1.0 - u / p["bladder_u"])
        g.layers.append(Ellipse(BOWEL_WALL, cx, cy - 0.3 * bm, 38 * grow + 2, 26 * grow + 2))
        g.layers.append(Ellipse(FLUID, cx, cy - 0.3 * bm, 38 * grow, 26 * grow))
    for i, loop in enumerate(anat.loops):
        if loop.z0 <= z < loop.z1:
            dx, dy = direction(loop.theta)
            lx = cx + (loop.rho * dx + float(t[f"lx{i}"][z])) * 0.42 * am
            ly = cy - 0.12 * bm + (loop.rho * dy + float(t[f"ly{i}"][z])) * 0.45 * bm
            r = float(t[f"lr{i}"][z])
            g.layers.append(Ellipse(BOWEL_WALL, lx, ly, r, r * 0.85, loop.theta))
            g.layers.append(Ellipse(loop.content, lx, ly, r - 2.5, r * 0.85 - 2.5, loop.theta))
    for k, s in enumerate((-1.0, 1.0)):  # external iliac vein medial to psoas, artery anterolateral
        rv = p["rv"] * (1.0 + float(t[f"rv{k}"][z])) * (1.0 + distension[k])
        vcx = cx + s * (0.27 * am - rv - 1.0) + float(t[f"vx{k}"][z])
        vcy = cy + 0.02 * bm + float(t[f"vy{k}"][z])
        alpha = math.radians(60.0 + float(t[f"aa{k}"][z]))
        vein = (vcx, vcy, rv, float(t[f"ov{k}"][z]), 30.0 * s)
        add_vessel_pair(g, vein, p["ra"], (s * math.cos(alpha), -math.sin(alpha)), p["pad"], k)
        g.vessels.append(Vessel(ARTERY, cx + s * 0.22 * am, cy + 0.3 * bm, 2.8, 2.8, 0.0))  # internal iliac
        g.vessels.append(Vessel(OTHER_VEIN, cx + s * 0.2 * am, cy + 0.36 * bm, 3.4, 2.8, 0.0))
    (x0, y0), (x1, y1) = wings
    g.streak = Band(0, x0, y0, x1, y1, 6.0)
    return g

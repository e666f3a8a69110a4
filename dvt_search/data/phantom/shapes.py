"""Shape primitives of the phantom (in millimetres) and smooth random tracks along z.

Coordinates: x to the image's right (patient's left), y down (posterior), origin at the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .presets import ARTERY, FAT, TABLE, VEIN


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
    streak: Band | None = None  # beam-hardening path between two bones (``tissue`` unused)


class Node(NamedTuple):
    """A lymph node next to target vein ``side`` on slices ``z0 <= z < z1``."""

    side: int
    z0: int
    z1: int
    angle: float  # direction from the vein centre (degrees)
    gap: float  # distance from the vein wall (mm)
    radius: float


class Loop(NamedTuple):
    """A bowel loop on slices ``z0 <= z < z1`` at polar position (``rho``, ``theta``) in the cavity."""

    content: int
    z0: int
    z1: int
    rho: float
    theta: float


@dataclass(frozen=True)
class Anatomy:
    """Sampled anatomy of one scan: static parameters ``p`` and per-slice tracks ``t`` (length n)."""

    kind: str
    n: int
    p: dict[str, float]
    t: dict[str, np.ndarray]
    nodes: tuple[Node, ...] = ()
    loops: tuple[Loop, ...] = ()

    def extent_mm(self) -> float:
        """Half-width of the body (mm): the field of view must hold it."""
        return self.p["extent"]


def track(rng: np.random.Generator, n: int, sd: float, corr: float) -> np.ndarray:
    """A smooth random walk of ``n`` samples, standard deviation ``sd``, correlation length ``corr`` samples."""
    sigma = max(corr, 0.5)
    pad = int(3 * sigma) + 2
    smooth = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma=sigma, mode="reflect")[pad : pad + n]
    x = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return smooth * (sd / math.sqrt(float(np.sum((k / k.sum()) ** 2))))


def direction(angle_deg: float) -> tuple[float, float]:
    """Unit vector at ``angle_deg`` (0 = +x, 90 = +y, i.e. posterior)."""
    r = math.radians(angle_deg)
    return math.cos(r), math.sin(r)


def add_table(g: SliceGeometry, y: float) -> None:
    """The CT table (two thin sheets) below the patient, top sheet at ``y`` mm."""
    g.layers.append(Band(TABLE, -600.0, y, 600.0, y, 3.0))
    g.layers.append(Band(TABLE, -600.0, y + 45.0, 600.0, y + 45.0, 2.0))


def add_vessel_pair(
    g: SliceGeometry,
    vein: tuple[float, float, float, float, float],
    artery_r: float,
    toward: tuple[float, float],
    pad: float,
    target: int,
) -> None:
    """A target vein (``cx, cy, r, ovalness, angle``), its artery beside it along ``toward``, and the fat
    pad around both (drawn as a layer, so structures drawn later overwrite it)."""
    vcx, vcy, rv, ov, angle = vein
    dist = rv + artery_r + 1.5
    acx, acy = vcx + toward[0] * dist, vcy + toward[1] * dist
    axis = math.degrees(math.atan2(toward[1], toward[0]))
    g.layers.append(Ellipse(FAT, (vcx + acx) / 2, (vcy + acy) / 2, dist / 2 + rv + pad, rv + pad, axis))
    g.vessels.append(Vessel(VEIN, vcx, vcy, rv * (1 + ov), rv * (1 - ov), angle, target=target))
    g.vessels.append(Vessel(ARTERY, acx, acy, artery_r, artery_r, 0.0))

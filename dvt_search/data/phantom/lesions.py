"""Thrombi and their mimics in the phantom's two target veins.

A :class:`ClotSegment` is a filling defect spanning consecutive slices of one vein: eccentric (on the
wall), central (floating) or occlusive (filling the lumen, possibly with a thin contrast rim and a
distended vein), small at both ends of the segment, sometimes with perivenous edema (hazy fat). A :class:`MixSegment` is inflow of unopacified
blood: a soft-edged low-HU region inside the lumen that mimics a clot on slices without one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .presets import MIN_CLOT_RADIUS_MM, Preset


@dataclass(frozen=True)
class ClotSegment:
    """A thrombus in target vein ``target`` over slices ``z0 <= z < z1``."""

    target: int
    z0: int
    z1: int
    occlusive: bool
    peak: float  # radius / lumen radius at the middle of the segment (partial clots)
    taper: float  # radius / lumen radius at its ends
    hu: float
    expansion: float  # vein distension at the middle (occlusive clots)
    angle: float  # wall the clot sits on (degrees), drifting by ``drift`` per slice
    drift: float
    central: bool  # floating in the middle of the lumen instead of on the wall
    rim_mm: float  # contrast rim left around an occlusive clot (0 = none)
    edema_hu: float  # HU added to the perivenous fat at the middle of the segment (0 = none)

    def envelope(self, z: int) -> float:
        """0..1 profile of the clot along its segment (small at both ends)."""
        frac = (z - self.z0 + 0.5) / (self.z1 - self.z0)
        return math.sin(math.pi * frac) ** 0.5

    def disc(self, z: int, rmin: float) -> tuple[float, float, float]:
        """Clot disc ``(radius, dx, dy)`` in mm on slice ``z`` of a lumen of inscribed radius ``rmin``.

        The disc lies inside the lumen; ``radius == inf`` means the clot fills the whole lumen.
        """
        env = self.envelope(z)
        if self.occlusive and env > 0.6:
            return (rmin - self.rim_mm if self.rim_mm else math.inf), 0.0, 0.0
        frac = self.taper + ((1.0 if self.occlusive else self.peak) - self.taper) * env
        rc = max(MIN_CLOT_RADIUS_MM, frac * rmin)
        if rc >= rmin:
            return math.inf, 0.0, 0.0
        off = 0.0 if self.central else (rmin - rc) * 0.95
        ang = math.radians(self.angle + self.drift * z)
        return rc, off * math.cos(ang), off * math.sin(ang)


@dataclass(frozen=True)
class MixSegment:
    """Inflow of unopacified blood in target vein ``target`` over ``z0 <= z < z1`` (a clot mimic)."""

    target: int
    z0: int
    z1: int
    hu: float
    radius: float  # blob radius / lumen radius
    offset: float  # blob centre offset / lumen radius
    angle: float
    weight: float  # blending weight at the middle of the segment

    def strength(self, z: int) -> float:
        """Blending weight on slice ``z`` (fading in and out along the segment)."""
        return self.weight * math.sin(math.pi * (z - self.z0 + 0.5) / (self.z1 - self.z0))


def sample_clots(rng: np.random.Generator, n: int, preset: Preset) -> tuple[ClotSegment, ...]:
    """Clot segments of one scan of ``n`` slices (none with probability ``1 - scan_clot_prob``)."""
    if rng.random() >= preset.scan_clot_prob:
        return ()
    count = 1 + int(rng.random() < preset.extra_segment_prob)
    out = []
    for _ in range(count):
        length = int(min(n, max(2, round(n * rng.uniform(*preset.segment_frac)))))
        z0 = int(rng.integers(0, n - length + 1))
        occlusive = bool(rng.random() < preset.occlusive_prob)
        out.append(
            ClotSegment(
                target=int(rng.random() < 0.6),  # left-sided DVT is more common
                z0=z0,
                z1=z0 + length,
                occlusive=occlusive,
                peak=float(rng.uniform(*preset.partial_frac)),
                taper=preset.taper_frac,
                hu=float(rng.uniform(*preset.clot_hu)),
                expansion=float(rng.uniform(*preset.expansion)) if occlusive else 0.0,
                angle=float(rng.uniform(0, 360)),
                drift=float(rng.normal(0, 4)),
                central=bool(rng.random() < 0.25),
                rim_mm=float(rng.uniform(0.6, 1.2)) if rng.random() < 0.3 else 0.0,
                edema_hu=float(rng.uniform(*preset.edema_hu)) if rng.random() < preset.edema_prob else 0.0,
            )
        )
    return tuple(out)


def sample_mixes(rng: np.random.Generator, n: int, preset: Preset) -> tuple[MixSegment, ...]:
    """Mixing-artifact segments of one scan (Poisson count per vein, independent of the clots)."""
    out = []
    for target in (0, 1):
        for _ in range(int(rng.poisson(preset.mixing_rate))):
            length = int(min(n, rng.integers(2, max(3, n // 3) + 1)))
            z0 = int(rng.integers(0, n - length + 1))
            out.append(
                MixSegment(
                    target=target,
                    z0=z0,
                    z1=z0 + length,
                    hu=float(rng.uniform(*preset.mixing_hu)),
                    radius=float(rng.uniform(0.35, 0.8)),
                    offset=float(rng.uniform(0.0, 0.6)),
                    angle=float(rng.uniform(0, 360)),
                    weight=float(rng.uniform(0.6, 1.0)),
                )
            )
    return tuple(out)

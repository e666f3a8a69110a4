"""Training-time augmentation applied identically to a slice and its vein mask.

All geometric parts (left-right flip, rotation, zoom, shift) are folded into ONE affine matrix that is
applied with ``cv2.warpAffine`` to the HU image (bilinear) and to the mask (nearest neighbour), so the two
stay aligned; the patch targets are recomputed from the warped mask by the dataset. The warp acts on HU
*before* windowing: one warp serves every window channel, and pixels shifted in from outside the field of
view are air (:data:`BORDER_HU` = -1000 HU), which every sensible window shows as 0. Intensity jitter (one
global HU offset, e.g. contrast timing / calibration) and Gaussian noise (HU) follow the warp. The noise is
a randomly placed, randomly signed window into a fixed Gaussian field twice the slice size (drawing 512^2
fresh normals costs ~6 ms, more than the rest of the pipeline; the window costs ~0.2 ms).

Random draws come from :func:`augment_rng` ``(seed, epoch, index)``, so a slice gets the same augmentation
in every run and every DataLoader worker, and a different one in the next epoch. Every field defaults to
off, and a default :class:`Augment` is the identity (the dataset then skips it entirely).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

#: HU value of pixels moved in from outside the image (air).
BORDER_HU = -1000.0

_NOISE_BANKS: dict[tuple[int, int], np.ndarray] = {}


def noise_bank(height: int, width: int) -> np.ndarray:
    """A fixed ``[2h, 2w]`` standard-normal field, made once per process and shape (not pickled)."""
    bank = _NOISE_BANKS.get((height, width))
    if bank is None:
        bank = np.random.default_rng(0x5EED).standard_normal((2 * height, 2 * width), dtype=np.float32)
        _NOISE_BANKS[(height, width)] = bank
    return bank


def augment_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a pure function of ``(seed, epoch, index)``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass(frozen=True)
class Augment:
    """Augmentation knobs; all off by default.

    Attributes:
        hflip_p: probability of a left-right flip (legs are mirror images; no up-down flip in axial CT).
        rotation_deg: rotation angle drawn uniformly from ``[-rotation_deg, rotation_deg]`` degrees.
        scale_range: zoom factor drawn uniformly from ``[lo, hi]`` (``> 1`` magnifies).
        translate_frac: shift per axis drawn uniformly from ``[-t, t]`` times the image side.
        intensity_jitter_hu: global HU offset drawn uniformly from ``[-j, j]``.
        noise_sd_hu: standard deviation of additive Gaussian noise in HU.
    """

    hflip_p: float = 0.0
    rotation_deg: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    translate_frac: float = 0.0
    intensity_jitter_hu: float = 0.0
    noise_sd_hu: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.scale_range)
        object.__setattr__(self, "scale_range", (lo, hi))
        checks = {
            "hflip_p": 0.0 <= self.hflip_p <= 1.0,
            "rotation_deg": 0.0 <= self.rotation_deg <= 180.0,
            "scale_range": 0.0 < lo <= hi,
            "translate_frac": 0.0 <= self.translate_frac < 1.0,
            "intensity_jitter_hu": self.intensity_jitter_hu >= 0.0,
            "noise_sd_hu": self.noise_sd_hu >= 0.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"Augment: invalid value(s) for {bad}: {self}")

    @property
    def is_identity(self) -> bool:
        """True when every transform is off."""
        return self == Augment()

    @property
    def is_geometric(self) -> bool:
        return (
            self.hflip_p > 0
            or self.rotation_deg > 0
            or self.scale_range != (1.0, 1.0)
            or self.translate_frac > 0
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Augment:
        """Build from a mapping (unknown keys raise ``KeyError`` naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise KeyError(f"Augment has no field(s) {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if "scale_range" in kw:
            kw["scale_range"] = tuple(kw["scale_range"])
        return cls(**kw)

    def matrix(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Draw one forward affine ``float64[2, 3]`` (source pixel -> output pixel) about the image centre.

        Always draws the same number of values from ``rng`` so later draws do not depend on the knobs.
        """
        flip_u, rot_u, scale_u, tx_u, ty_u = rng.random(5)
        flip = -1.0 if flip_u < self.hflip_p else 1.0
        theta = math.radians((2.0 * rot_u - 1.0) * self.rotation_deg)
        lo, hi = self.scale_range
        s = lo + (hi - lo) * scale_u
        tx = (2.0 * tx_u - 1.0) * self.translate_frac * width
        ty = (2.0 * ty_u - 1.0) * self.translate_frac * height
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        c, si = math.cos(theta) * s, math.sin(theta) * s
        linear = np.array([[c * flip, -si], [si * flip, c]])
        offset = np.array([cx + tx, cy + ty]) - linear @ np.array([cx, cy])
        return np.hstack([linear, offset[:, None]])

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, tuple]:
        """Every random value of one sample: the affine :meth:`matrix` and ``(shift, noise_sign, oy, ox)``.

        ``shift`` and ``noise_sign`` are uniform in [0, 1) (intensity offset and noise sign), ``oy``/``ox``
        the noise window's corner in the noise bank. :meth:`__call__` and the batch-wise device path
        (:mod:`.device_transform`) both use these draws, so a sample is augmented alike on either path.
        """
        m = self.matrix(rng, height, width)
        shift, noise_sign = rng.random(), rng.random()
        oy, ox = rng.integers(height + 1), rng.integers(width + 1)
        return m, (float(shift), float(noise_sign), int(oy), int(ox))

    def __call__(
        self, hu: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment a float32 HU slice and its uint8 0/1 mask (same 2D shape); returns new arrays.

        ``hu`` may also be a context stack ``[D, H, W]`` (:mod:`.context`): the one draw (warp, offset,
        noise) applies to every slice of it alike; the mask is the centre slice's.
        """
        h, w = hu.shape[-2:]
        m, (shift, noise_sign, oy, ox) = self.draw(rng, h, w)
        out = np.ascontiguousarray(hu, dtype=np.float32)
        if self.is_geometric:
            out = _warp_stack(out, m, (w, h))
            mask = cv2.warpAffine(
                np.ascontiguousarray(mask, dtype=np.uint8),
                m,
                (w, h),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
        else:
            out = out.copy()
        if self.intensity_jitter_hu > 0:
            out += np.float32((2.0 * shift - 1.0) * self.intensity_jitter_hu)
        if self.noise_sd_hu > 0:
            sd = np.float32(self.noise_sd_hu if noise_sign < 0.5 else -self.noise_sd_hu)
            out += noise_bank(h, w)[oy : oy + h, ox : ox + w] * sd
        return out, mask


def _warp_stack(hu: np.ndarray, m: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """Bilinear warp of a slice ``[H, W]`` or of every slice of a stack ``[D, H, W]`` (air outside)."""

    def one(x: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(
            x, m, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_HU
        )

    if hu.ndim == 2:
        return one(hu)
    return np.stack([one(np.ascontiguousarray(x)) for x in hu])

"""What a model needs to know about its inputs: :class:`DataSpec` (network input size, HU windows, and the
class/vein fractions of the training partition). Saved in every checkpoint's ``meta.json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its inputs.

    Attributes:
        image_size: side of the square network input (512 in the paper; small on CPU).
        windows: HU windows as ``(level, width)`` pairs; one input channel per window.
        pos_fraction: fraction of positive (DVT) slices in the training partition.
        vein_fraction: fraction of vein pixels in the training masks (for default pixel weights).
    """

    image_size: int = 512
    windows: tuple[tuple[float, float], ...] = ((40.0, 400.0),)
    pos_fraction: float = 0.5
    vein_fraction: float = 0.01

    @property
    def in_channels(self) -> int:
        return len(self.windows)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Grid of the patch targets at the network input size (one cell per 32x32 block)."""
        n = -(-self.image_size // 32)
        return (n, n)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["windows"] = [list(w) for w in self.windows]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSpec:
        d = dict(d)
        d["windows"] = tuple(tuple(float(x) for x in w) for w in d.get("windows", ((40.0, 400.0),)))
        return cls(**d)

"""What a model sees of a CT slice, in one shape everywhere.

:class:`InputSpec` is the network input — side length and HU windows — as the run's configuration, the
datasets, the checkpoints and the exported preprocessing all state it. :class:`DataSpec` adds what a model
needs to know about its own input (its slice context, see :mod:`.context`) and its training partition (class
and vein fractions); it is saved in every checkpoint's ``meta.json``.

A model's spec is its own: a family may choose an input size other than the run's ``--size`` and ``±k``
context slices (:meth:`DataSpec.with_input`); the store keeps slices at their native size either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

Window = tuple[float, float]
DEFAULT_WINDOWS: tuple[Window, ...] = ((40.0, 400.0),)


def as_windows(windows: Any) -> tuple[Window, ...]:
    """``[[level, width], ...]`` (lists, tuples, numpy) as a tuple of float pairs."""
    return tuple((float(w[0]), float(w[1])) for w in windows)


@dataclass(frozen=True)
class InputSpec:
    """The network input of a slice.

    Attributes:
        image_size: side of the square network input (512 in the paper; small on CPU).
        windows: HU windows as ``(level, width)`` pairs; one input channel per window.
    """

    image_size: int = 512
    windows: tuple[Window, ...] = DEFAULT_WINDOWS

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "windows", as_windows(self.windows))

    @property
    def in_channels(self) -> int:
        return len(self.windows)

    @property
    def input(self) -> InputSpec:
        """Just the network input (size and windows)."""
        return InputSpec(self.image_size, self.windows)


@dataclass(frozen=True)
class DataSpec(InputSpec):
    """What a model needs to know about its inputs: the :class:`InputSpec` plus training-data fractions.

    Attributes:
        image_size: side of the square network input (512 in the paper; small on CPU).
        windows: HU windows as ``(level, width)`` pairs; one input channel per window and context slice.
        pos_fraction: fraction of positive (DVT) slices in the training partition.
        vein_fraction: fraction of vein pixels in the training masks at ``image_size`` (for default
            pixel weights).
        context_slices: ``k``, the neighbouring slices of the same scan on each side stacked as extra
            channels (0 = the paper's single slice). Channels are slice-major: context slice ``d``
            (``0 .. 2k``, centre ``k``) holds channels ``d * W .. d * W + W - 1`` for ``W`` windows.
    """

    pos_fraction: float = 0.5
    vein_fraction: float = 0.01
    context_slices: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        k = int(self.context_slices)
        if k < 0:
            raise ValueError(f"context_slices must be >= 0, got {k}")
        object.__setattr__(self, "context_slices", k)

    @property
    def depth(self) -> int:
        """Slices per sample: ``2k + 1``."""
        return 2 * self.context_slices + 1

    @property
    def in_channels(self) -> int:
        """Network input channels: ``(2k + 1) x windows``."""
        return self.depth * len(self.windows)

    def with_input(self, *, image_size: int | None = None, context_slices: int | None = None) -> DataSpec:
        """This spec with another network input size and/or slice context (``None`` keeps the value).

        The training fractions are kept as they are: the caller recomputes ``vein_fraction`` where the
        size changes (:func:`dvt_search.data.dataset.spec_for` at the new size).
        """
        changes: dict[str, Any] = {}
        if image_size is not None:
            changes["image_size"] = int(image_size)
        if context_slices is not None:
            changes["context_slices"] = int(context_slices)
        return replace(self, **changes) if changes else self

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
        return cls(**dict(d))

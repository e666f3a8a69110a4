"""Scoring new HU slices with a family's own checkpoint: the default of :meth:`Family.open_export`.

:class:`HuSlices` is an in-memory dataset of raw HU slices that yields what
:class:`dvt_search.data.dataset.SliceDataset` yields (``image``, ``window_u8``), through the same
:mod:`dvt_search.data.transform` functions, so any family's :meth:`Model.predict` can read it.

Slice context (a model with ``spec.context_slices = k > 0``): the slices of a volume are its z order and
each one's ``±k`` neighbours come from :func:`dvt_search.data.context.volume_neighbours` (edge slice
repeated), as a training slice's come from its scan. :func:`context_stacks` is the same rule for callers
that hold the volume and want some of its slices; an element of a slice list given to
:func:`network_inputs` may be such a ``[2k+1, H, W]`` stack, a plain 2-D slice then standing for a
one-slice volume (its own neighbours).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import transform
from ..data.context import volume_neighbours
from ..data.spec import DataSpec

if TYPE_CHECKING:
    from .base import Model


def context_stacks(volume_hu: np.ndarray, index: Sequence[int], k: int) -> list[np.ndarray]:
    """Slices ``index`` of a ``[Z, H, W]`` volume: 2-D for ``k = 0``, else each one's ``[2k+1, H, W]`` stack."""
    if not k:
        return [volume_hu[int(i)] for i in index]
    rows = volume_neighbours(len(volume_hu), k)
    return [np.asarray(volume_hu)[rows[int(i)]] for i in index]


def network_inputs(slices_hu: Sequence[np.ndarray], spec: DataSpec) -> np.ndarray:
    """``float32[N, C, S, S]`` network inputs of HU slices (2-D) or context stacks ``[2k+1, H, W]``.

    A 2-D slice given to a model with context is repeated to its ``2k + 1`` context slices (a one-slice
    volume); a stack must hold exactly ``2k + 1`` slices.
    """
    k = int(getattr(spec, "context_slices", 0))
    out = []
    for s in slices_hu:
        s = np.asarray(s)
        if s.ndim == 2 and not k:
            out.append(transform.network_input(s, spec.image_size, spec.windows))
            continue
        stack = s[None].repeat(2 * k + 1, axis=0) if s.ndim == 2 else s
        if stack.ndim != 3 or len(stack) != 2 * k + 1:
            raise ValueError(
                f"a model with {k} context slices takes [{2 * k + 1}, H, W] stacks, got {s.shape}"
            )
        out.append(transform.context_input(stack, spec.image_size, spec.windows))
    return (
        np.stack(out)
        if out
        else np.zeros((0, spec.in_channels, spec.image_size, spec.image_size), np.float32)
    )


class HuSlices:
    """Raw HU slices (no labels, no masks) preprocessed as in training, without augmentation.

    Args:
        slices: 2-D HU arrays (any size; resized to ``spec.image_size``) in the volume's z order: with
            ``spec.context_slices = k`` item ``i`` stacks slices ``i-k .. i+k`` (edge slice repeated).
        spec: the model's input size, HU windows and context slices.
    """

    def __init__(self, slices: Sequence[np.ndarray], spec: DataSpec) -> None:
        self.slices = list(slices)
        self.size = int(spec.image_size)
        self.windows = tuple(spec.windows)
        self.context_slices = int(getattr(spec, "context_slices", 0))
        self._rows = volume_neighbours(len(self.slices), self.context_slices)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def labels(self) -> np.ndarray:
        """Unknown labels, all 0 (present for code that expects the attribute)."""
        return np.zeros(len(self), np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        if self.context_slices:
            stack = [self.slices[int(j)] for j in self._rows[i]]
            image = transform.context_input(stack, self.size, self.windows)
        else:
            image = transform.network_input(self.slices[i], self.size, self.windows)
        return {
            "image": torch.from_numpy(image),
            "label": torch.tensor(0.0),
            "index": torch.tensor(int(i), dtype=torch.int64),
        }

    def window_u8(self, i: int) -> np.ndarray:
        """Slice ``i`` in the first window as ``uint8[size, size]`` (the SIFT input)."""
        return transform.sift_input(self.slices[i], self.size, self.windows)


class CheckpointScorer:
    """Scores slices with a loaded model's :meth:`Model.predict`; no heat maps, no vein detector.

    Args:
        model: the family's model, loaded from the export folder.
        spec: input size and HU windows from ``preprocess.json``.
        heatmap_method: what a prediction summary says about heat maps.
    """

    def __init__(
        self, model: Model, spec: DataSpec, *, heatmap_method: str = "none (the family makes no heat maps)"
    ) -> None:
        self.model = model
        self.spec = spec
        self.heatmap_method = heatmap_method

    def scores(self, volume_hu: np.ndarray, *, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
        """``float64[Z]`` probabilities of a ``[Z, H, W]`` volume (``batch_size``/``device`` unused)."""
        if len(volume_hu) == 0:
            return np.zeros(0)
        return np.asarray(self.model.predict(HuSlices(list(volume_hu), self.spec)), np.float64)

    def heatmaps(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        return None

    def vein_fractions(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """``None``: a family scored by its own ``predict`` has no vein detector to ask."""
        return None

"""Scoring new HU slices with a family's own checkpoint: the default of :meth:`Family.open_export`.

:class:`HuSlices` is an in-memory dataset of raw HU slices that yields what
:class:`dvt_search.data.dataset.SliceDataset` yields (``image``, ``window_u8``), through the same
:mod:`dvt_search.data.transform` functions, so any family's :meth:`Model.predict` can read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import transform
from ..data.spec import DataSpec

if TYPE_CHECKING:
    from .base import Model


class HuSlices:
    """Raw HU slices (no labels, no masks) preprocessed as in training, without augmentation.

    Args:
        slices: 2-D HU arrays (any size; resized to ``spec.image_size``).
        spec: the model's input size and HU windows.
    """

    def __init__(self, slices: Sequence[np.ndarray], spec: DataSpec) -> None:
        self.slices = list(slices)
        self.size = int(spec.image_size)
        self.windows = tuple(spec.windows)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def labels(self) -> np.ndarray:
        """Unknown labels, all 0 (present for code that expects the attribute)."""
        return np.zeros(len(self), np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

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

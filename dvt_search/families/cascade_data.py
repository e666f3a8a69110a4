"""What the vein cascade reads: native-resolution slices with their 2.5D context, and (training only) masks.

The cascade crops at the STORE's resolution, so it does not use the dataset's resized ``image``: it reads
each manifest row's HU slice itself (:func:`dvt_search.data.io.load_slice`), cleans and windows it with
:mod:`dvt_search.data.transform` (resized only when a slice is not at the model's native side), and stacks
the ``-k .. +k`` neighbours of :func:`dvt_search.data.context.neighbour_rows` as channels (slice-major:
channel ``j * C + c`` is window ``c`` of offset ``j - k``). A deployed volume gets the same stacks through
:func:`dvt_search.data.context.volume_neighbours` (:func:`volume_stacks`).

Masks are read only by :meth:`NativeSlices.vein_masks`, which only training (and the stage-1 Dice metric)
calls; candidates at validation, test and deployment come from stage 1's prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import transform
from ..data.context import neighbour_rows, volume_neighbours
from ..data.io import load_slice
from ..data.schema import resolve

#: windowed slices kept in memory per :class:`NativeSlices` (larger stores are read per batch)
CACHE_BYTES = 512 * 2**20


def store_side(dataset: Any) -> int:
    """Side of the dataset's first stored slice (the native resolution the cascade crops at)."""
    frame = _frame(dataset)
    if not len(frame):
        raise ValueError("cannot find the native slice size of an empty dataset")
    row = frame.iloc[0]
    shape = load_slice(resolve(dataset.root, row["image_path"]), int(row["image_index"])).shape
    return int(max(shape))


def _frame(dataset: Any):
    frame = getattr(dataset, "frame", None)
    if frame is None or not hasattr(dataset, "root"):
        raise TypeError(
            f"vein_cascade reads native slices through a manifest-backed dataset (a SliceDataset with "
            f"'frame' and 'root'), got {type(dataset).__name__}"
        )
    return frame


class NativeSlices:
    """Rows of a manifest-backed dataset at native resolution, with their context stacks.

    Args:
        dataset: a :class:`~dvt_search.data.dataset.SliceDataset` (its ``frame`` and ``root`` are read).
        size: the native side (slices of another shape are resized to it).
        windows: HU windows ``(level, width)``.
        context: ``k``, neighbours on each side.
    """

    def __init__(self, dataset: Any, size: int, windows: Any, context: int) -> None:
        frame = _frame(dataset)
        root = dataset.root
        self.size = int(size)
        self.windows = tuple(windows)
        self.context = int(context)
        self._images = [str(resolve(root, p)) for p in frame["image_path"]]
        self._image_index = frame["image_index"].to_numpy(dtype=np.int64)
        self._masks = [str(resolve(root, p)) for p in frame["mask_path"]]
        self._mask_index = frame["mask_index"].to_numpy(dtype=np.int64)
        self.labels = frame["label"].to_numpy().astype(np.int64)
        self.neighbours = neighbour_rows(
            frame["scan_id"].astype(str).to_numpy(), frame["slice_index"].to_numpy(), self.context
        )
        self._cache: dict[int, np.ndarray] = {}
        per_slice = 4 * len(self.windows) * self.size * self.size
        self._cache_max = max(0, CACHE_BYTES // max(per_slice, 1))

    def __len__(self) -> int:
        return len(self._images)

    def windowed(self, row: int) -> np.ndarray:
        """``float32[C, S, S]``: row ``row``'s slice, cleaned, at the native side, windowed."""
        hit = self._cache.get(row)
        if hit is not None:
            return hit
        hu = load_slice(self._images[row], int(self._image_index[row]))
        out = transform.network_input(hu, self.size, self.windows)
        if len(self._cache) < self._cache_max:
            self._cache[row] = out
        return out

    def stacks(self, rows: np.ndarray) -> np.ndarray:
        """``float32[n, (2k+1)*C, S, S]`` context stacks of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(
            (len(rows), self.neighbours.shape[1] * len(self.windows), self.size, self.size), np.float32
        )
        c = len(self.windows)
        for i, r in enumerate(rows):
            for j, n in enumerate(self.neighbours[r]):
                out[i, j * c : (j + 1) * c] = self.windowed(int(n))
        return out

    def vein_masks(self, rows: np.ndarray, size: int) -> np.ndarray:
        """``uint8[n, size, size]`` vein masks of ``rows`` (any-coverage when shrinking). Training only."""
        return np.stack(
            [
                transform.resize_mask(load_slice(self._masks[int(r)], int(self._mask_index[int(r)])), size)
                for r in np.asarray(rows, dtype=np.int64)
            ]
        )


def volume_stacks(volume_hu: Any, size: int, windows: Any, context: int) -> np.ndarray:
    """``float32[Z, (2k+1)*C, S, S]`` context stacks of a ``[Z, H, W]`` HU volume (slice 0 most inferior)."""
    flat = [transform.network_input(s, size, windows) for s in volume_hu]
    if not flat:
        return np.zeros((0, (2 * int(context) + 1) * len(windows), size, size), np.float32)
    slices = np.stack(flat)
    nb = volume_neighbours(len(slices), context)
    return slices[nb].reshape(len(slices), -1, size, size)

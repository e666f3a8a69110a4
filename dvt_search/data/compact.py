"""What DataLoader workers ship for training: compact slices, finished batch-wise on the trial's device.

:class:`CompactSlices` wraps a :class:`~.dataset.SliceDataset`. Per item it reads the HU slice (and the
mask, only when the family's loss uses one) and ships

* ``hu``: ``int16[D, H, W]`` HU at the stored slice size, ``D = 2k + 1`` context slices of the sample
  (:attr:`.dataset.SliceDataset.context_rows`; ``D = 1`` without context), centre in the middle: non-finite values replaced as in
  :func:`.transform.clean_hu`, then rounded to the nearest integer and **clipped to the int16 range
  [-32768, 32767]** (every CT value fits; a float store loses its sub-HU fraction, at most 0.5 HU);
* ``mask``: ``uint8[1, H, W]`` 0/1 (only with ``with_mask``);
* ``aug``: ``float64[10]`` the sample's augmentation draws (:meth:`.augment.Augment.draw` of
  ``augment_rng(seed, epoch, index)``: the 2x3 matrix, then shift, noise sign, noise-window corner), only
  when the dataset augments;
* ``label`` and ``index`` as the dataset does.

That is 2 bytes per pixel for VGG-16 / DenseNet-161 and 3 with a mask, against 8 for the float32 image
and mask the reference item holds (one window; 4 bytes more per extra window). Windowing, resizing,
augmentation and the patch targets happen in :class:`.device_transform.DeviceTransform`, which the engine
applies right after moving a batch to the device (:attr:`CompactSlices.batch_transform`).

Every item of a batch must have one shape: the stored size of row 0 (``ship_shape``). A row stored at
another size is resized by the worker to ``ship_shape`` with the reference :func:`.transform.resize_image`
/ :func:`.transform.resize_mask` (the reference path resizes it once, straight to the input size; this
path may resize it twice, so a store mixing slice sizes is matched less closely than a uniform one).

The epoch lives in shared memory (``multiprocessing.RawValue``), so persistent DataLoader workers see
:meth:`set_epoch` of the main process: augmentation stays a function of ``(seed, epoch, index)``.
"""

from __future__ import annotations

import multiprocessing
import operator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import augment_rng
from .dataset import SliceDataset
from .device_transform import DeviceTransform
from .io import SliceReadError, load_slice
from .transform import clean_hu, resize_image, resize_mask

INT16_MIN, INT16_MAX = -32768, 32767


def to_int16_hu(hu: np.ndarray) -> np.ndarray:
    """HU as ``int16``: non-finite values replaced (:func:`.transform.clean_hu`), rounded, clipped to int16."""
    if hu.dtype == np.int16:
        return np.array(hu)
    return np.clip(np.rint(clean_hu(hu)), INT16_MIN, INT16_MAX).astype(np.int16)


class CompactSlices(Dataset):
    """The compact training view of a :class:`SliceDataset` (see the module docstring).

    Args:
        base: the dataset (its rows, size, windows, augmentation and seed are used).
        with_mask: ship the uint8 mask (families whose loss uses the mask or the patch targets).
        patches: the device transform derives the 32x32-block patch targets (needs ``with_mask``).
    """

    #: ``set_epoch`` reaches persistent DataLoader workers (the epoch is in shared memory)
    epoch_is_shared = True

    def __init__(self, base: SliceDataset, *, with_mask: bool, patches: bool = False) -> None:
        if patches and not with_mask:
            raise ValueError("patch targets are derived from the mask: patches=True needs with_mask=True")
        self.base = base
        self.with_mask = bool(with_mask)
        self._epoch = multiprocessing.RawValue("q", int(base.epoch))
        self.ship_shape = self._stored_shape(0) if len(base) else (base.size, base.size)
        self.batch_transform = DeviceTransform(
            base.size, base.windows, base.augment, mask=self.with_mask, patches=patches
        )
        self.context_slices = int(base.context_slices)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch``, also in persistent worker processes."""
        self._epoch.value = int(epoch)
        self.base.set_epoch(epoch)

    def _stored_shape(self, i: int) -> tuple[int, int]:
        b = self.base
        return tuple(load_slice(b._images[i], b._image_index[i]).shape)  # type: ignore[return-value]

    def _shipped(self, hu: np.ndarray, path: str) -> np.ndarray:
        """One stored slice as int16 at :attr:`ship_shape` (resized first when stored at another size)."""
        h, w = self.ship_shape
        if hu.shape != (h, w):
            if h != w:
                raise SliceReadError(f"{path}: stored slices must be square, row 0 is {h}x{w}")
            hu = resize_image(clean_hu(hu), h)
        return to_int16_hu(hu)

    def __getitem__(self, i: Any) -> dict[str, torch.Tensor]:
        b = self.base
        i = b._index(operator.index(i))
        hu = load_slice(b._images[i], b._image_index[i])
        mask = load_slice(b._masks[i], b._mask_index[i]) if self.with_mask else None
        if mask is not None and hu.shape != mask.shape:
            row = b.frame.iloc[i]
            raise SliceReadError(
                f"row {i} (scan {row['scan_id']}, slice {row['slice_index']}): image {b._images[i]} "
                f"shape {hu.shape} differs from mask {b._masks[i]} shape {mask.shape}"
            )
        h, w = self.ship_shape
        if hu.shape != (h, w):
            if h != w:
                raise SliceReadError(f"{b._images[i]}: stored slices must be square, row 0 is {h}x{w}")
            mask = resize_mask(mask, h) if mask is not None else None
        if self.context_slices:
            rows = [int(r) for r in b.context_rows[i]]
            stack = [hu if j == i else load_slice(b._images[j], b._image_index[j]) for j in rows]
            hu_t = torch.from_numpy(np.stack([self._shipped(x, b._images[j]) for x, j in zip(stack, rows)]))
        else:
            hu_t = torch.from_numpy(self._shipped(hu, b._images[i]))[None]
        item: dict[str, torch.Tensor] = {
            "hu": hu_t,
            "label": torch.tensor(float(b.labels[i]), dtype=torch.float32),
            "index": torch.tensor(i, dtype=torch.int64),
        }
        if mask is not None:
            item["mask"] = torch.from_numpy((np.asarray(mask) > 0).astype(np.uint8))[None]
        draws = self.aug_draws(i)
        if draws is not None:
            item["aug"] = draws
        return item

    def aug_draws(self, i: int) -> torch.Tensor | None:
        """Row ``i``'s ``aug`` (``float64[10]``) in the current epoch, or ``None`` without augmentation."""
        b = self.base
        if b.augment is None:
            return None
        m, (shift, sign, oy, ox) = b.augment.draw(augment_rng(b.seed, self.epoch, i), b.size, b.size)
        return torch.from_numpy(np.concatenate([m.ravel(), [shift, sign, oy, ox]]))

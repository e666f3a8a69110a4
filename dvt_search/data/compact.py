"""What DataLoader workers ship for training: compact slices, finished batch-wise on the trial's device.

:class:`CompactSlices` wraps a :class:`~.dataset.SliceDataset`. Per item it reads the HU slice (and the
mask, only when the family's loss uses one) and ships

* ``hu``: ``int16[D, H, W]`` HU at the stored slice size, ``D = 2k + 1`` context slices of the sample
  (:attr:`.dataset.SliceDataset.context_rows`; ``D = 1`` without context), centre in the middle: non-finite values replaced as in
  :func:`.transform.clean_hu`, then rounded to the nearest integer and **clipped to the int16 range
  [-32768, 32767]** (every CT value fits; a float store loses its sub-HU fraction, at most 0.5 HU);
* ``mask``: ``uint8[1, H, W]`` 0/1 (only with ``with_mask``, unpacked: see below);
* ``aug``: ``float64[10]`` the sample's augmentation draws (:meth:`.augment.Augment.draw` of
  ``augment_rng(seed, epoch, index)``: the 2x3 matrix, then shift, noise sign, noise-window corner), only
  when the dataset augments;
* ``label`` and ``index`` as the dataset does.

**Packed HU + mask** (the default with a mask when the run's windows allow it, :func:`packable`): instead
of ``hu`` and ``mask`` the item holds ``packed``: ``int16[D, H, W]``, bits 0-11 = HU + 1024 with HU
clipped to the 12-bit CT range [-1024, 3071] (:data:`PACK_HU_RANGE`), bit 12 (:data:`MASK_BIT`) = the mask,
on the centre slice only. :class:`.device_transform.DeviceTransform` unpacks it on the device with bitwise
ops. Clipping changes no windowed pixel when every window of the run lies inside the range, shrunk by the
augmentation's intensity reach (jitter + the noise bank's largest value): a clipped pixel is below every
window's floor or above every window's ceiling either way. Where a resize or an augmentation warp
interpolates a clipped pixel with a neighbour, that output pixel is the blend of the clipped value (e.g.
-1024 instead of a -3024 outside-the-field-of-view padding); data inside the range are packed exactly.
A run with a window outside (or ``pack=False``) ships ``hu`` + ``mask`` unpacked, and
:attr:`CompactSlices.pack_note` says why.

That is 2 bytes per pixel for every family (packed) and 3 for an unpacked mask family, against 8 for the
float32 image and mask the reference item holds (one window; 4 bytes more per extra window). Windowing, resizing,
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

import logging
import multiprocessing
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Augment, augment_rng, noise_bank
from .dataset import SliceDataset
from .device_transform import DeviceTransform
from .io import SliceReadError, load_slice
from .spec import Window
from .transform import clean_hu, resize_image, resize_mask

log = logging.getLogger(__name__)

INT16_MIN, INT16_MAX = -32768, 32767
#: HU range of the packed word (DICOM's 12-bit CT range); bits 0-11 hold ``HU - PACK_HU_RANGE[0]``.
PACK_HU_RANGE = (-1024, 3071)
#: the mask bit of the packed word
MASK_SHIFT = 12
MASK_BIT = 1 << MASK_SHIFT


def to_int16_hu(hu: np.ndarray) -> np.ndarray:
    """HU as ``int16``: non-finite values replaced (:func:`.transform.clean_hu`), rounded, clipped to int16."""
    if hu.dtype == np.int16:
        return np.array(hu)
    return np.clip(np.rint(clean_hu(hu)), INT16_MIN, INT16_MAX).astype(np.int16)


def intensity_reach(augment: Augment | None, size: int) -> float:
    """The most HU ``augment`` adds to or takes from a pixel at input ``size``: the jitter bound plus the
    noise SD times the largest ``|value|`` of the fixed noise bank (:func:`.augment.noise_bank`)."""
    if augment is None:
        return 0.0
    reach = float(augment.intensity_jitter_hu)
    if augment.noise_sd_hu > 0:
        reach += float(augment.noise_sd_hu) * float(np.abs(noise_bank(size, size)).max())
    return reach


def packable(windows: Sequence[Window], augment: Augment | None = None, size: int = 512) -> tuple[bool, str]:
    """Whether HU may be clipped to :data:`PACK_HU_RANGE` without changing a windowed pixel.

    Returns:
        ``(ok, why)``: ``why`` names the first window that reaches outside the range (empty when ok).
    """
    lo, hi = PACK_HU_RANGE
    reach = intensity_reach(augment, size)
    for level, width in windows:
        w_lo, w_hi = level - width / 2.0, level + width / 2.0
        if w_lo - reach < lo or w_hi + reach > hi:
            return False, (
                f"window (level {level:g}, width {width:g}) spans {w_lo:g}..{w_hi:g} HU"
                + (f" (+/- {reach:g} HU of augmentation)" if reach else "")
                + f", outside the 12-bit range {lo}..{hi} HU"
            )
    return True, ""


def pack(hu: np.ndarray, mask: np.ndarray | None, centre: int) -> np.ndarray:
    """``int16[D, H, W]`` packed word of an int16 HU stack ``[D, H, W]`` and the centre slice's 0/1 mask
    (``[H, W]`` or ``[1, H, W]``; ``None``: no mask bit)."""
    lo, hi = PACK_HU_RANGE
    out = np.clip(hu, lo, hi).astype(np.int16, copy=False)  # a new array: shifted in place, in int16
    out -= np.int16(lo)
    if mask is not None:
        bit = (np.asarray(mask) > 0).reshape(out.shape[1:]).view(np.uint8).astype(np.int16) << MASK_SHIFT
        out[centre] |= bit
    return out


class CompactSlices(Dataset):
    """The compact training view of a :class:`SliceDataset` (see the module docstring).

    Args:
        base: the dataset (its rows, size, windows, augmentation and seed are used).
        with_mask: ship the uint8 mask (families whose loss uses the mask or the patch targets).
        patches: the device transform derives the 32x32-block patch targets (needs ``with_mask``).
        pack: ship HU and mask in one 16-bit word (``None``: when :func:`packable` allows it; only with a
            mask, since without one the int16 HU is already 2 bytes per pixel).
    """

    #: ``set_epoch`` reaches persistent DataLoader workers (the epoch is in shared memory)
    epoch_is_shared = True
    #: loaders send whole batches through a shared-memory ring (:mod:`.ring`; every item has one shape)
    batches_in_ring = True

    def __init__(
        self, base: SliceDataset, *, with_mask: bool, patches: bool = False, pack: bool | None = None
    ) -> None:
        if patches and not with_mask:
            raise ValueError("patch targets are derived from the mask: patches=True needs with_mask=True")
        self.base = base
        self.with_mask = bool(with_mask)
        self._epoch = multiprocessing.RawValue("q", int(base.epoch))
        self.ship_shape = self._stored_shape(0) if len(base) else (base.size, base.size)
        self.context_slices = int(base.context_slices)
        ok, why = packable(base.windows, base.augment, base.size)
        if not self.with_mask:
            self.packed, self.pack_note = False, "no mask shipped: int16 HU, 2 bytes per pixel"
        elif pack is None or pack:
            if pack and not ok:
                raise ValueError(f"cannot pack HU and mask: {why}")
            self.packed = ok
            self.pack_note = (
                "HU + mask packed in one 16-bit word, 2 bytes per pixel"
                if ok
                else f"HU + mask unpacked (3 bytes per pixel): {why}"
            )
            if not ok:
                log.info("compact slices: %s", self.pack_note)
        else:
            self.packed, self.pack_note = False, "HU + mask unpacked (3 bytes per pixel): packing off"
        self.batch_transform = DeviceTransform(
            base.size,
            base.windows,
            base.augment,
            mask=self.with_mask,
            patches=patches,
            packed=self.packed,
            centre=self.context_slices,
        )

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
            hu_np = np.stack([self._shipped(x, b._images[j]) for x, j in zip(stack, rows)])
        else:
            hu_np = self._shipped(hu, b._images[i])[None]
        item: dict[str, torch.Tensor] = {}
        if self.packed:
            item["packed"] = torch.from_numpy(pack(hu_np, mask, self.context_slices))
        else:
            item["hu"] = torch.from_numpy(hu_np)
            if mask is not None:
                item["mask"] = torch.from_numpy((np.asarray(mask) > 0).astype(np.uint8))[None]
        item["label"] = torch.tensor(float(b.labels[i]), dtype=torch.float32)
        item["index"] = torch.tensor(i, dtype=torch.int64)
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

"""Batch-wise, on-device finish of compact training batches (torch only): the reference path, per batch.

:class:`DeviceTransform` turns a batch of :mod:`.compact` items, already on the trial's device, into what
the reference :class:`~.dataset.SliceDataset` item holds, in the order of the CPU reference
(:mod:`.transform`, :mod:`.augment`): resize -> augment (warp, intensity offset, noise) -> window, and the
patch targets from the final mask. Torch's own ``F.interpolate`` / ``affine_grid`` / ``grid_sample`` are
used rather than kornia: they are all this needs, they run on every device torch does (the CPU tests
exercise the very code a GPU runs) and they add no dependency to keep in step with torch.

Agreement with the CPU reference (tested on CPU tensors in ``tests/data/test_device_transform.py``):

* windowing: the same float32 operations, **exact**;
* resize (stored size != input size): shrinking is true area interpolation as two small matrix products
  (:func:`area_matrix`; OpenCV ``INTER_AREA``, equal up to float summation order), enlarging bilinear with
  half-pixel centres (``F.interpolate(align_corners=False)``, as OpenCV ``INTER_LINEAR``; OpenCV's
  fixed-point weights leave a mean difference < 2e-3 of a window); masks any-coverage when shrinking (area
  weights computed in integers, then ``> 0``, as OpenCV's area-then-``> 0``) and legacy ``nearest`` when
  enlarging (OpenCV ``INTER_NEAREST``'s ``floor(x * scale)``): exact;
* augmentation: the same draws and the same affine map; the HU warp is bilinear with air (-1000 HU)
  outside the image. OpenCV's ``warpAffine`` quantises interpolation weights to 1/32 pixel, torch does not,
  so values differ at sharp edges: mean absolute difference of a windowed channel <= 0.01, the mask's
  nearest-neighbour warp agrees on >= 99 % of pixels (rounding of exactly-half coordinates differs);
* intensity offset and noise (the same fixed noise bank and window): exact up to float addition order;
* a packed batch (``packed``: HU + 1024 in bits 0-11, the mask in bit 12, see :mod:`.compact`) is
  unpacked first (:func:`unpack`, integer ops on the device): exactly the unpacked ``hu`` and ``mask`` of
  HU inside [-1024, 3071] (the clipping itself is discussed in :mod:`.compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import BORDER_HU, Augment, noise_bank
from .schema import PATCH_BLOCK
from .spec import Window

_BANKS: dict[tuple[int, int, str], Tensor] = {}


#: low 12 bits of the packed word (HU + 1024) and the mask bit (as :data:`.compact.MASK_BIT`)
HU_BITS, MASK_SHIFT, HU_OFFSET = 0x0FFF, 12, 1024


def unpack(packed: Tensor, centre: int) -> tuple[Tensor, Tensor]:
    """``(hu, mask)`` of a packed ``int16[B, D, H, W]`` batch: float32 HU ``[B, D, H, W]`` and the centre
    slice's float32 0/1 mask ``[B, 1, H, W]`` (bitwise ops in the packed dtype, then one cast each)."""
    hu = (packed & HU_BITS).float() - HU_OFFSET
    mask = ((packed[:, centre : centre + 1] >> MASK_SHIFT) & 1).float()
    return hu, mask


def window_batch(hu: Tensor, windows: Sequence[Window]) -> Tensor:
    """``float32[B, D * C, S, S]``: :func:`.windowing.window` of ``hu`` ``[B, D, S, S]`` for each window.

    ``D`` context slices give slice-major channels (channel ``d * C + w``), as
    :func:`.transform.to_channels` of a stack; ``D = 1`` is one channel per window.
    """
    out = []
    for level, width in windows:
        lo = torch.tensor(level - width / 2.0, dtype=torch.float32)
        scale = torch.tensor(1.0 / width, dtype=torch.float32)
        out.append(((hu - lo.to(hu.device)) * scale.to(hu.device)).clamp_(0.0, 1.0))
    b, d, h, w = hu.shape
    stacked = torch.stack(out, dim=2).reshape(b, d * len(out), h, w)  # [B, D, C, ...] -> slice-major
    return torch.nan_to_num_(stacked, nan=0.0)


def area_matrix(src: int, dst: int, device: torch.device | None = None) -> Tensor:
    """``float32[dst, src]`` area-interpolation weights (OpenCV ``INTER_AREA`` when shrinking).

    Output pixel ``i`` averages the source interval ``[i * src / dst, (i + 1) * src / dst)``, each source
    pixel weighted by its overlap; overlaps are computed in integers, so a pixel outside the interval
    gets exactly 0 (what the any-coverage mask rule relies on).
    """
    i = torch.arange(dst, dtype=torch.int64)[:, None]
    j = torch.arange(src, dtype=torch.int64)[None, :]
    overlap = (torch.minimum((i + 1) * src, (j + 1) * dst) - torch.maximum(i * src, j * dst)).clamp_min(0)
    return (overlap.double() / src).float().to(device)


def _area(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    return area_matrix(h, size, x.device) @ x @ area_matrix(w, size, x.device).T


def resize_hu(hu: Tensor, size: int) -> Tensor:
    """``[B, 1, H, W]`` float HU to ``size`` x ``size``: area when shrinking, bilinear when enlarging."""
    h, w = hu.shape[-2:]
    if (h, w) == (size, size):
        return hu
    if h > size or w > size:
        return _area(hu, size)
    return F.interpolate(hu, size=(size, size), mode="bilinear", align_corners=False)


def resize_masks(mask: Tensor, size: int) -> Tensor:
    """``[B, 1, H, W]`` 0/1 float masks to ``size`` x ``size``: any-coverage shrinking, nearest enlarging."""
    h, w = mask.shape[-2:]
    if (h, w) == (size, size):
        return mask
    if h > size or w > size:
        return (_area(mask, size) > 0).float()
    return F.interpolate(mask, size=(size, size), mode="nearest")


def patch_targets(mask: Tensor, block: int = PATCH_BLOCK) -> Tensor:
    """``[B, 1, g, g]`` float 0/1: a cell is 1 when its ``block`` x ``block`` block holds vein (partial
    edge blocks count, as :func:`.schema.patches_from_mask`)."""
    return F.max_pool2d(mask, kernel_size=block, stride=block, ceil_mode=True)


def sampling_grid(matrices: Tensor, size: int) -> Tensor:
    """``affine_grid`` of forward pixel matrices ``[B, 2, 3]`` (source -> output, OpenCV convention).

    ``grid_sample`` wants, per output pixel, its source location in normalised coordinates
    (``align_corners=False``: pixel ``x`` sits at ``(2x + 1) / S - 1``), so the inverse map is conjugated
    by that change of coordinates (in float64, then cast).
    """
    b = matrices.shape[0]
    fwd = torch.zeros(b, 3, 3, dtype=torch.float64, device=matrices.device)
    fwd[:, :2] = matrices.double()
    fwd[:, 2, 2] = 1.0
    s = float(size)
    to_pix = torch.tensor([[s / 2, 0, (s - 1) / 2], [0, s / 2, (s - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    to_norm = torch.tensor([[2 / s, 0, 1 / s - 1], [0, 2 / s, 1 / s - 1], [0, 0, 1]], dtype=torch.float64)
    theta = to_norm.to(fwd.device) @ torch.linalg.inv(fwd) @ to_pix.to(fwd.device)
    return F.affine_grid(theta[:, :2].float(), [b, 1, size, size], align_corners=False)


def _bank(size: int, device: torch.device) -> Tensor:
    key = (size, size, str(device))
    if key not in _BANKS:
        _BANKS[key] = torch.from_numpy(noise_bank(size, size)).to(device)
    return _BANKS[key]


def augment_batch(
    augment: Augment, hu: Tensor, mask: Tensor | None, draws: Tensor
) -> tuple[Tensor, Tensor | None]:
    """:meth:`.augment.Augment.__call__` of every sample, from its ``draws`` row (see :mod:`.compact`).

    ``hu`` is ``[B, D, S, S]``: one draw per sample, applied alike to its ``D`` context slices.
    """
    size = hu.shape[-1]
    if augment.is_geometric:
        grid = sampling_grid(draws[:, :6].reshape(-1, 2, 3), size)
        hu = F.grid_sample(hu - BORDER_HU, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        hu = hu + BORDER_HU
        if mask is not None:
            mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    else:
        hu = hu.clone()
    if augment.intensity_jitter_hu > 0:
        shift = ((2.0 * draws[:, 6] - 1.0) * augment.intensity_jitter_hu).float()
        hu = hu + shift.view(-1, 1, 1, 1)
    if augment.noise_sd_hu > 0:
        bank = _bank(size, hu.device)
        sd = torch.where(draws[:, 7] < 0.5, augment.noise_sd_hu, -augment.noise_sd_hu).float()
        oy, ox = draws[:, 8].long().tolist(), draws[:, 9].long().tolist()
        noise = torch.stack([bank[y : y + size, x : x + size] for y, x in zip(oy, ox)])
        hu = hu + (noise * sd.view(-1, 1, 1))[:, None]  # the same noise on every context slice
    return hu, mask


class DeviceTransform:
    """Finish a compact batch on its device (see the module docstring for the agreement with the CPU path).

    Args:
        size: network input side.
        windows: HU windows, one channel each.
        augment: the training augmentation (``None``: none; batches must then carry no ``aug``).
        mask: the batch carries a uint8 ``mask`` to resize/augment; it comes out float32 ``[B, 1, S, S]``.
        patches: add float32 ``patches`` ``[B, 1, g, g]`` from the final mask.
        packed: the batch carries ``packed`` (HU and mask in one int16 word) instead of ``hu``/``mask``.
        centre: the context slice whose word holds the mask bit (``k`` of ``2k + 1``).
    """

    def __init__(
        self,
        size: int,
        windows: Sequence[Window],
        augment: Augment | None,
        *,
        mask: bool,
        patches: bool = False,
        packed: bool = False,
        centre: int = 0,
    ) -> None:
        if packed and not mask:
            raise ValueError("a packed batch carries the mask: packed=True needs mask=True")
        self.packed = bool(packed)
        self.centre = int(centre)
        self.size = int(size)
        self.windows = tuple((float(lv), float(wd)) for lv, wd in windows)
        self.augment = None if augment is None or augment.is_identity else augment
        self.mask = bool(mask)
        self.patches = bool(patches)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A new batch dict: ``image`` (and ``mask``/``patches``) added; ``hu``/``packed`` and ``aug`` removed.

        ``hu`` is ``[B, D, H, W]`` (``D = 2k + 1`` context slices); ``image`` is ``[B, D * windows, S, S]``.
        """
        out = {k: v for k, v in batch.items() if k not in ("hu", "aug", "mask", "packed")}
        if self.packed:
            hu_raw, mask_raw = unpack(batch["packed"], self.centre)
        else:
            hu_raw = batch["hu"].float()
            mask_raw = batch["mask"].float() if self.mask else None
        hu = resize_hu(hu_raw, self.size)
        mask = resize_masks(mask_raw, self.size) if mask_raw is not None else None
        if self.augment is not None:
            hu, mask = augment_batch(self.augment, hu, mask, batch["aug"])
        out["image"] = window_batch(hu, self.windows)
        if mask is not None:
            out["mask"] = mask
            if self.patches:
                out["patches"] = patch_targets(mask)
        return out

"""The slice pipeline shared by training data and deployment: HU slice -> network input (or SIFT image).

:class:`dvt_search.data.dataset.SliceDataset` and :mod:`dvt_search.deploy.preprocess` both call these
functions, so an exported model preprocesses new slices exactly as its training slices were:

1. :func:`clean_hu` — non-finite HU replaced (:data:`NONFINITE_HU`: NaN -> -1000 air, +inf -> 3071,
   -inf -> -1024), as float32;
2. :func:`resize_image` — to ``size`` x ``size`` (OpenCV ``INTER_AREA`` when shrinking, anti-aliased;
   ``INTER_LINEAR`` when enlarging); masks go through :func:`resize_mask` (any-coverage when shrinking);
3. (training only: augmentation, on the resized HU and mask);
4. :func:`to_channels` — one channel per HU window ``(level, width)``:
   ``clip((HU - (level - width/2)) / width, 0, 1)`` as ``float32[C, S, S]``; or :func:`to_u8` — the first
   window as ``uint8[S, S]`` (``round(255 * channel 0)``, the SIFT baseline's input).

:func:`network_input` and :func:`sift_input` are steps 1, 2 and 4 in one call (no augmentation).

Slice context (2.5D, :mod:`.context`): a sample of a model with ``k`` context slices is the stack
``float32[2k+1, H, W]`` of the slice and its neighbours (centre in the middle); each context slice goes
through steps 1-2 on its own, augmentation applies one draw to the whole stack, and
:func:`to_channels` of a stack is slice-major (:data:`CHANNEL_ORDER`). :func:`context_input` is steps 1, 2
and 4 of a stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .windowing import Window, multi_window, window

#: Replacement values of non-finite HU (keys as in ``numpy.nan_to_num``; recorded in preprocess.json).
NONFINITE_HU: dict[str, float] = {"nan": -1000.0, "posinf": 3071.0, "neginf": -1024.0}
#: How :func:`resize_image` interpolates (recorded in preprocess.json).
RESIZE_METHOD = "OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging (before windowing)"
#: The windowing formula of :func:`to_channels` (recorded in preprocess.json).
WINDOW_FORMULA = "clip((HU - (level - width / 2)) / width, 0, 1)"
#: The SIFT image of :func:`to_u8` (recorded in preprocess.json).
U8_FORMULA = "uint8 round(255 * channel 0)"
#: How the channels of a context stack are laid out (recorded in preprocess.json).
CHANNEL_ORDER = "slice-major: channel d * n_windows + w = context slice d (0 .. 2k, centre k), window w"


def clean_hu(hu: np.ndarray) -> np.ndarray:
    """Float32 HU with non-finite values replaced by :data:`NONFINITE_HU`."""
    hu = np.asarray(hu, dtype=np.float32)
    if not np.isfinite(hu).all():
        hu = np.nan_to_num(hu, **NONFINITE_HU)
    return hu


def resize_image(hu: np.ndarray, size: int) -> np.ndarray:
    """Float32 HU slice resized to ``size`` x ``size`` (area when shrinking, bilinear when enlarging)."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.shape == (size, size):
        return hu
    shrink = hu.shape[0] > size or hu.shape[1] > size
    return cv2.resize(hu, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Uint8 0/1 mask resized to ``size`` x ``size``; shrinking keeps any-coverage (max-pool like)."""
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.shape == (size, size):
        return binary
    if binary.shape[0] > size or binary.shape[1] > size:
        area = cv2.resize(binary.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        return (area > 0).astype(np.uint8)
    return cv2.resize(binary, (size, size), interpolation=cv2.INTER_NEAREST)


def prepare_hu(hu: np.ndarray, size: int) -> np.ndarray:
    """Steps 1-2: the cleaned HU slice at ``size`` x ``size`` (float32)."""
    return resize_image(clean_hu(hu), size)


def to_channels(hu: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Step 4: one windowed channel per ``(level, width)`` of a prepared slice, ``float32[C, S, S]``.

    A context stack ``[D, S, S]`` gives ``D x len(windows)`` channels, slice-major (:data:`CHANNEL_ORDER`).
    """
    if hu.ndim == 3:
        return np.concatenate([multi_window(h, windows) for h in hu], axis=0)
    return multi_window(hu, windows)


def to_u8(hu: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Step 4 (SIFT): the first window of a prepared slice as ``uint8[S, S]``."""
    level, width = windows[0]
    return np.rint(window(hu, level, width) * 255.0).astype(np.uint8)


def network_input(hu: np.ndarray, size: int, windows: Sequence[Window]) -> np.ndarray:
    """``float32[C, size, size]`` network input of one raw HU slice (no augmentation)."""
    return to_channels(prepare_hu(hu, size), windows)


def context_input(stack_hu: Sequence[np.ndarray], size: int, windows: Sequence[Window]) -> np.ndarray:
    """``float32[D * C, size, size]`` network input of raw HU context slices (centre in the middle)."""
    return to_channels(np.stack([prepare_hu(h, size) for h in stack_hu]), windows)


def sift_input(hu: np.ndarray, size: int, windows: Sequence[Window]) -> np.ndarray:
    """``uint8[size, size]`` first-window image of one raw HU slice (what the SIFT baseline reads)."""
    return to_u8(prepare_hu(hu, size), windows)

"""The input contract of an exported model: CT slice in HU -> network input, exactly as in training.

Training reads slices through :class:`dvt_search.data.dataset.SliceDataset`; deployment applies the very
same functions of :mod:`dvt_search.data.transform` to slices from a DICOM series, so deployed scores
match the scores of the selected model:

1. non-finite HU replaced (NaN -> -1000, +inf -> 3071, -inf -> -1024);
2. resized to ``size`` x ``size`` (OpenCV ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging);
3. one channel per HU window ``(level, width)``: ``clip((HU - (level - width/2)) / width, 0, 1)``;
4. float32, layout ``[C, size, size]`` (a batch is ``[B, C, size, size]``).

A model trained with slice context (``context_slices = k > 0``, recorded in ``preprocess.json`` as
``context``) reads each slice with its ``±k`` neighbours of the same series in z order, the edge slice
repeated at the series' ends (:func:`dvt_search.data.context.volume_neighbours`); each goes through steps
1-3 and the channels are slice-major, ``C = (2k + 1) x windows``. ``k = 0`` (and a ``preprocess.json``
without ``context``) is the single slice.

The SIFT baseline reads the first window as ``uint8`` (``round(255 * channel 0)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dvt_search.data import transform
from dvt_search.data.spec import DataSpec
from dvt_search.data.transform import clean_hu
from dvt_search.families.base import Model

__all__ = [
    "PREPROCESS_FORMAT",
    "clean_hu",
    "network_input",
    "preprocess_spec",
    "sift_input",
    "spec_from_preprocess",
]

PREPROCESS_FORMAT = "dvt-search-preprocess/1"
#: How context slices are found (recorded in preprocess.json).
CONTEXT_RULE = (
    "slices z-k .. z+k of the same series in z order (slice 0 most inferior), the edge slice repeated "
    "at either end; each slice preprocessed alike"
)


def preprocess_spec(model: Model) -> dict[str, Any]:
    """The ``preprocess.json`` document of a model (its data spec, spelled out)."""
    spec = model.spec
    doc = {
        "format": PREPROCESS_FORMAT,
        "input": "one axial CT slice in Hounsfield units (DICOM RescaleSlope/RescaleIntercept applied)",
        "nonfinite_hu": dict(transform.NONFINITE_HU),
        "resize": {"size": int(spec.image_size), "method": transform.RESIZE_METHOD},
        "windows": [[float(lv), float(wd)] for lv, wd in spec.windows],
        "window_formula": transform.WINDOW_FORMULA,
        "channels": int(spec.in_channels),
        "context": {
            "context_slices": int(spec.context_slices),
            "rule": CONTEXT_RULE,
            "channel_order": transform.CHANNEL_ORDER,
        },
        "layout": "float32 [batch, channels, size, size]",
        "sift_input": None,
        "slice_order": "slice_index 0 = most inferior slice of the series",
    }
    doc.update(model.preprocess_notes())
    return doc


def spec_from_preprocess(doc: dict[str, Any]) -> DataSpec:
    """A :class:`DataSpec` with the size, windows and context slices of a ``preprocess.json`` document."""
    if doc.get("format") != PREPROCESS_FORMAT:
        raise ValueError(f"preprocess.json format {doc.get('format')!r}, expected {PREPROCESS_FORMAT!r}")
    context = doc.get("context") or {}
    return DataSpec(
        image_size=int(doc["resize"]["size"]),
        windows=tuple(tuple(w) for w in doc["windows"]),
        context_slices=int(context.get("context_slices", 0)),
    )


def network_input(hu: np.ndarray, spec: DataSpec) -> np.ndarray:
    """``float32[C, S, S]`` network input of one HU slice (:func:`dvt_search.data.transform.network_input`)."""
    return transform.network_input(hu, spec.image_size, spec.windows)


def sift_input(hu: np.ndarray, spec: DataSpec) -> np.ndarray:
    """``uint8[S, S]`` first-window image of one HU slice (what the SIFT baseline reads)."""
    return transform.sift_input(hu, spec.image_size, spec.windows)

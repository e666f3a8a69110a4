"""HU windowing: map Hounsfield units to float32 intensities in [0, 1], one channel per window.

A window ``(level, width)`` shows HU in ``[level - width/2, level + width/2]`` as 0..1 linearly and clips
everything outside. Several windows stacked as channels give a network both the wide soft-tissue view and a
narrow view where thrombus and contrast-filled vein differ strongly.

Named presets (:data:`PRESETS`), values from the CT facts in the design notes:

* ``soft_tissue`` L40 / W400 (-160..240 HU): the standard abdominal/soft-tissue window, the paper's input.
* ``venous`` L80 / W200 (-20..180 HU): fat goes black, thrombus (30-70 HU) maps to 0.25-0.45 and
  venous-phase enhanced vein (90-160 HU) to 0.55-0.90, so a filling defect stands out.
* ``bone`` L400 / W1800 (-500..1300 HU): cortical/cancellous bone, a landmark for the femoral vessels.

NaN pixels (broken decoders, padded NIfTI) map to 0 (as air would); +/-inf clip like any other value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Window = tuple[float, float]

PRESETS: dict[str, Window] = {
    "soft_tissue": (40.0, 400.0),
    "venous": (80.0, 200.0),
    "bone": (400.0, 1800.0),
}


def _check(level: float, width: float) -> None:
    if not (np.isfinite(level) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"HU window needs a finite level and a width > 0, got level={level}, width={width}")


def window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """``clip((hu - (level - width/2)) / width, 0, 1)`` as float32 (NaN -> 0).

    Args:
        hu: array of Hounsfield units, any real dtype and shape.
        level: window centre in HU.
        width: window width in HU (> 0).
    """
    _check(level, width)
    out = np.subtract(hu, np.float32(level - width / 2.0), dtype=np.float32)
    out *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    if np.isnan(out).any():
        np.nan_to_num(out, copy=False, nan=0.0)
    return out


def multi_window(hu: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Stack :func:`window` of a 2D slice for each ``(level, width)``: float32 ``[C, H, W]``."""
    if len(windows) == 0:
        raise ValueError("at least one HU window is needed")
    hu = np.asarray(hu, dtype=np.float32)
    return np.stack([window(hu, float(lv), float(wd)) for lv, wd in windows])


def parse_windows(items: Iterable[str | Sequence[float]]) -> tuple[Window, ...]:
    """Windows from preset names and/or ``(level, width)`` pairs, e.g. ``["soft_tissue", (80, 200)]``.

    Raises:
        ValueError: on an unknown preset name or a malformed/invalid pair.
    """
    out: list[Window] = []
    for item in items:
        if isinstance(item, str):
            if item not in PRESETS:
                raise ValueError(f"unknown HU window preset {item!r}; known: {sorted(PRESETS)}")
            out.append(PRESETS[item])
            continue
        pair = tuple(item)
        if len(pair) != 2:
            raise ValueError(f"an HU window is (level, width), got {item!r}")
        level, width = float(pair[0]), float(pair[1])
        _check(level, width)
        out.append((level, width))
    if not out:
        raise ValueError("at least one HU window is needed")
    return tuple(out)

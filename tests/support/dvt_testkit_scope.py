"""Synthetic non-leg CT volumes (chest, upper abdomen) for the out-of-scope checks, drawn with OpenCV.

Tissue values follow textbook HU: fat -100, muscle 50, lung -850, blood pool (heart, aorta) in venous
phase 150, liver/spleen in portal-venous phase 110-120, cortical bone 1000, cancellous bone 250.
Gaussian noise (SD 15 HU) is added; ``spacing`` is the in-plane pixel size in mm (field of view 480 mm).
"""

from __future__ import annotations

import cv2
import numpy as np

FOV_MM = 480.0


def _canvas(size: int) -> tuple[np.ndarray, float]:
    return np.full((size, size), -1000.0, np.float32), FOV_MM / size


def _ellipse(
    img: np.ndarray, mm: float, centre: tuple[float, float], axes: tuple[float, float], hu: float
) -> None:
    c = img.shape[0] / 2
    cv2.ellipse(
        img,
        (int(round(c + centre[0] / mm)), int(round(c + centre[1] / mm))),
        (max(1, int(round(axes[0] / mm))), max(1, int(round(axes[1] / mm)))),
        0,
        0,
        360,
        float(hu),
        -1,
    )


def _trunk(img: np.ndarray, mm: float) -> None:
    _ellipse(img, mm, (0, 0), (170, 120), -100.0)  # subcutaneous fat
    _ellipse(img, mm, (0, 0), (158, 108), 50.0)  # muscle wall
    _ellipse(img, mm, (0, 85), (22, 20), 1000.0)  # vertebral body cortex
    _ellipse(img, mm, (0, 85), (18, 16), 250.0)  # cancellous bone


def chest_slice(size: int = 256) -> tuple[np.ndarray, float]:
    """One chest slice: two lungs, heart and aorta, vertebra. Returns (HU, pixel spacing mm)."""
    img, mm = _canvas(size)
    _trunk(img, mm)
    _ellipse(img, mm, (-80, 0), (62, 90), -850.0)  # lungs
    _ellipse(img, mm, (80, 0), (62, 90), -850.0)
    _ellipse(img, mm, (15, -20), (55, 45), 150.0)  # heart (contrast-filled chambers)
    _ellipse(img, mm, (-5, 55), (14, 14), 150.0)  # descending aorta
    return img, mm


def abdomen_slice(size: int = 256) -> tuple[np.ndarray, float]:
    """One upper-abdominal slice: liver, spleen, kidneys, aorta/IVC, bowel gas. Returns (HU, spacing)."""
    img, mm = _canvas(size)
    _trunk(img, mm)
    _ellipse(img, mm, (-65, -5), (85, 85), 110.0)  # liver (portal venous phase)
    _ellipse(img, mm, (100, 20), (40, 55), 120.0)  # spleen
    _ellipse(img, mm, (-55, 55), (25, 35), 180.0)  # kidneys
    _ellipse(img, mm, (55, 55), (25, 35), 180.0)
    _ellipse(img, mm, (10, 50), (12, 12), 160.0)  # aorta
    _ellipse(img, mm, (-20, 45), (14, 12), 140.0)  # IVC
    _ellipse(img, mm, (50, -60), (25, 15), -1000.0)  # bowel gas
    return img, mm


def volume(slice_fn, n: int = 6, size: int = 256, seed: int = 0) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """``n`` noisy copies of ``slice_fn(size)`` as a ``[n, size, size]`` HU volume, and the spacing."""
    base, mm = slice_fn(size)
    rng = np.random.default_rng(seed)
    vol = base[None] + rng.normal(0.0, 15.0, (n, size, size)).astype(np.float32)
    return np.clip(vol, -1024, 3071).astype(np.float32), mm

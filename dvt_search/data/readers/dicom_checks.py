"""Checks and ordering of a DICOM series' slice headers (geometry, tilt, rescale, thickness).

Used by :func:`.dicom.read_series`. Errors (:class:`ReaderError`) and warnings name the file; they never
carry header values besides geometry numbers.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import ReaderError

log = logging.getLogger(__name__)


def floats(ds: Any, tag: str, n: int) -> np.ndarray | None:
    """The ``n`` finite numbers of a multi-valued tag as float64, or None when absent or malformed."""
    value = ds.get(tag)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.size == n and np.isfinite(arr).all() else None


def _geometry(ds: Any) -> dict[str, Any]:
    spacing, iop = floats(ds, "PixelSpacing", 2), floats(ds, "ImageOrientationPatient", 6)
    return {
        "size (rows x columns)": f"{ds.get('Rows')}x{ds.get('Columns')}",
        "PixelSpacing": None if spacing is None else tuple(round(float(v), 3) for v in spacing),
        "ImageOrientationPatient": None if iop is None else tuple(round(float(v), 3) for v in iop),
    }


def check_consistent(datasets: list[tuple[Path, Any]]) -> None:
    """Reject colour/multi-frame files and any file whose geometry differs from most of the series'."""
    for f, ds in datasets:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise ReaderError(
                f"{f}: colour image (SamplesPerPixel={ds.SamplesPerPixel}); CT slices are greyscale"
            )
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise ReaderError(f"{f}: multi-frame DICOM is not supported (one slice per file expected)")
    geometry = [_geometry(ds) for _, ds in datasets]
    for what in geometry[0]:
        values = [g[what] for g in geometry]
        common = Counter(values).most_common(1)[0][0]
        example = datasets[values.index(common)][0]
        for (f, _), v in zip(datasets, values):
            if v != common:
                raise ReaderError(
                    f"{f}: {what} {v} differs from {common} in the rest of the series (e.g. {example})"
                )
    if geometry[0]["PixelSpacing"] is None:
        raise ReaderError(f"{datasets[0][0]}: no valid PixelSpacing")


TILT_TOLERANCE_DEG = 0.5
"""Angle between the slice normal and the slice stacking direction above which a series counts as tilted."""


def order_slices(
    datasets: list[tuple[Path, Any]], folder: Path
) -> tuple[list[int], np.ndarray | None, float | None, np.ndarray | None]:
    """Slice order (inferior first), the unit normal, the median slice step along the normal and the
    stacking vector (mean position step between consecutive slices, LPS mm); None where not known."""
    iop = floats(datasets[0][1], "ImageOrientationPatient", 6)
    ipps = [floats(ds, "ImagePositionPatient", 3) for _, ds in datasets]
    if iop is not None and all(p is not None for p in ipps):
        normal = np.cross(iop[:3], iop[3:])
        normal /= np.linalg.norm(normal) or 1.0
        if normal[2] < 0:
            normal = -normal
        pos = np.array([float(p @ normal) for p in ipps])
        order = [int(i) for i in np.argsort(pos, kind="stable")]
        steps = np.diff(pos[order])
        for k in np.flatnonzero(steps < 1e-3):
            a, b = datasets[order[k]][0], datasets[order[k + 1]][0]
            raise ReaderError(f"{b}: same slice position as {a} (duplicate slice?)")
        step = float(np.median(steps)) if steps.size else None
        if step:
            for k in np.flatnonzero(np.abs(steps - step) > 0.1 * step)[:3]:
                log.warning(
                    "%s: %.3g mm from the previous slice (%s), the series' usual step is %.3g mm: "
                    "missing slices or mixed spacing?",
                    datasets[order[k + 1]][0],
                    steps[k],
                    datasets[order[k]][0].name,
                    step,
                )
        stack = None
        if len(order) > 1:
            stack = (ipps[order[-1]] - ipps[order[0]]) / (len(order) - 1)
        _check_tilt(datasets, order, normal, stack)
        return order, normal, step, stack
    if len(datasets) == 1:
        _check_tilt(datasets, [0], None, None)
        return [0], None, None, None
    numbers = [ds.get("InstanceNumber") for _, ds in datasets]
    if any(n is None for n in numbers) or len(set(map(int, numbers))) != len(numbers):
        raise ReaderError(
            f"{folder}: slices have neither ImagePositionPatient/Orientation nor unique InstanceNumbers"
        )
    log.warning(
        "%s: no ImagePositionPatient/ImageOrientationPatient; slices ordered by InstanceNumber "
        "(slice 0 may not be the most inferior)",
        folder,
    )
    return [int(i) for i in np.argsort([int(n) for n in numbers], kind="stable")], None, None, None


def _check_tilt(
    datasets: list[tuple[Path, Any]], order: list[int], normal: np.ndarray | None, stack: np.ndarray | None
) -> None:
    """Warn (naming a file) when the gantry was tilted: GantryDetectorTilt != 0, or slices stacked
    along a direction that is not the slice normal. The slices are used as acquired, not resampled."""
    first = datasets[order[0]][0]
    angle = None
    if normal is not None and stack is not None and np.linalg.norm(stack) > 0:
        cos = abs(float(stack @ normal)) / float(np.linalg.norm(stack))
        angle = float(np.degrees(np.arccos(min(1.0, cos))))
    tilts = {f: float(ds.get("GantryDetectorTilt", 0) or 0) for f, ds in datasets}
    tilted = next((f for f, t in tilts.items() if abs(t) > 1e-3), None)
    if (angle is not None and angle > TILT_TOLERANCE_DEG) or tilted is not None:
        what = []
        if tilted is not None:
            what.append(f"GantryDetectorTilt {tilts[tilted]:g} degrees")
        if angle is not None and angle > TILT_TOLERANCE_DEG:
            what.append(f"slices stacked {angle:.1f} degrees off the slice normal")
        log.warning(
            "%s: gantry tilt (%s): slices are used as acquired, not resampled to an upright grid; "
            "a NIfTI or SEG mask must lie on the same tilted grid",
            tilted or first,
            ", ".join(what),
        )


def check_rescale(datasets: list[tuple[Path, Any]], folder: Path) -> None:
    """Say what is assumed when RescaleSlope / RescaleIntercept are missing (naming a file)."""
    missing = {
        tag: [f for f, ds in datasets if ds.get(tag) in (None, "")]
        for tag in ("RescaleSlope", "RescaleIntercept")
    }
    files = missing["RescaleSlope"] or missing["RescaleIntercept"]
    if not files:
        return
    tags = [t for t, fs in missing.items() if fs]
    unsigned = any(int(ds.get("PixelRepresentation", 0) or 0) == 0 for _, ds in datasets)
    log.warning(
        "%s: no %s in %d of %d file(s) of %s; assuming %s, so stored values are taken as HU%s",
        files[0],
        "/".join(tags),
        max(len(fs) for fs in missing.values()),
        len(datasets),
        folder,
        " and ".join({"RescaleSlope": "slope 1", "RescaleIntercept": "intercept 0"}[t] for t in tags),
        " (unsigned pixels: if they hold HU+1024, every value reads 1024 too high)"
        if unsigned and "RescaleIntercept" in tags
        else "",
    )


def slice_thickness(datasets: list[tuple[Path, Any]], order: list[int]) -> float | None:
    """The most common SliceThickness (warning, naming a file, when they differ); None when absent."""
    values = [float(ds.get("SliceThickness", 0) or 0) for _, ds in datasets]
    present = [round(v, 3) for v in values if v > 0]
    if not present:
        return None
    common = Counter(present).most_common(1)[0][0]
    odd = [datasets[i][0] for i in order if values[i] > 0 and round(values[i], 3) != common]
    if odd:
        log.warning(
            "%s: SliceThickness %g mm differs from %g mm in most of the series (%d file(s) differ): "
            "mixed slice thickness; %g mm is recorded",
            odd[0],
            values[[f for f, _ in datasets].index(odd[0])],
            common,
            len(odd),
            common,
        )
    return float(common)

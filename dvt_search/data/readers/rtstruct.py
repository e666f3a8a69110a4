"""DICOM RTSTRUCT vein contours rasterized onto a CT series' slices (read with pydicom).

Each ROI (``ROINumber`` -> ``ROIName``) is a "segment" for ``--seg-segment``. Only CLOSED_PLANAR
contours are drawn (other types are skipped with a warning). A contour goes on the slice whose
SOPInstanceUID its ContourImageSequence references or, without usable UIDs, on the slice whose plane
holds its points (within a tenth of the slice step); a contour on no slice is an error naming the file.
Points (patient mm) become pixel coordinates through the slice's ImagePositionPatient, orientation and
pixel spacing; polygons are filled with the even-odd rule, so a contour inside another of the same ROI
on the same slice is a hole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ReaderError

if TYPE_CHECKING:
    from .dicom import DicomVolume

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class RtStructFile:
    """An opened RT structure set: its path, ROIs (number -> name) and referenced UIDs (hidden)."""

    path: Path
    segments: dict[int, str]
    ds: Any = field(repr=False)
    series_uid: str = field(default="", repr=False)
    sop_uids: set[str] = field(default_factory=set, repr=False)


def open_rtstruct(path: str | os.PathLike[str]) -> RtStructFile:
    """Read an RTSTRUCT file (raises :class:`ReaderError` naming it when it cannot be used)."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # corrupt files raise many types
        raise ReaderError(f"{path}: cannot read DICOM: {type(exc).__name__}: {exc}") from exc
    rois = {int(r.ROINumber): str(r.get("ROIName", "") or "") for r in ds.get("StructureSetROISequence", [])}
    if not rois or "ROIContourSequence" not in ds:
        raise ReaderError(f"{path}: RT structure set without ROIs or contours")
    series = {
        str(s.get("SeriesInstanceUID", "") or "").strip()
        for f in ds.get("ReferencedFrameOfReferenceSequence", [])
        for st in f.get("RTReferencedStudySequence", [])
        for s in st.get("RTReferencedSeriesSequence", [])
    } - {""}
    sops = {uid for _, _, uid in _contours(ds)} - {""}
    return RtStructFile(path, rois, ds, series.pop() if len(series) == 1 else "", sops)


def _contours(ds: Any) -> list[tuple[int, np.ndarray, str]]:
    """(ROI number, points [N, 3] in mm, referenced SOPInstanceUID or "") of every closed planar contour."""
    out = []
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        for c in roi.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            if kind != "CLOSED_PLANAR":
                log.warning("RTSTRUCT ROI %d: %s contour skipped (only CLOSED_PLANAR is drawn)", number, kind)
                continue
            pts = np.asarray([float(v) for v in c.ContourData], dtype=np.float64).reshape(-1, 3)
            refs = c.get("ContourImageSequence") or []
            uid = str(refs[0].get("ReferencedSOPInstanceUID", "") or "").strip() if refs else ""
            out.append((number, pts, uid))
    return out


def _slice_of(rt: RtStructFile, vol: DicomVolume, pts: np.ndarray, uid: str, k: int) -> int:
    """The volume slice a contour lies on (by referenced UID, else by its plane)."""
    if uid and uid in vol.sop_uids:
        return vol.sop_uids.index(uid)
    if vol.positions is None or vol.orientation is None:
        raise ReaderError(f"{rt.path}: the series has no slice positions to place contours by")
    iop = np.asarray(vol.orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    slice_pos = vol.positions @ normal
    step = float(np.median(np.diff(slice_pos))) if len(slice_pos) > 1 else vol.scan.slice_thickness_mm
    depth = pts @ normal
    z = int(np.argmin(np.abs(slice_pos - depth.mean())))
    if np.abs(depth - slice_pos[z]).max() > 0.1 * abs(step):
        raise ReaderError(
            f"{rt.path}: contour {k + 1} lies on no slice of the series "
            f"(nearest slice {z}: {np.abs(depth - slice_pos[z]).max():.3g} mm off its plane)"
        )
    return z


def refers_to(rt: RtStructFile, series_uid: str, vol: DicomVolume) -> bool:
    """Whether the structure set was drawn on this series (UIDs, or every contour on one of its slices)."""
    if rt.series_uid and series_uid:
        return rt.series_uid == series_uid
    own = set(vol.sop_uids) - {""}
    if rt.sop_uids and own:
        return bool(rt.sop_uids & own)
    try:
        for k, (_, pts, uid) in enumerate(_contours(rt.ds)):
            _slice_of(rt, vol, pts, uid, k)
    except ReaderError:
        return False
    return True


def rt_mask(rt: RtStructFile, vol: DicomVolume, rois: Sequence[int], where: str) -> np.ndarray:
    """The 0/1 ``uint8`` mask ``[Z, H, W]`` of the chosen ROIs' contours."""
    import cv2

    z_count, rows, cols = vol.scan.image.shape
    if vol.positions is None or vol.orientation is None:
        raise ReaderError(f"{where}: {rt.path}: the series has no slice positions to draw contours on")
    iop = np.asarray(vol.orientation, float)
    mask = np.zeros((z_count, rows, cols), np.uint8)
    per_slice: dict[tuple[int, int], np.ndarray] = {}
    drawn = 0
    for k, (number, pts, uid) in enumerate(_contours(rt.ds)):
        if number not in rois:
            continue
        drawn += 1
        z = _slice_of(rt, vol, pts, uid, k)
        offset = pts - vol.positions[z]
        col = offset @ iop[:3] / vol.scan.spacing_col_mm
        row = offset @ iop[3:] / vol.scan.spacing_row_mm
        poly = np.rint(np.stack([col, row], axis=1) * 16).astype(np.int32)  # 4 fractional bits
        layer = np.zeros((rows, cols), np.uint8)
        cv2.fillPoly(layer, [poly], 1, lineType=cv2.LINE_8, shift=4)
        key = (number, z)
        per_slice[key] = (
            per_slice.get(key, np.zeros_like(layer)) ^ layer
        )  # even-odd: inner contours are holes
    for (_, z), layer in per_slice.items():
        mask[z] |= layer
    log.info(
        "%s: mask from %s (RTSTRUCT, %d contour(s) drawn, %d slice(s) non-empty)",
        where,
        rt.path,
        drawn,
        int(mask.any((1, 2)).sum()),
    )
    return mask

"""DICOM SEG vein masks, read with highdicom and put on a CT series' slices (RTSTRUCT: :mod:`.rtstruct`).

Library choice: **highdicom** (Imaging Data Commons / MGH; frequent releases, 0.28 in 2025) implements the
Segmentation IOD for writing and reading, requires pydicom >= 3.0.1 and indexes SEG frames by their
source SOP instances. pydicom-seg (last release 0.4.1, 2022) pins ``numpy<2`` and ``jsonschema<4`` and
pulls SimpleITK, so it cannot be installed next to this project's numpy 2.

Alignment of a SEG to a series (slice order: 0 = most inferior):

1. **By referenced SOP instances** when the series' files carry SOPInstanceUIDs and the SEG's frames
   reference them (highdicom ``get_pixels_by_source_instance``); frames referencing instances outside
   the series are an error.
2. **By positions** otherwise (UIDs blanked by de-identification): every SEG frame's
   ImagePositionPatient must fall on one slice of the series (within a tenth of the slice step and of a
   pixel), with the same ImageOrientationPatient and rows/columns; a frame that fits no slice is an error.

Slices the SEG has no frame for get an empty mask. RT structure sets given the same way are rasterized by
:mod:`.rtstruct` (ROI numbers/names play the segments). Segment choice (``--seg-segment``): segment numbers
or labels, comma-separated (their union is the mask); by default the only segment, or the one segment
whose label or property type mentions a vein. BINARY, FRACTIONAL (>= half the maximum) and LABELMAP
segmentations are read.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import ReaderError
from .rtstruct import RtStructFile

if TYPE_CHECKING:
    from .dicom import DicomVolume

log = logging.getLogger(__name__)

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")  # SEG, label map SEG


@dataclass
class SegFile:
    """An opened DICOM SEG: its path, segments (number -> label) and the UIDs it references (hidden)."""

    path: Path
    segments: dict[int, str]
    seg: Any = field(repr=False)
    series_uid: str = field(default="", repr=False)
    sop_uids: set[str] = field(default_factory=set, repr=False)


_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _scrub(exc: BaseException) -> str:
    """``Type: message`` of a library error with any UID replaced (messages never carry header IDs)."""
    return f"{type(exc).__name__}: {_UID.sub('<UID>', str(exc))}"


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom's own log lines may quote UIDs: keep them to errors while it reads."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sop_class(path: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM or unreadable
        return ""
    return str(ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", ""))


def is_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM file of a (label map) Segmentation Storage SOP class (header peek)."""
    return _sop_class(path) in SEG_SOP_CLASSES


def is_mask_object(path: Path) -> bool:
    """Whether ``path`` is a DICOM SEG or RTSTRUCT file."""
    from .rtstruct import RTSTRUCT_SOP_CLASS

    return _sop_class(path) in (*SEG_SOP_CLASSES, RTSTRUCT_SOP_CLASS)


def open_mask_object(path: str | os.PathLike[str]) -> SegFile | RtStructFile:
    """Open a DICOM SEG (highdicom) or RTSTRUCT (pydicom) file."""
    from .rtstruct import RTSTRUCT_SOP_CLASS, open_rtstruct

    return open_rtstruct(path) if _sop_class(Path(path)) == RTSTRUCT_SOP_CLASS else open_seg(path)


def open_seg(path: str | os.PathLike[str]) -> SegFile:
    """Read a DICOM SEG file (raises :class:`ReaderError` naming it when it is not a readable SEG)."""
    import highdicom as hd

    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path}: file not found")
    try:
        with _quiet_highdicom():
            seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise many types for bad files
        raise ReaderError(f"{path}: not a readable DICOM SEG: {_scrub(exc)}") from exc
    segments = {}
    for n in seg.segment_numbers:
        segments[int(n)] = str(seg.get_segment_description(n).SegmentLabel or "")
    refs = seg.get("ReferencedSeriesSequence") or []
    series_uid = str(refs[0].get("SeriesInstanceUID", "") or "").strip() if len(refs) == 1 else ""
    sops = {str(uid).strip() for _, _, uid in seg.get_source_image_uids()} - {""}
    return SegFile(path, segments, seg, series_uid, sops)


def find_segs(paths: Sequence[str | os.PathLike[str]]) -> list[SegFile | RtStructFile]:
    """The DICOM SEG / RTSTRUCT files among ``paths`` (folders searched recursively; a file must be one)."""
    out = []
    for p in map(Path, paths):
        if p.is_file():
            if not is_mask_object(p):
                raise ReaderError(f"{p}: not a DICOM SEG or RTSTRUCT file")
            out.append(open_mask_object(p))
        elif p.is_dir():
            out.extend(open_mask_object(f) for f in sorted(p.rglob("*")) if f.is_file() and is_mask_object(f))
        else:
            raise ReaderError(f"{p}: no such file or folder")
    if paths and not out:
        raise ReaderError(f"no DICOM SEG or RTSTRUCT file in {', '.join(map(str, paths))}")
    return out


def choose_segments(seg: SegFile | RtStructFile, spec: str | None) -> list[int]:
    """The segment numbers ``spec`` names (numbers or labels, comma-separated), or the default vein segment."""
    listing = ", ".join(f"{n} {label!r}" for n, label in sorted(seg.segments.items()))
    if spec:
        chosen = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            hits = [n for n, label in seg.segments.items() if part.isdigit() and n == int(part)] or [
                n for n, label in seg.segments.items() if label.strip().lower() == part.lower()
            ]
            if not hits:
                raise ReaderError(f"{seg.path}: no segment {part!r} (segments: {listing})")
            chosen.extend(h for h in hits if h not in chosen)
        return chosen
    if len(seg.segments) == 1:
        return list(seg.segments)
    veins = [n for n in seg.segments if _mentions_vein(seg, n)]
    if len(veins) == 1:
        log.info("%s: using segment %d %r as the vein mask", seg.path, veins[0], seg.segments[veins[0]])
        return veins
    raise ReaderError(
        f"{seg.path}: {len(seg.segments)} segments ({listing}); choose the vein mask with --seg-segment"
    )


def _mentions_vein(seg: SegFile | RtStructFile, number: int) -> bool:
    texts = [seg.segments[number]]
    if isinstance(seg, SegFile):
        desc = seg.seg.get_segment_description(number)
        texts += [
            str(getattr(i, "CodeMeaning", "")) for i in desc.get("SegmentedPropertyTypeCodeSequence", [])
        ]
    return any("vein" in t.lower() or "venous" in t.lower() for t in texts)


def refers_to(seg: SegFile | RtStructFile, series_uid: str, vol: DicomVolume) -> bool:
    """Whether the SEG was drawn on this series: same series UID, shared SOP instances or, without
    UIDs on either side, frames that all fall on the series' slices."""
    if isinstance(seg, RtStructFile):
        from . import rtstruct

        return rtstruct.refers_to(seg, series_uid, vol)
    if seg.series_uid and series_uid:
        return seg.series_uid == series_uid
    own = set(vol.sop_uids) - {""}
    if seg.sop_uids and own:
        return bool(seg.sop_uids & own)
    try:
        _frame_slices(seg, vol)
    except ReaderError:
        return False
    return True


def seg_mask(
    seg: SegFile | RtStructFile, vol: DicomVolume, segments: Sequence[int], where: str
) -> np.ndarray:
    """The 0/1 ``uint8`` mask ``[Z, H, W]`` of ``segments`` on the volume's slices (see the module doc)."""
    if isinstance(seg, RtStructFile):
        from .rtstruct import rt_mask

        return rt_mask(seg, vol, segments, where)
    shape = vol.scan.image.shape
    own = list(vol.sop_uids)
    if seg.sop_uids and own and all(own):
        outside = seg.sop_uids - set(own)
        if outside:
            raise ReaderError(
                f"{where}: {seg.path} references {len(outside)} image(s) that are not in the series"
            )
        try:
            with _quiet_highdicom():
                arr = seg.seg.get_pixels_by_source_instance(
                    own,
                    segment_numbers=list(segments),
                    assert_missing_frames_are_empty=True,
                    ignore_spatial_locations=True,
                )
        except Exception as exc:  # highdicom raises ValueError/RuntimeError/KeyError on odd SEGs
            raise ReaderError(f"{where}: cannot read {seg.path}: {_scrub(exc)}") from exc
        mask = (np.asarray(arr) >= 0.5).any(axis=-1)
        how = "referenced SOP instances"
    else:
        mask = np.zeros(shape, bool)
        for frame, z in _frame_slices(seg, vol).items():
            hit = _frame_pixels(seg, frame, segments)
            if hit is not None:
                mask[z] |= hit
        how = "slice positions (no usable UIDs)"
    if mask.shape != shape:
        raise ReaderError(f"{where}: {seg.path} gives a mask of shape {mask.shape}, the series {shape}")
    log.info(
        "%s: mask from %s, aligned by %s (%d slice(s) non-empty)",
        where,
        seg.path,
        how,
        mask.any((1, 2)).sum(),
    )
    return mask.astype(np.uint8)


def _item(seg: Any, frame: int, sequence: str) -> Any:
    """The per-frame functional group item ``sequence`` of ``frame`` (0-based), else the shared one."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    shared = seg.get("SharedFunctionalGroupsSequence")
    for item in (per_frame[frame] if per_frame else None, shared[0] if shared else None):
        if item is not None and sequence in item and len(item[sequence].value):
            return item[sequence].value[0]
    return None


def _frame_slices(seg: SegFile, vol: DicomVolume) -> dict[int, int]:
    """SEG frame index (0-based) -> volume slice, matched by position; raises naming the first misfit."""
    ds = seg.seg
    if vol.positions is None or vol.orientation is None:
        raise ReaderError(f"{seg.path}: the series has no slice positions to align the SEG by")
    z, rows, cols = vol.scan.image.shape
    if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
        raise ReaderError(f"{seg.path}: frames are {ds.Rows}x{ds.Columns}, the series' slices {rows}x{cols}")
    iop = np.asarray(vol.orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    slice_pos = vol.positions @ normal
    step = float(np.median(np.diff(slice_pos))) if z > 1 else vol.scan.slice_thickness_mm
    pixel = min(vol.scan.spacing_row_mm, vol.scan.spacing_col_mm)
    out = {}
    for f in range(int(ds.get("NumberOfFrames", 1) or 1)):
        orient, position = _item(ds, f, "PlaneOrientationSequence"), _item(ds, f, "PlanePositionSequence")
        if position is None:
            raise ReaderError(f"{seg.path}: frame {f + 1} has no ImagePositionPatient")
        if orient is not None and not np.allclose(
            [float(v) for v in orient.ImageOrientationPatient], iop, atol=1e-3
        ):
            raise ReaderError(f"{seg.path}: frame {f + 1} is not oriented like the series' slices")
        ipp = np.asarray([float(v) for v in position.ImagePositionPatient])
        k = int(np.argmin(np.abs(slice_pos - ipp @ normal)))
        offset = ipp - vol.positions[k]
        along = abs(float(offset @ normal))
        across = float(np.linalg.norm(offset - (offset @ normal) * normal))
        if along > 0.1 * abs(step) or across > 0.1 * pixel:
            raise ReaderError(
                f"{seg.path}: frame {f + 1} lies on no slice of the series "
                f"(nearest slice {k}: {along:.3g} mm off the plane, {across:.3g} mm shifted in-plane)"
            )
        out[f] = k
    return out


def _frame_pixels(seg: SegFile, frame: int, segments: Sequence[int]) -> np.ndarray | None:
    """The frame's 0/1 pixels for the chosen segments (None when the frame holds another segment)."""
    ds = seg.seg
    stored = np.asarray(ds.get_stored_frame(frame + 1))
    kind = str(ds.SegmentationType).upper()
    if kind == "LABELMAP":
        return np.isin(stored, list(segments))
    ident = _item(ds, frame, "SegmentIdentificationSequence")
    number = int(ident.ReferencedSegmentNumber) if ident is not None else next(iter(seg.segments))
    if number not in segments:
        return None
    if kind == "FRACTIONAL":
        return stored >= float(ds.get("MaximumFractionalValue", 255)) / 2
    return stored > 0

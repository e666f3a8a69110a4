"""Finding CT image series among the files of a folder (shared by ``data ingest dicom`` and ``predict``).

Every file under the roots is opened header-only. Files that are not DICOM are ignored (debug log); DICOM
objects that are not usable axial CT slices are skipped with a one-line reason each (info log; after ten
of one kind, a count), naming the file by its path relative to the root it was found under (never a
header value):

* non-image objects: structured reports (dose reports among them), DICOM SEG and RT structure sets
  (read with ``--seg``), DICOMDIR indexes, presentation states, anything without pixel rows;
* secondary captures (SOP class Secondary Capture: dose screens, screenshots);
* localizers / scouts (``LOCALIZER`` in ImageType);
* images that are not axial: the slice normal (ImageOrientationPatient) more than
  :data:`MAX_AXIAL_ANGLE_DEG` degrees from the patient's head-foot axis (coronal/sagittal reformats,
  most scouts; a gantry-tilted axial series stays);
* multi-frame images (enhanced CT): one slice per file is expected.

The rest is grouped into series by SeriesInstanceUID. Files whose SeriesInstanceUID is blank or missing
(de-identification tools often blank Study/Series/SOP Instance UIDs) are grouped by folder and geometry
instead: SeriesNumber, Modality, Rows/Columns, PixelSpacing and ImageOrientationPatient (hence one slice
normal), with a warning per folder. Each series gets a **series key** shown to users and accepted by
``--series`` and the labels CSV: the folder relative to its root (``.`` for the root itself), plus
``:k`` (1-based) when that folder holds several series.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import ReaderError

log = logging.getLogger(__name__)

MAX_AXIAL_ANGLE_DEG = 45.0
"""Largest angle between the slice normal and the head-foot axis for an image to count as axial."""

_SKIP_LINES_PER_REASON = 10  # further skips of the same kind are counted, not listed

_NON_IMAGE_MODALITIES = {"SR", "KO", "PR", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "AU"}


@dataclass
class DicomSeries:
    """The files of one series, in discovery order.

    Attributes:
        uid: SeriesInstanceUID; ``""`` when the series was grouped by folder + geometry (hidden from repr).
        files: the slice files.
        key: the series key shown to users (relative folder, ``:k`` when the folder holds several).
        modality: the Modality of the first file (``""`` when absent).
        group: original key identifying the series for pseudonymization: the UID, or the relative
            folder + geometry when there is none (hidden from repr, never printed).
    """

    uid: str = field(repr=False)
    files: list[Path]
    key: str = ""
    modality: str = ""
    group: str = field(default="", repr=False)

    @property
    def folder(self) -> Path:
        """The folder holding the files (their common parent)."""
        return Path(os.path.commonpath([f.parent for f in self.files]))

    @property
    def scan_key(self) -> str:
        """Original key of the series (UID or folder + geometry), for pseudonymization only."""
        return self.uid or self.group

    def describe(self) -> str:
        """``key: CT, 40 files`` (no header values besides the modality)."""
        return f"{self.key}: {self.modality or 'unknown modality'}, {len(self.files)} file(s)"


def _sop_class(ds: Any) -> str:
    sop = ds.get("SOPClassUID") or getattr(ds.get("file_meta", None) or {}, "get", lambda *_: "")(
        "MediaStorageSOPClassUID", ""
    )
    return str(sop or "")


def _slice_normal(ds: Any) -> np.ndarray | None:
    try:
        iop = np.asarray([float(v) for v in ds.get("ImageOrientationPatient")], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if iop.size != 6 or not np.isfinite(iop).all():
        return None
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else None


def skip_reason(ds: Any) -> str | None:
    """Why a DICOM dataset (header) is not an axial CT slice for this project, or None to keep it."""
    from pydicom.uid import UID

    sop = _sop_class(ds)
    name = UID(sop).name if sop else "unknown SOP class"
    modality = str(ds.get("Modality", "") or "").upper()
    if sop == "1.2.840.10008.1.3.10":
        return "DICOMDIR (a media index, not an image)"
    if sop in ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7") or modality == "SEG":
        return "DICOM SEG segmentation (give it with --seg or in the labels CSV's mask column)"
    if sop == "1.2.840.10008.5.1.4.1.1.481.3" or modality == "RTSTRUCT":
        return "RT structure set (give it with --seg or in the labels CSV's mask column)"
    if sop.startswith("1.2.840.10008.5.1.4.1.1.88.") or modality == "SR":
        return f"structured report ({name}; e.g. a dose report), not an image"
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return f"secondary capture ({name}: e.g. a dose screen or screenshot), not a CT slice"
    if modality in _NON_IMAGE_MODALITIES or "Rows" not in ds:
        return f"non-image object ({name}{', Modality ' + modality if modality else ''})"
    image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer/scout image (ImageType LOCALIZER)"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"multi-frame image ({name}): not supported, one slice per file expected"
    normal = _slice_normal(ds)
    if normal is not None:
        angle = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
        if angle > MAX_AXIAL_ANGLE_DEG:
            plane = "sagittal" if abs(normal[0]) > 0.9 else "coronal" if abs(normal[1]) > 0.9 else "oblique"
            return f"not axial (a {plane} image: slice normal {angle:.0f} degrees from the head-foot axis)"
    return None


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to the input ``root`` (its name when the root is the file itself)."""
    if root.is_file():
        return path.name
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return path.name


def _geometry_key(ds: Any) -> tuple[Any, ...]:
    def rounded(tag: str) -> tuple[float, ...] | None:
        try:
            return tuple(round(float(v), 3) for v in ds.get(tag))
        except (TypeError, ValueError):
            return None

    number = ds.get("SeriesNumber")
    return (
        str(number) if number not in (None, "") else "",
        str(ds.get("Modality", "") or ""),
        ds.get("Rows"),
        ds.get("Columns"),
        rounded("PixelSpacing"),
        rounded("ImageOrientationPatient"),
    )


class _SkipLog:
    """One line per skipped file, collapsed after a few of the same reason."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def __call__(self, where: str, reason: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= _SKIP_LINES_PER_REASON:
            log.info("skipped %s: %s", where, reason)

    def close(self) -> None:
        for reason, n in self.counts.items():
            if n > _SKIP_LINES_PER_REASON:
                log.info("skipped %d more file(s): %s", n - _SKIP_LINES_PER_REASON, reason)


def find_series(roots: Path | str | Sequence[Path | str]) -> list[DicomSeries]:
    """All axial image series under ``roots`` (folders walked recursively, or files), ordered by folder.

    Raises:
        ReaderError: a root does not exist.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    by_uid: dict[str, list[Path]] = defaultdict(list)
    by_geometry: dict[tuple[Any, ...], list[Path]] = defaultdict(list)
    root_of: dict[Path, Path] = {}
    modality: dict[Path, str] = {}
    skipped = _SkipLog()
    for root in map(Path, roots):
        if not root.exists():
            raise ReaderError(f"{root}: no such file or folder")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, KeyError):
                log.debug("%s: not a DICOM file, ignored", _rel(f, root))
                continue
            reason = skip_reason(ds)
            if reason is not None:
                skipped(_rel(f, root), reason)
                continue
            root_of[f], modality[f] = root, str(ds.get("Modality", "") or "")
            uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
            if uid:
                by_uid[uid].append(f)
            else:
                by_geometry[(f.parent, *_geometry_key(ds))].append(f)
    skipped.close()
    series = [DicomSeries(uid, files) for uid, files in by_uid.items()]
    no_uid: dict[str, list[int]] = defaultdict(list)  # folder (for messages) -> file count of each group
    for gkey, files in by_geometry.items():
        folder, root = gkey[0], root_of[files[0]]
        rel = "." if folder == root or root.is_file() else _rel(folder, root)
        no_uid[str(folder) if rel == "." else rel].append(len(files))
        series.append(DicomSeries("", files, group="nouid\0" + rel + "\0" + repr(gkey[1:])))
    if no_uid:
        folders = list(no_uid)
        log.warning(
            "%d image file(s) without SeriesInstanceUID (de-identified?) in %s; grouped by folder and geometry "
            "(orientation, pixel spacing, size, series number) into %d series",
            sum(sum(c) for c in no_uid.values()),
            ", ".join(folders[:5]) + (f" and {len(folders) - 5} more folder(s)" if len(folders) > 5 else ""),
            sum(len(c) for c in no_uid.values()),
        )
    series.sort(key=lambda s: (str(s.folder), str(sorted(s.files)[0])))
    _name(series, root_of, modality)
    return series


def _name(series: list[DicomSeries], root_of: dict[Path, Path], modality: dict[Path, str]) -> None:
    """Give each series its key (relative folder, ``:k`` when the folder holds several) and modality."""
    per_folder: dict[Path, list[DicomSeries]] = defaultdict(list)
    for s in series:
        per_folder[s.folder].append(s)
    for folder, group in per_folder.items():
        root = root_of[group[0].files[0]]
        rel = "." if folder == root or root.is_file() else _rel(folder, root)
        for k, s in enumerate(group, start=1):
            s.key = rel if len(group) == 1 else f"{rel}:{k}"
            s.modality = modality[s.files[0]]


def choose_series(series: list[DicomSeries], choice: str | None, where: str) -> DicomSeries:
    """The series named by ``choice`` (1-based index or series key), or the only / largest axial CT one.

    With several series and no choice, the CT series with the most files wins (the first on a tie) and
    a warning lists them all.

    Raises:
        ReaderError: no series, or ``choice`` names none of them.
    """
    if not series:
        raise ReaderError(f"{where}: expected exactly one DICOM image series, found 0")
    listing = "; ".join(f"[{i}] {s.describe()}" for i, s in enumerate(series, start=1))
    if choice is not None:
        text = choice.strip()
        if text.isdigit() and 1 <= int(text) <= len(series):
            return series[int(text) - 1]
        for s in series:
            if s.key == text:
                return s
        raise ReaderError(f"{where}: --series {choice!r} is neither an index nor a series key of: {listing}")
    if len(series) == 1:
        return series[0]
    ct = [s for s in series if s.modality.upper() == "CT"] or series
    best = max(ct, key=lambda s: len(s.files))  # max keeps the first of equals
    log.warning(
        "%s: %d image series found (%s); using [%d] %s, the largest axial %s series (choose with --series)",
        where,
        len(series),
        listing,
        series.index(best) + 1,
        best.key,
        "CT" if best.modality.upper() == "CT" else "image",
    )
    return best

"""DICOM CT series: discovery, slice ordering, HU conversion, masks and labels.

Series are found by walking folders (:mod:`.discovery`): Part-10 files (with the ``DICM`` header) are
grouped by SeriesInstanceUID or, where that UID is blank (de-identified data), by folder + geometry
(orientation, pixel spacing, size, series number), with a warning. Scouts/localizers, dose reports and
other structured reports, secondary captures, SEG/RTSTRUCT and other non-image objects, multi-frame and
non-axial images are skipped with a one-line reason naming the file (path relative to the root). Each
series has a **series key**: its folder relative to the root, plus ``:k`` when the folder holds several.
Compressed transfer syntaxes decode through pydicom's plugins (JPEG baseline/extended/lossless via
pylibjpeg-libjpeg, JPEG 2000 via pylibjpeg-openjpeg, JPEG-LS via pyjpegls, RLE). Pixels become HU with
RescaleSlope/RescaleIntercept (missing: slope 1 / intercept 0 assumed, with a warning naming a file).
Slices are ordered by ImagePositionPatient projected on the slice normal (cross product of the two
ImageOrientationPatient directions, signed to point superior), so slice 0 is the most inferior; without
position/orientation the order falls back to InstanceNumber, with a warning. A series whose files differ
in rows, columns, pixel spacing or orientation, hold colour images, or share a position is rejected
naming the file; gantry tilt (GantryDetectorTilt, or slices stacked off the slice normal), mixed slice
thickness and uneven slice spacing are warnings naming the file (slices are kept as acquired, not
resampled). In-plane orientation is kept as stored. Header values (names, ids, dates, UIDs) are never
logged or written; the PatientID and UIDs are only handed to ingest for pseudonymization.

Labels CSV for ``dvt-search data ingest dicom`` (paths relative to the CSV's folder)::

    series,slice,label,anatomy,mask,patient
    1.2.840.113619.2.55.3.1234,0-40,0,femoral,masks/s1.nii.gz,
    1.2.840.113619.2.55.3.1234,41-60,1,,,
    patient07/ct_venous,all,0,iliac,seg/p07_veins.dcm,
    patient08:2,all,0,,,

* ``series`` (required): the SeriesInstanceUID, the series key (``folder:k`` for a folder holding
  several series), or the folder holding the series' files (relative to the ingest root, or absolute)
  when that folder holds exactly one series.
* ``slice`` (required): ``k``, an inclusive range ``a-b`` or ``all``, counted after ordering (0 = most
  inferior). Slices not covered are left out of the manifest (their pixels are still stored).
* ``label`` (required): ``0`` / ``1`` (clot in the slice). ``anatomy``: ``femoral`` / ``iliac`` (empty:
  ``--anatomy``).
* ``mask``: vein mask for the series: a DICOM SEG file (aligned by referenced SOP instances, or by slice
  positions when UIDs are blank; ``--seg-segment`` picks the segment) or RTSTRUCT (contours filled), NIfTI (reoriented onto the
  series' voxel grid from its affine, which must match) or ``.npy`` ``[Z, H, W]`` already in the ingest
  order. Give it on one row of the series (or the same path on several). Without one, the SEG among
  ``--seg`` drawn on the series is used; else ``--allow-missing-masks`` writes an all-zero mask;
  otherwise the series is an error.
* ``patient``: optional original patient key overriding the header PatientID (pseudonymized the same way).

Without UIDs, the study of a series is its folder (minus ``:k``), for the pseudonymized study id.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from . import (
    LabeledScan,
    ReaderError,
    Scan,
    TableRow,
    parse_anatomy,
    parse_label,
    parse_slices,
    read_mask_volume,
    read_table,
)
from .discovery import DicomSeries, find_series

__all__ = ["DicomSeries", "DicomVolume", "find_series", "iter_scans", "read_series"]

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("series", "slice", "label", "anatomy", "mask", "patient")


@dataclass
class DicomVolume:
    """A read series: the scan, its voxel-to-RAS ``affine`` (None when ordered by InstanceNumber) and keys.

    ``sop_uids`` (SOPInstanceUID per slice, ``""`` where blank) and ``positions`` (ImagePositionPatient
    per slice, LPS mm, None without positions) follow the volume's slice order; they align DICOM SEG masks.
    """

    scan: Scan
    affine: np.ndarray | None
    spacing: tuple[float, float, float]
    study_uid: str = field(repr=False)
    patient_id: str = field(repr=False)
    sop_uids: list[str] = field(default_factory=list, repr=False)
    positions: np.ndarray | None = field(default=None, repr=False)
    orientation: np.ndarray | None = field(default=None, repr=False)


def _floats(ds: Any, tag: str, n: int) -> np.ndarray | None:
    value = ds.get(tag)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.size == n and np.isfinite(arr).all() else None


def _geometry(ds: Any) -> dict[str, Any]:
    spacing, iop = _floats(ds, "PixelSpacing", 2), _floats(ds, "ImageOrientationPatient", 6)
    return {
        "size (rows x columns)": f"{ds.get('Rows')}x{ds.get('Columns')}",
        "PixelSpacing": None if spacing is None else tuple(round(float(v), 3) for v in spacing),
        "ImageOrientationPatient": None if iop is None else tuple(round(float(v), 3) for v in iop),
    }


def _check_consistent(datasets: list[tuple[Path, Any]]) -> None:
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


def _order(
    datasets: list[tuple[Path, Any]], folder: Path
) -> tuple[list[int], np.ndarray | None, float | None, np.ndarray | None]:
    """Slice order (inferior first), the unit normal, the median slice step along the normal and the
    stacking vector (mean position step between consecutive slices, LPS mm); None where not known."""
    iop = _floats(datasets[0][1], "ImageOrientationPatient", 6)
    ipps = [_floats(ds, "ImagePositionPatient", 3) for _, ds in datasets]
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


def _rescale(datasets: list[tuple[Path, Any]], folder: Path) -> None:
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


def _thickness(datasets: list[tuple[Path, Any]], order: list[int]) -> float | None:
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


def _one_value(datasets: list[tuple[Path, Any]], tag: str, folder: Path) -> str:
    values = {str(ds.get(tag, "") or "").strip() for _, ds in datasets}
    if len(values) > 1:
        raise ReaderError(f"{folder}: files of one series carry different {tag} values")
    return values.pop()


def read_series(series: DicomSeries) -> DicomVolume:
    """Read, check and order the series; pixels in HU (float32), slice 0 the most inferior."""
    import pydicom

    datasets = []
    for f in series.files:
        try:
            datasets.append((f, pydicom.dcmread(f)))
        except Exception as exc:  # corrupt files raise many types
            raise ReaderError(f"{f}: cannot read DICOM: {type(exc).__name__}: {exc}") from exc
    _check_consistent(datasets)
    try:
        order, normal, step, stack = _order(datasets, series.folder)
    except ReaderError as exc:
        if series.uid or "same slice position" not in str(exc):
            raise
        raise ReaderError(
            f"{exc}; these files have no SeriesInstanceUID and were grouped by folder and geometry: "
            "two series with the same geometry mixed? Put each series in its own folder"
        ) from exc
    _rescale(datasets, series.folder)
    ref = datasets[order[0]][1]
    if str(ref.get("Modality", "")) != "CT":
        log.warning(
            "%s: modality is %s, not CT; values may not be HU", series.folder, ref.get("Modality", "unknown")
        )
    vol = np.empty((len(order), int(ref.Rows), int(ref.Columns)), dtype=np.float32)
    for z, i in enumerate(order):
        f, ds = datasets[i]
        try:
            vol[z] = io.dicom_to_hu(ds.pixel_array, ds)
        except Exception as exc:  # decoder plugins raise many types
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = getattr(syntax, "name", "unknown transfer syntax")
            raise ReaderError(f"{f}: cannot decode pixel data ({name}): {type(exc).__name__}: {exc}") from exc
    ps = _floats(ref, "PixelSpacing", 2)
    thickness = _thickness(datasets, order) or step
    if not thickness or thickness <= 0:
        raise ReaderError(f"{datasets[order[0]][0]}: no SliceThickness and the slice spacing is unknown")
    affine = positions = iop = None
    if normal is not None:
        iop = _floats(ref, "ImageOrientationPatient", 6)
        positions = np.stack([_floats(datasets[i][1], "ImagePositionPatient", 3) for i in order])
        axis0 = normal * (step or thickness)
        if stack is not None and step:
            unit = stack / np.linalg.norm(stack)
            if abs(float(unit @ normal)) < np.cos(np.radians(TILT_TOLERANCE_DEG)):  # tilted: shear along z
                axis0 = unit * step / float(unit @ normal)
        affine = np.eye(4)
        affine[:3, 0] = axis0
        affine[:3, 1] = iop[3:] * ps[0]
        affine[:3, 2] = iop[:3] * ps[1]
        affine[:3, 3] = positions[0]
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS, as NIfTI affines are
    scan = Scan(vol, None, float(ps[0]), float(ps[1]), float(thickness), "dicom", str(series.folder))
    study = _one_value(datasets, "StudyInstanceUID", series.folder)
    patient = _one_value(datasets, "PatientID", series.folder)
    sops = [str(datasets[i][1].get("SOPInstanceUID", "") or "").strip() for i in order]
    return DicomVolume(
        scan,
        affine,
        (float(step or thickness), float(ps[0]), float(ps[1])),
        study,
        patient,
        sops,
        positions,
        iop,
    )


def _match(
    series: list[DicomSeries], roots: list[Path], csv_path: Path, rows: list[TableRow]
) -> dict[int, list[TableRow]]:
    """Label rows grouped by the index of the series they name."""
    by_uid = {s.uid: k for k, s in enumerate(series) if s.uid}
    by_key: dict[str, list[int]] = defaultdict(list)
    by_folder: dict[Path, list[int]] = defaultdict(list)
    for k, s in enumerate(series):
        by_folder[s.folder.resolve()].append(k)
        by_key[s.key].append(k)
    out: dict[int, list[TableRow]] = defaultdict(list)
    for row in rows:
        key = row.get("series")
        if key in by_uid:
            out[by_uid[key]].append(row)
            continue
        if ":" in key and len(by_key.get(key, [])) == 1:  # a series key of a folder holding several
            out[by_key[key][0]].append(row)
            continue
        p = Path(key).expanduser()
        hits = {
            k
            for c in ([p] if p.is_absolute() else [r / p for r in roots])
            for k in by_folder.get(c.resolve(), [])
        }
        if len(hits) > 1:
            raise ReaderError(
                f"{row.where(csv_path, 'series')}: folder holds {len(hits)} series; name one by its series key "
                f"({', '.join(series[k].key for k in sorted(hits))}) or SeriesInstanceUID"
            )
        if not hits:
            raise ReaderError(
                f"{row.where(csv_path, 'series')}: no DICOM series with that UID, series key or folder under "
                "the ingest root"
            )
        out[hits.pop()].append(row)
    return out


def iter_scans(
    roots: Path | str | Sequence[Path | str],
    labels_csv: Path | str,
    *,
    anatomy: str,
    allow_missing_masks: bool = False,
    seg: Sequence[Path | str] = (),
    seg_segment: str | None = None,
) -> Iterator[LabeledScan]:
    """Yield every labelled series as a :class:`LabeledScan` (one series in memory at a time).

    ``seg``: DICOM SEG files or folders; each series without a ``mask`` cell takes its mask from the SEG
    drawn on it (:mod:`.seg`), ``seg_segment`` naming the vein segment(s).
    """
    from .seg import find_segs

    root_list = [Path(r) for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
    csv_path = Path(labels_csv)
    rows = read_table(csv_path, ("series", "slice", "label"), LABEL_COLUMNS)
    segs = find_segs(list(seg)) if seg else []
    series = find_series(root_list)
    if not series:
        raise ReaderError(f"no DICOM image series under {', '.join(map(str, root_list))}")
    matched = _match(series, [r.resolve() for r in root_list], csv_path, rows)
    skipped = [s.key for k, s in enumerate(series) if k not in matched]
    if skipped:
        log.warning("%d series have no labels and are skipped: %s", len(skipped), ", ".join(skipped[:10]))
    used: set[Path] = set()
    for k in sorted(matched):
        yield _labeled(series[k], matched[k], csv_path, anatomy, allow_missing_masks, segs, seg_segment, used)
    unused = [str(s.path) for s in segs if s.path not in used]
    if unused:
        log.warning("%d SEG file(s) fit none of the labelled series: %s", len(unused), ", ".join(unused[:10]))


def _seg_for(series: DicomSeries, vol: DicomVolume, segs: list[Any], where: str) -> Any | None:
    """The one SEG of ``segs`` drawn on this series (None when none is; an error when several are)."""
    from .seg import refers_to

    hits = [s for s in segs if refers_to(s, series.uid, vol)]
    if len(hits) > 1:
        raise ReaderError(
            f"{where}: {len(hits)} SEG files fit this series ({', '.join(str(h.path) for h in hits)}); "
            "name one in the labels CSV's mask column"
        )
    return hits[0] if hits else None


def _labeled(
    series: DicomSeries,
    rows: list[TableRow],
    csv_path: Path,
    anatomy: str,
    allow_missing: bool,
    segs: Sequence[Any] = (),
    seg_segment: str | None = None,
    used: set[Path] | None = None,
) -> LabeledScan:
    from .seg import choose_segments, is_mask_object, open_mask_object, seg_mask

    vol = read_series(series)
    n = vol.scan.image.shape[0]
    labels: dict[int, int] = {}
    sites: dict[int, str] = {}
    for row in rows:
        label = parse_label(row.get("label"), row.where(csv_path, "label"))
        site = parse_anatomy(row.get("anatomy"), anatomy, row.where(csv_path, "anatomy"))
        for z in parse_slices(row.get("slice"), n, row.where(csv_path, "slice")):
            if labels.setdefault(z, label) != label or sites.setdefault(z, site) != site:
                raise ReaderError(
                    f"{row.where(csv_path)}: slice {z} of {series.folder} labelled twice, differently"
                )
    if len(labels) < n:
        log.warning(
            "%s: %d of %d slices have no label and are left out of the manifest",
            series.folder,
            n - len(labels),
            n,
        )
    masks = {row.get("mask") for row in rows} - {""}
    patients = {row.get("patient") for row in rows} - {""}
    if len(masks) > 1 or len(patients) > 1:
        raise ReaderError(f"{csv_path}: rows for {series.folder} give different mask or patient values")
    where = f"{csv_path} mask for {series.folder}"
    if masks:
        text = masks.pop()
        path = Path(text).expanduser() if Path(text).is_absolute() else csv_path.parent / text
        if path.is_file() and not path.name.lower().endswith((".npy", ".nii", ".nii.gz")):
            if not is_mask_object(path):
                raise ReaderError(f"{where}: {path} is not a DICOM SEG/RTSTRUCT, .npy or .nii[.gz] mask")
            found = open_mask_object(path)
            vol.scan.mask = seg_mask(found, vol, choose_segments(found, seg_segment), where)
        else:
            vol.scan.mask = read_mask_volume(path, vol.scan.image.shape, vol.affine, vol.spacing, where)
    elif (found := _seg_for(series, vol, list(segs), where)) is not None:
        vol.scan.mask = seg_mask(found, vol, choose_segments(found, seg_segment), where)
        if used is not None:
            used.add(found.path)
    elif allow_missing:
        log.warning(
            "%s: no mask given; writing an all-zero mask (its patch arrays will be all 0)", series.folder
        )
    else:
        raise ReaderError(
            f"{csv_path}: no mask for series in {series.folder} (add a mask column, pass --seg or "
            "--allow-missing-masks)"
        )
    patient = patients.pop() if patients else vol.patient_id
    if not patient:
        raise ReaderError(f"{series.folder}: no PatientID in the files; add a patient column to {csv_path}")
    study = vol.study_uid or series.uid or "folder\0" + series.key.rsplit(":", 1)[0]  # no UIDs: the folder
    return LabeledScan(vol.scan, patient, study, series.scan_key, labels, sites)

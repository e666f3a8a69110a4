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
from collections import defaultdict
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
    read_table,
)
from .dicom_checks import (
    TILT_TOLERANCE_DEG,
    check_consistent,
    check_rescale,
    floats,
    order_slices,
    slice_thickness,
)
from .discovery import DicomSeries, find_series
from .nifti import read_mask_volume

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
    check_consistent(datasets)
    try:
        order, normal, step, stack = order_slices(datasets, series.folder)
    except ReaderError as exc:
        if series.uid or "same slice position" not in str(exc):
            raise
        raise ReaderError(
            f"{exc}; these files have no SeriesInstanceUID and were grouped by folder and geometry: "
            "two series with the same geometry mixed? Put each series in its own folder"
        ) from exc
    check_rescale(datasets, series.folder)
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
    ps = floats(ref, "PixelSpacing", 2)
    thickness = slice_thickness(datasets, order) or step
    if not thickness or thickness <= 0:
        raise ReaderError(f"{datasets[order[0]][0]}: no SliceThickness and the slice spacing is unknown")
    affine = positions = iop = None
    if normal is not None:
        iop = floats(ref, "ImageOrientationPatient", 6)
        positions = np.stack([floats(datasets[i][1], "ImagePositionPatient", 3) for i in order])
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

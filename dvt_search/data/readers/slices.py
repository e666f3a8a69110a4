"""2D slice files (PNG / TIFF / NPY, or single-frame DICOM) with masks, listed one slice per CSV row.

Labels CSV for ``dvt-search data ingest slices`` (paths relative to the CSV's folder)::

    image,mask,patient,study,scan,slice,label,anatomy,spacing_row_mm,spacing_col_mm,slice_thickness_mm
    img/p1_s3_010.png,msk/p1_s3_010.png,MRN123,ACC9,3,10,0,femoral,0.78,0.78,2.5
    img/p1_s3_011.png,msk/p1_s3_011.png,MRN123,ACC9,3,11,1,femoral,0.78,0.78,2.5

* ``image`` (required): a 2D ``.png``/``.tif``/``.npy`` (or ``.dcm``) slice. PNG/TIFF/NPY values become HU as
  ``value * --slope + --intercept`` (16-bit PNGs often store HU + 1024: pass ``--intercept -1024``);
  DICOM slices use their own RescaleSlope/Intercept. 8-bit images get a warning (display grey levels are
  not HU).
* ``mask``: the 2D vein mask (0/1 or 0/255, same size); empty only with ``--allow-missing-masks``.
* ``patient``, ``study``, ``scan`` (required): original keys, pseudonymized by ingest; a scan is the
  rows sharing all three. ``slice`` (required): integer position in the scan, increasing from inferior
  to superior; kept as the manifest ``slice_index`` (gaps allowed). ``label`` (required): 0/1.
* ``anatomy``: ``femoral``/``iliac`` (empty: ``--anatomy``). ``spacing_row_mm``, ``spacing_col_mm``,
  ``slice_thickness_mm``: per row, or for all rows via ``--pixel-spacing``/``--slice-thickness``; they
  must agree within a scan.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import io
from . import (
    LabeledScan,
    ReaderError,
    Scan,
    TableRow,
    binary_mask,
    listing_rows,
    parse_anatomy,
    parse_label,
    resolve_input,
)

log = logging.getLogger(__name__)

REQUIRED = ("image", "patient", "study", "scan", "slice", "label")
OPTIONAL = ("mask", "anatomy", "spacing_row_mm", "spacing_col_mm", "slice_thickness_mm")
_SOURCE = {"png": "png", "tif": "png", "npy": "npy", "dicom": "dicom"}


def _read_2d(path: Path, where: str) -> np.ndarray:
    try:
        n = io.num_slices(path)
    except Exception as exc:  # decoders raise many types; name the file
        raise ReaderError(f"{where}: cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if n != 1:
        raise ReaderError(f"{where}: {path} holds {n} slices; give one 2D slice per row")
    try:
        return io.load_slice(path, 0)
    except io.SliceReadError as exc:
        raise ReaderError(f"{where}: {exc}") from exc


def _number(row: TableRow, col: str, default: float | None, src: Path) -> float:
    text = row.get(col)
    if not text:
        if default is None:
            raise ReaderError(f"{row.where(src, col)}: empty; give the column or the command-line default")
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ReaderError(f"{row.where(src, col)}: {text!r} is not a positive number (mm)")
    return value


def iter_scans(
    listing: str | Path | Sequence[Mapping[str, str]],
    *,
    anatomy: str,
    spacing_mm: tuple[float, float] | None = None,
    slice_thickness_mm: float | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    allow_missing_masks: bool = False,
) -> Iterator[LabeledScan]:
    """Yield one :class:`LabeledScan` per (patient, study, scan) of the listing (module docstring).

    Args:
        listing: the labels CSV, or rows with the same keys (paths relative to cwd).
        anatomy: default for rows with an empty ``anatomy``.
        spacing_mm: (row, col) pixel spacing for rows without the columns.
        slice_thickness_mm: thickness for rows without the column.
        slope, intercept: HU = value * slope + intercept for PNG/TIFF/NPY images.
        allow_missing_masks: all-zero masks where ``mask`` is empty instead of failing.
    """
    rows, base, src = listing_rows(listing, REQUIRED, OPTIONAL)
    groups: dict[tuple[str, str, str], list[TableRow]] = defaultdict(list)
    for row in rows:
        groups[(row.get("patient"), row.get("study"), row.get("scan"))].append(row)
    defaults = (*(spacing_mm or (None, None)), slice_thickness_mm)
    for (patient, study, scan), members in groups.items():
        yield _scan(
            patient, study, scan, members, base, src, anatomy, defaults, slope, intercept, allow_missing_masks
        )


def _scan(
    patient: str,
    study: str,
    scan: str,
    rows: list[TableRow],
    base: Path,
    src: Path,
    anatomy: str,
    defaults: tuple[float | None, ...],
    slope: float,
    intercept: float,
    allow_missing: bool,
) -> LabeledScan:
    numbered: dict[int, TableRow] = {}
    for row in rows:
        text = row.get("slice")
        if not text.isdigit():
            raise ReaderError(f"{row.where(src, 'slice')}: {text!r} is not a non-negative integer")
        prev = numbered.setdefault(int(text), row)
        if prev is not row:
            raise ReaderError(
                f"{row.where(src, 'slice')}: slice {text} of this scan already on line {prev.line}"
            )
    ordered = [numbered[k] for k in sorted(numbered)]
    images, masks, geometry = [], [], None
    for row in ordered:
        image_path = resolve_input(base, row, "image", src)
        img = _read_2d(image_path, row.where(src, "image"))
        if img.dtype == np.uint8:
            log.warning("%s: 8-bit image; display grey levels are not HU", image_path)
        if io.file_kind(image_path) != "dicom":
            img = img.astype(np.float32) * slope + intercept
        if images and img.shape != images[0].shape:
            raise ReaderError(
                f"{row.where(src, 'image')}: {img.shape} differs from the scan's first slice {images[0].shape}"
            )
        images.append(img.astype(np.float32))
        if row.get("mask"):
            mask_path = resolve_input(base, row, "mask", src)
            mask = binary_mask(
                _read_2d(mask_path, row.where(src, "mask")), f"{row.where(src, 'mask')}: {mask_path}"
            )
            if mask.shape != img.shape:
                raise ReaderError(f"{row.where(src, 'mask')}: mask {mask.shape} != image {img.shape}")
            masks.append(mask)
        elif not allow_missing:
            raise ReaderError(
                f"{row.where(src, 'mask')}: no mask (pass --allow-missing-masks to write all-zero masks)"
            )
        else:
            log.warning("%s: no mask; writing an all-zero mask for this slice", row.where(src, "mask"))
            masks.append(np.zeros(img.shape, np.uint8))
        geo = tuple(_number(row, c, d, src) for c, d in zip(OPTIONAL[2:], defaults))
        if geometry is not None and not np.allclose(geo, geometry, rtol=1e-4):
            raise ReaderError(
                f"{row.where(src)}: spacing/thickness {geo} differs within the scan from {geometry}"
            )
        geometry = geo
    first = ordered[0]
    source = _SOURCE[io.file_kind(resolve_input(base, first, "image", src))]
    volume = Scan(np.stack(images), np.stack(masks), *geometry, source, f"{src}:{first.line}")
    labels = {z: parse_label(r.get("label"), r.where(src, "label")) for z, r in enumerate(ordered)}
    sites = {
        z: parse_anatomy(r.get("anatomy"), anatomy, r.where(src, "anatomy")) for z, r in enumerate(ordered)
    }
    return LabeledScan(
        volume, patient, study, f"{study}\0{scan}", labels, sites, slice_numbers=sorted(numbered)
    )

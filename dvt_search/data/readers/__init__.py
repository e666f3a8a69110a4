"""Readers that turn source images (DICOM series, NIfTI volumes, PNG/NPY slices) into :class:`Scan` volumes.

A reader returns HU volumes ``[Z, H, W]`` with slice 0 the most inferior and, where given, a 0/1 mask of
the same shape; :mod:`dvt_search.data.ingest` pseudonymizes the ids and writes the dataset. Errors are
:class:`ReaderError` naming the file (and CSV line); messages never carry header values such as names.

Shared here: the listing-CSV reader (:func:`read_table`), label / slice-range parsing and mask
binarization, so that every input kind accepts the same spellings.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..schema import ANATOMIES


class ReaderError(ValueError):
    """An input file or listing cannot be used; the message names the file (and line)."""


@dataclass
class Scan:
    """One scan ready to store.

    Attributes:
        image: HU volume ``[Z, H, W]`` (any real dtype), slice 0 the most inferior.
        mask: 0/1 ``uint8`` vein mask of the same shape, or None when none was given.
        spacing_row_mm: distance between rows (DICOM PixelSpacing[0]).
        spacing_col_mm: distance between columns (DICOM PixelSpacing[1]).
        slice_thickness_mm: slice thickness.
        source: ``dicom`` / ``nifti`` / ``png`` / ``npy``.
        origin: path of the input (folder or file), for messages.
    """

    image: np.ndarray
    mask: np.ndarray | None
    spacing_row_mm: float
    spacing_col_mm: float
    slice_thickness_mm: float
    source: str
    origin: str


@dataclass
class LabeledScan:
    """A scan with its original keys (pseudonymized by ingest, never printed) and per-slice labels.

    Attributes:
        scan: the volumes.
        patient_key, study_key, scan_key: original identifiers (hidden from ``repr``).
        labels: slice index -> 0/1; slices absent here are left out of the manifest.
        anatomy: slice index -> ``femoral`` / ``iliac`` for every labelled slice.
        slice_numbers: the manifest ``slice_index`` of each volume slice (None: the volume index itself).
    """

    scan: Scan
    patient_key: str = field(repr=False)
    study_key: str = field(repr=False)
    scan_key: str = field(repr=False)
    labels: dict[int, int]
    anatomy: dict[int, str]
    slice_numbers: list[int] | None = None


@dataclass(frozen=True)
class TableRow:
    """One data row of a listing CSV: its 1-based file ``line`` and its stripped cell values."""

    line: int
    values: dict[str, str]

    def get(self, col: str) -> str:
        """The cell (``""`` when the column is absent)."""
        return self.values.get(col, "") or ""

    def where(self, path: Path, col: str | None = None) -> str:
        """``file:line`` (and column) for messages."""
        return f"{path}:{self.line}" + (f" column {col!r}" if col else "")


def read_table(
    path: str | os.PathLike[str], required: Sequence[str], optional: Sequence[str] = ()
) -> list[TableRow]:
    """Read a listing CSV with a header; raises :class:`ReaderError` on a missing file/column or an unknown one."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise ReaderError(
                    f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"
                )
            unknown = [c for c in header if c not in (*required, *optional)]
            if unknown:
                allowed = ", ".join((*required, *optional))
                raise ReaderError(f"{path}: unknown column(s) {', '.join(unknown)} (allowed: {allowed})")
            rows = []
            for rec in reader:
                values = {k.strip(): (v or "").strip() for k, v in rec.items() if k is not None}
                if not any(values.values()):
                    continue
                empty = [c for c in required if not values.get(c)]
                if empty:
                    raise ReaderError(f"{path}:{reader.line_num}: empty {', '.join(empty)}")
                rows.append(TableRow(reader.line_num, values))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReaderError(f"{path}: cannot read CSV: {exc}") from exc
    if not rows:
        raise ReaderError(f"{path}: no data rows")
    return rows


def parse_label(text: str, where: str) -> int:
    """``0``/``1`` (also ``0.0``/``1.0``); anything else raises naming ``where``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value not in (0.0, 1.0):
        raise ReaderError(f"{where}: label {text!r} is not 0 or 1")
    return int(value)


def parse_slices(text: str, n: int | None, where: str) -> range:
    """A slice spec: ``k``, an inclusive range ``a-b``, or ``all`` (needs ``n``); checked against ``n``."""
    t = text.strip().lower()
    try:
        if t in ("all", "*"):
            if n is None:
                raise ValueError("'all' needs a volume")
            out = range(n)
        elif "-" in t[1:]:
            a, b = (int(p) for p in t.split("-", 1))
            if a < 0 or b < a:
                raise ValueError("expected a-b with 0 <= a <= b")
            out = range(a, b + 1)
        else:
            k = int(t)
            if k < 0:
                raise ValueError("negative")
            out = range(k, k + 1)
    except ValueError as exc:
        raise ReaderError(f"{where}: bad slice spec {text!r} (use k, a-b or all): {exc}") from exc
    if n is not None and out.stop > n:
        raise ReaderError(f"{where}: slice(s) {text!r} out of range: the scan has {n} slice(s)")
    return out


def binary_mask(arr: np.ndarray, where: str) -> np.ndarray:
    """0/1 ``uint8`` from a mask stored as bool, 0/1 or 0/255; other values raise (no silent merging)."""
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    zero = a == 0
    if (zero | (a == 1)).all():
        return a.astype(np.uint8)
    if (zero | (a == 255)).all():
        return (~zero).astype(np.uint8)
    odd = np.unique(a[~zero][:100_000])  # values other than 0: enough of them to show a few
    shown = ", ".join(f"{v:g}" for v in odd[:6])
    raise ReaderError(f"{where}: mask values must be 0/1 (or 0/255), found {shown} besides 0")


def parse_anatomy(text: str, default: str, where: str) -> str:
    """``femoral`` / ``iliac`` (empty: ``default``); anything else raises naming ``where``."""
    value = text.strip().lower() or default
    if value not in ANATOMIES:
        raise ReaderError(f"{where}: anatomy {value!r} is not one of {', '.join(ANATOMIES)}")
    return value


def listing_rows(
    listing: str | os.PathLike[str] | Sequence[Mapping[str, str]],
    required: Sequence[str],
    optional: Sequence[str],
) -> tuple[list[TableRow], Path, Path]:
    """Rows of a listing given as a CSV path or as mappings; returns (rows, base folder for paths, name for messages)."""
    if isinstance(listing, (str, os.PathLike)):
        path = Path(listing)
        return read_table(path, required, (*required, *optional)), path.parent, path
    rows = [
        TableRow(i + 1, {str(k): str(v or "").strip() for k, v in rec.items()})
        for i, rec in enumerate(listing)
    ]
    for row in rows:
        missing = [c for c in required if not row.get(c)]
        if missing:
            raise ReaderError(f"listing row {row.line}: missing {', '.join(missing)}")
    return rows, Path.cwd(), Path("<listing>")


def resolve_input(base: Path, row: TableRow, col: str, src: Path) -> Path:
    """The file named in ``col`` of a listing row, relative to ``base`` unless absolute; must exist."""
    text = row.get(col)
    if not text:
        raise ReaderError(f"{row.where(src, col)}: empty")
    p = Path(text).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise ReaderError(f"{row.where(src, col)}: file not found: {p}")
    return p

"""Row-level validation of a manifest (Parquet or CSV), its image/mask files and, optionally, its splits.

Every problem becomes a :class:`RowError` (row, field, message); nothing here raises on bad input. Checks:

* the file: readable, every schema column present (unknown extra columns are a warning), not empty;
* each row: ids non-empty without surrounding blanks, ``anatomy`` in :data:`schema.ANATOMIES`,
  ``label`` 0/1, indices non-negative integers, spacings/thickness finite and positive, ``height``/
  ``width`` positive, ``patch_rows``/``patch_cols`` equal to the grid of ``height`` x ``width`` and a
  ``patches`` array of 0/1 flags of that length;
* across rows: duplicate ``(scan_id, slice_index)``, two rows naming the same image slice, a scan or study
  under two patients, a scan under two studies, spacing/thickness/size varying within a scan (errors);
  ``slice_index`` values of a scan that are not ``0..n-1`` and a scan mixing anatomies are **warnings**
  (ingest leaves unlabeled slices out, so gaps are legitimate; 2D models never look across slices);
* the files (unless ``check_files=False``): image/mask present and decodable, index inside the file,
  decoded size equal to ``height`` x ``width``, mask size equal to image size, no NaN/inf pixel, mask
  values only 0/1, ``patches`` equal to :func:`schema.patches_from_mask` of the mask;
* a splits file (``splits_path``): format tag, hash, every listed scan in the manifest, no scan in two
  partitions or folds, no patient in two partitions or folds.

Row numbers are 0-based data rows; for CSV the report adds the file line (``row + 2``: the header is
line 1; quoted fields holding line breaks would shift it). The file checks live in
:mod:`.validate_files` (each volume opened once; integer image volumes checked from their header).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema
from .splits import SPLITS_FORMAT, SplitsError, content_hash, manifest_fingerprint
from .validate_files import check_row_files, resolver

_ID_COLUMNS = ("patient_id", "study_id", "scan_id", "image_path", "mask_path", "source")
_INDEX_COLUMNS = ("slice_index", "image_index", "mask_index")
_POSITIVE_FLOAT_COLUMNS = ("spacing_row_mm", "spacing_col_mm", "slice_thickness_mm")
_GEOMETRY_COLUMNS = (*_POSITIVE_FLOAT_COLUMNS, "height", "width")


@dataclass(frozen=True)
class RowError:
    """One problem: ``row`` is the 0-based data row (None for the file as a whole)."""

    row: int | None
    field: str
    message: str


@dataclass
class ValidationReport:
    """What :func:`validate_manifest` found. ``ok`` is True when there is no error (warnings allowed)."""

    path: Path
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)
    rows_checked: int = 0
    truncated: bool = False
    is_csv: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def _where(self, e: RowError) -> str:
        if e.row is None:
            return "file"
        return f"row {e.row} (line {e.row + 2})" if self.is_csv else f"row {e.row}"

    def summary(self) -> str:
        """One line: the verdict and the counts."""
        verdict = "OK" if self.ok else "INVALID"
        more = " (stopped at --max-errors)" if self.truncated else ""
        return (
            f"{verdict}: {self.path}: {self.rows_checked} row(s) checked, {len(self.errors)} error(s){more}, "
            f"{len(self.warnings)} warning(s)"
        )

    def format(self) -> str:
        """The per-row report: one line per error, then warnings, then the summary line."""
        lines = [f"error   {self._where(e)} {e.field}: {e.message}" for e in self.errors]
        lines += [f"warning {self._where(w)} {w.field}: {w.message}" for w in self.warnings]
        lines.append(self.summary())
        return "\n".join(lines)


class _Stop(Exception):
    """Raised internally once ``max_errors`` errors were collected."""


class _Collector:
    def __init__(self, report: ValidationReport, max_errors: int | None) -> None:
        self.report = report
        self.max_errors = max_errors

    def error(self, row: int | None, fld: str, message: str) -> None:
        if self.max_errors is not None and len(self.report.errors) >= self.max_errors:
            self.report.truncated = True
            raise _Stop
        self.report.errors.append(RowError(None if row is None else int(row), fld, message))

    def warn(self, row: int | None, fld: str, message: str) -> None:
        self.report.warnings.append(RowError(None if row is None else int(row), fld, message))


def validate_manifest(
    path: str | os.PathLike[str],
    *,
    splits_path: str | os.PathLike[str] | None = None,
    check_files: bool = True,
    max_errors: int | None = None,
) -> ValidationReport:
    """Check every row of the manifest at ``path`` (and its files, and ``splits_path`` if given).

    Args:
        path: manifest (``.parquet``, else read as CSV); relative file paths resolve against its folder.
        splits_path: optional ``splits.json`` to check against the manifest.
        check_files: open the image and mask files (False: table-only checks, much faster).
        max_errors: stop after this many errors (``None``: report all).

    Returns:
        The report; it never raises on bad input.
    """
    path = Path(path)
    report = ValidationReport(path=path, is_csv=path.suffix != ".parquet")
    out = _Collector(report, max_errors)
    try:
        rows = _read(path, out)
        if rows is not None:
            report.rows_checked = len(rows)
            _check_cross_rows(rows, schema.manifest_root(path), out)
            if check_files:
                check_row_files(rows, schema.manifest_root(path), out)
            if splits_path is not None:
                _check_splits(Path(splits_path), rows, out)
    except _Stop:
        pass
    report.errors.sort(key=lambda e: -1 if e.row is None else e.row)
    report.warnings.sort(key=lambda e: -1 if e.row is None else e.row)
    return report


# ----------------------------------------------------------------------------------------------- values
def _missing(v: Any) -> bool:
    t = type(v)
    if t is str or t is int:  # the common cells, answered without further checks
        return False
    if v is None or v is pd.NA:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _as_number(v: Any) -> float | None:
    t = type(v)
    if t is int or t is float:  # what Parquet cells come back as
        return float(v) if v == v else None
    if _missing(v) or isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _as_int(v: Any) -> int | None:
    if type(v) is int:
        return v
    x = _as_number(v)
    return int(x) if x is not None and math.isfinite(x) and x.is_integer() else None


def _show(v: Any) -> str:
    """A cell value for messages: bare when unambiguous, quoted when blank or padded."""
    if _missing(v):
        return "missing"
    v = v.item() if isinstance(v, np.generic) else v
    return v if isinstance(v, str) and v.strip() == v and v else repr(v)


def _patch_flags(v: Any) -> np.ndarray | None:
    """The flags as ``uint8``, or None when they are not all 0/1."""
    if isinstance(v, str):
        try:
            return np.asarray(schema.decode_patches_csv(v), dtype=np.uint8)
        except ValueError:
            return None
    if _missing(v):
        return np.zeros(0, dtype=np.uint8)
    try:
        arr = np.asarray(v).ravel()
    except (TypeError, ValueError):
        return None
    if arr.dtype == np.uint8:  # the Parquet case: one cheap reduction
        return arr if not arr.size or arr.max() <= 1 else None
    try:
        ok = arr.size == 0 or bool(((arr == 0) | (arr == 1)).all())
    except TypeError:
        return None
    return arr.astype(np.uint8) if ok else None


# ------------------------------------------------------------------------------------------- per row
def _read(path: Path, out: _Collector) -> list[dict[str, Any]] | None:
    """Read the file and run the single-row checks; returns parsed rows (None where a value is bad)."""
    try:
        df = schema.read_manifest_raw(path)
    except Exception as exc:  # a corrupt file may fail in any decoder; the report names it
        out.error(None, "manifest", str(exc) if isinstance(exc, schema.ManifestError) else f"{path}: {exc}")
        return None
    missing = [c for c in schema.REQUIRED if c not in df.columns]
    for col in missing:
        out.error(None, col, "required column is missing")
    for col in (c for c in df.columns if c not in schema.COLUMNS):
        out.warn(None, str(col), "unknown column (ignored)")
    if missing:
        return None
    if df.empty:
        out.error(None, "manifest", "manifest has no rows")
        return None
    records = df.loc[:, list(schema.COLUMNS)].to_dict("records")
    return [_check_row(i, rec, out) for i, rec in enumerate(records)]


def _check_row(i: int, rec: dict[str, Any], out: _Collector) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in (*_ID_COLUMNS, "anatomy"):
        v = rec[col]
        if _missing(v) or not str(v).strip():
            out.error(i, col, f"is empty ({_show(v)})")
            row[col] = None
        elif str(v) != str(v).strip():
            out.error(i, col, f"has leading/trailing whitespace: {_show(str(v))}")
            row[col] = None
        else:
            row[col] = str(v)
    if row["anatomy"] is not None and row["anatomy"] not in schema.ANATOMIES:
        out.error(i, "anatomy", f"{row['anatomy']!r} is not one of {', '.join(schema.ANATOMIES)}")
    for col in _INDEX_COLUMNS:
        row[col] = _as_int(rec[col])
        if row[col] is None or row[col] < 0:
            out.error(i, col, f"{_show(rec[col])} is not a non-negative integer")
            row[col] = None
    row["label"] = _as_int(rec["label"])
    if row["label"] not in (0, 1):
        out.error(i, "label", f"{_show(rec['label'])} is not a valid label (expected 0 or 1)")
        row["label"] = None
    for col in _POSITIVE_FLOAT_COLUMNS:
        row[col] = _as_number(rec[col])
        if row[col] is None or not math.isfinite(row[col]) or row[col] <= 0:
            out.error(i, col, f"{_show(rec[col])} is not a positive finite number (mm)")
            row[col] = None
    for col in ("height", "width", "patch_rows", "patch_cols"):
        row[col] = _as_int(rec[col])
        if row[col] is None or row[col] <= 0:
            out.error(i, col, f"{_show(rec[col])} is not a positive integer")
            row[col] = None
    row["patches"] = _check_patch_fields(i, rec, row, out)
    return row


def _check_patch_fields(i: int, rec: dict[str, Any], row: dict[str, Any], out: _Collector) -> Any:
    if row["height"] is not None and row["width"] is not None:
        grid = schema.patch_grid_shape(row["height"], row["width"])
        for col, want in zip(("patch_rows", "patch_cols"), grid):
            if row[col] is not None and row[col] != want:
                out.error(
                    i,
                    col,
                    f"{row[col]} != {want} = ceil(size / {schema.PATCH_BLOCK}) for {row['height']}x{row['width']}",
                )
                row[col] = None
    flags = _patch_flags(rec["patches"])
    if flags is None:
        out.error(i, "patches", "is not an array of 0/1 flags")
        return None
    if row["patch_rows"] is not None and row["patch_cols"] is not None:
        want = row["patch_rows"] * row["patch_cols"]
        if flags.size != want:
            out.error(i, "patches", f"has {flags.size} flag(s), expected patch_rows*patch_cols = {want}")
            return None
        return flags.reshape(row["patch_rows"], row["patch_cols"])
    return None


# ---------------------------------------------------------------------------------------- across rows
def _check_cross_rows(rows: list[dict[str, Any]], root: Path, out: _Collector) -> None:
    resolve = resolver(root)
    first_slice: dict[tuple[str, int], int] = {}
    first_image: dict[tuple[str, int], int] = {}
    for i, r in enumerate(rows):
        scan = r["scan_id"]
        if scan is not None and r["slice_index"] is not None:
            j = first_slice.setdefault((scan, r["slice_index"]), i)
            if j != i:
                out.error(
                    i,
                    "slice_index",
                    f"duplicate (scan_id, slice_index) = ({scan!r}, {r['slice_index']}); first on row {j}",
                )
        if r["image_path"] is not None and r["image_index"] is not None:
            key = (str(resolve(r["image_path"])), r["image_index"])
            j = first_image.setdefault(key, i)
            if j != i:
                out.error(
                    i,
                    "image_path",
                    f"same image slice ({r['image_path']!r}, index {r['image_index']}) as row {j}",
                )
    by_scan = _group(rows, "scan_id")
    for kind, groups, cols in (
        ("scan", by_scan, ("patient_id", "study_id", *_GEOMETRY_COLUMNS)),
        ("study", _group(rows, "study_id"), ("patient_id",)),
    ):
        for key, idx in groups.items():
            for col in cols:
                _check_uniform(
                    kind, key, col, [(i, rows[i][col]) for i in idx if rows[i][col] is not None], out
                )
    for scan, idx in by_scan.items():
        _check_scan_warnings(scan, idx, rows, out)


def _group(rows: list[dict[str, Any]], col: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r[col] is not None:
            groups[r[col]].append(i)
    return groups


def _check_uniform(kind: str, key: str, col: str, values: list[tuple[int, Any]], out: _Collector) -> None:
    """Flag the rows of one scan/study whose ``col`` differs from the value most of its rows hold."""
    if len({v for _, v in values}) < 2:
        return
    ref = Counter(v for _, v in values).most_common(1)[0][0]
    j = next(i for i, v in values if v == ref)
    for i, v in values:
        same = math.isclose(v, ref, rel_tol=1e-4, abs_tol=1e-6) if isinstance(v, float) else v == ref
        if not same:
            shown = f"{v:g}" if isinstance(v, float) else repr(v)
            want = f"{ref:g}" if isinstance(ref, float) else repr(ref)
            out.error(
                i, col, f"{kind} {key!r} has {col} {shown} here but {want} on row {j} (and most of its rows)"
            )


def _check_scan_warnings(scan: str, idx: list[int], rows: list[dict[str, Any]], out: _Collector) -> None:
    anatomies = {rows[i]["anatomy"] for i in idx} - {None}
    if len(anatomies) > 1:
        out.warn(idx[0], "anatomy", f"scan {scan!r} mixes anatomies {sorted(anatomies)}")
    present = sorted({rows[i]["slice_index"] for i in idx} - {None})
    if present and present != list(range(len(present))):
        gaps = sorted(set(range(present[-1] + 1)) - set(present))
        out.warn(
            idx[0],
            "slice_index",
            f"scan {scan!r}: slice indices are not contiguous from 0 ({len(present)} present, "
            f"{len(gaps)} missing, e.g. {gaps[:5]})",
        )


# --------------------------------------------------------------------------------------------- splits
def _check_splits(path: Path, rows: list[dict[str, Any]], out: _Collector) -> None:
    name = path.name
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("top level is not a JSON object")
    except (OSError, ValueError) as exc:
        out.error(None, "splits", f"{path}: cannot read splits file: {exc}")
        return
    if doc.get("format") != SPLITS_FORMAT:
        out.error(None, "splits", f"{name}: format is {doc.get('format')!r}, expected {SPLITS_FORMAT!r}")
    if doc.get("hash") != content_hash({k: v for k, v in doc.items() if k != "hash"}):
        out.error(None, "splits", f"{name}: hash mismatch: the file was edited after it was written")
    fingerprint = doc.get("manifest_fingerprint")
    if fingerprint is not None and rows:
        try:
            actual = manifest_fingerprint(pd.DataFrame(rows))
        except (SplitsError, ValueError, TypeError):
            actual = None  # malformed rows are reported by the row checks
        if actual is not None and actual != fingerprint:
            out.error(None, "splits", f"{name}: made for a different manifest (fingerprint mismatch)")
    parts = doc.get("partitions")
    if not isinstance(parts, dict) or not all(isinstance(v, list) for v in parts.values()):
        out.error(None, "splits", f"{name}: 'partitions' must map partition names to lists of scan ids")
        return
    patients: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["scan_id"] is not None and r["patient_id"] is not None:
            patients[r["scan_id"]].add(r["patient_id"])
    _check_groups(name, "partition", {str(k): v for k, v in parts.items()}, patients, out)
    folds = doc.get("folds")
    if isinstance(folds, list) and all(isinstance(f, list) for f in folds):
        _check_groups(name, "fold", {str(k): f for k, f in enumerate(folds)}, patients, out)


def _check_groups(
    name: str, kind: str, groups: dict[str, Iterable[Any]], patients: dict[str, set[str]], out: _Collector
) -> None:
    scan_group: dict[str, str] = {}
    patient_groups: dict[str, set[str]] = defaultdict(set)
    unknown: list[str] = []
    for group, scans in groups.items():
        for scan in map(str, scans):
            prev = scan_group.setdefault(scan, group)
            if prev != group:
                out.error(None, "splits", f"{name}: scan {scan!r} is in {kind} {prev!r} and {kind} {group!r}")
            if scan not in patients:
                unknown.append(scan)
            for p in patients.get(scan, ()):
                patient_groups[p].add(group)
    if unknown:
        out.error(None, "splits", f"{name}: {len(unknown)} scan(s) not in the manifest, e.g. {unknown[:5]}")
    for p, found in sorted(patient_groups.items()):
        if len(found) > 1:
            out.error(None, "splits", f"{name}: patient {p!r} is in more than one {kind}: {sorted(found)}")

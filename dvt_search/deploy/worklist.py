"""Batch predict: a folder of studies, or a CSV of series paths, scored into one worklist table.

``dvt-search predict --model DIR --batch FOLDER_OR_CSV --out OUT``:

* a **folder**: every DICOM series under it, found by :mod:`dvt_search.data.readers.discovery` (the
  discovery of ``data ingest``: UID-less files grouped by folder and geometry, scouts/reports/captures
  skipped), and every NIfTI volume (``*.nii``, ``*.nii.gz``) under it;
* a **CSV** (``.csv``) with a ``path`` column (a DICOM series folder or a NIfTI file, relative to the
  CSV's folder unless absolute) and an optional ``series`` column (the series key or 1-based index when
  that folder holds several; default the largest axial CT series)::

      path,series
      study01/ct,
      study02,2
      volumes/p03.nii.gz,

Each series is read (:mod:`.inputs`), checked (:mod:`.scope`) and scored (:func:`.predict.predict_input`)
on its own: a series that fails (unreadable, inconsistent, a missing path) becomes an error row with a
one-line message naming its series key, and the rest go on. Progress is one line per series on the
terminal, then the counts.

Written under ``OUT`` (atomically, :mod:`dvt_search.fsutil`): ``worklist.csv`` and ``worklist.parquet``
(columns :data:`COLUMNS`, one row per series in discovery / CSV order) and ``series/<NNNN>/`` per scored
series (``slices.csv``, ``summary.json``, heat maps with ``heatmaps=True``). Series are named by their key
(folder relative to the input, ``:k`` for several in one folder; a NIfTI file by its relative path; a CSV
row by its ``path`` cell, plus ``/<series key>`` when that folder holds several series): no header value
(names, ids, dates, UIDs) is written or printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dvt_search.deploy.inputs import is_nifti, read_dicom_input, read_nifti_input
from dvt_search.deploy.predict import Exported, predict_input
from dvt_search.fsutil import atomic_write

if TYPE_CHECKING:
    from dvt_search.data.readers.discovery import DicomSeries

log = logging.getLogger(__name__)

WORKLIST_CSV = "worklist.csv"
WORKLIST_PARQUET = "worklist.parquet"
SERIES_DIR = "series"

#: Worklist columns: series key, input kind, slices, scan score (highest slice probability), the
#: threshold of the decision and its ``threshold.json`` key, the decision, the top slice, how many slices
#: are positive, whether the out-of-scope checks passed, their warnings (`` | ``-joined), the error
#: (empty when scored) and the series' output folder relative to the worklist.
COLUMNS = (
    "series_key",
    "source",
    "n_slices",
    "scan_score",
    "threshold",
    "threshold_key",
    "decision",
    "top_slice",
    "positive_slices",
    "in_scope",
    "warnings",
    "error",
    "output",
)


@dataclass
class Target:
    """One series of a batch: a discovered DICOM series, a NIfTI file, or an error found while listing."""

    key: str
    source: str
    dicom: DicomSeries | None = None
    path: Path | None = None
    error: str = ""


def _nifti_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and is_nifti(p))


def targets_from_folder(root: Path) -> list[Target]:
    """Every DICOM series and NIfTI volume under ``root``."""
    from dvt_search.data.readers import ReaderError
    from dvt_search.data.readers.discovery import find_series

    found = [Target(s.key, "dicom", dicom=s) for s in find_series(root)]
    found += [Target(p.relative_to(root).as_posix(), "nifti", path=p) for p in _nifti_files(root)]
    if not found:
        raise ReaderError(f"{root}: no DICOM series or NIfTI volume found")
    return found


def targets_from_csv(csv_path: Path) -> list[Target]:
    """The series listed in a CSV (``path`` [, ``series``]); a row that names none becomes an error target."""
    from dvt_search.data.readers import ReaderError, read_table
    from dvt_search.data.readers.discovery import choose_series, find_series

    out = []
    for row in read_table(csv_path, ("path",), ("series",)):
        text, choice = row.get("path"), row.get("series") or None
        key = text if choice is None else f"{text}:{choice}"
        p = Path(text).expanduser()
        p = p if p.is_absolute() else csv_path.parent / p
        if not p.exists():
            out.append(Target(key, "", error=f"{row.where(csv_path, 'path')}: no such file or folder: {p}"))
        elif is_nifti(p):
            out.append(Target(key, "nifti", path=p))
        else:
            try:
                chosen = choose_series(find_series(p), choice, f"{row.where(csv_path, 'path')} ({p})")
            except ReaderError as exc:
                out.append(Target(key, "dicom", error=str(exc)))
                continue
            out.append(Target(key if chosen.key == "." else f"{text}/{chosen.key}", "dicom", dicom=chosen))
    return out


def list_targets(source: str | os.PathLike[str]) -> list[Target]:
    """The series of a batch: a folder (walked) or a ``.csv`` listing."""
    from dvt_search.data.readers import ReaderError

    src = Path(source)
    if not src.exists():
        raise ReaderError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise ReaderError(f"{src}: a batch is a folder or a .csv listing (columns path, series)")
        return targets_from_csv(src)
    return targets_from_folder(src)


def _one_line(exc: BaseException) -> str:
    from dvt_search.data.readers import ReaderError

    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ReaderError, FileNotFoundError)) else f"{type(exc).__name__}: {text}"


def _scored_row(target: Target, summary: dict[str, Any], output: str) -> dict[str, Any]:
    return {
        "series_key": target.key,
        "source": summary["source"],
        "n_slices": summary["n_slices"],
        "scan_score": summary["scan_score"],
        "threshold": summary["scan_threshold"],
        "threshold_key": summary["scan_threshold_key"],
        "decision": summary["decision"],
        "top_slice": summary["max_slice_index"],
        "positive_slices": len(summary["positive_slices"]),
        "in_scope": summary["in_scope"],
        "warnings": " | ".join(summary["warnings"]),
        "error": "",
        "output": output,
    }


def _error_row(target: Target, message: str, model: Exported) -> dict[str, Any]:
    thr, key = model.decision_threshold
    return {
        "series_key": target.key,
        "source": target.source,
        "n_slices": None,
        "scan_score": None,
        "threshold": thr,
        "threshold_key": key,
        "decision": "",
        "top_slice": None,
        "positive_slices": None,
        "in_scope": None,
        "warnings": "",
        "error": message,
        "output": "",
    }


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("n_slices", "top_slice", "positive_slices"):
        df[col] = df[col].astype("Int64")
    df["in_scope"] = df["in_scope"].astype("boolean")
    df["scan_score"] = df["scan_score"].astype("float64")
    df["threshold"] = df["threshold"].astype("float64")
    return df


def run_worklist(
    model_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    heatmaps: bool = False,
    batch_size: int = 16,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    echo_error: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Score every series of ``source`` (folder or CSV) with one export; write and return the worklist.

    Args:
        model_dir: the export folder.
        source: a folder of studies or a ``.csv`` listing (module docstring).
        out: output folder (``worklist.csv``, ``worklist.parquet``, ``series/<NNNN>/``).
        heatmaps: also write heat maps of positive slices (families that make them).
        echo, echo_error: where progress lines and error lines go (default: printed).

    Raises:
        ReaderError: ``source`` does not exist or holds no series (nothing to list).
        FileNotFoundError, ValueError: ``model_dir`` is not a usable export.
    """
    from dvt_search.data.readers import ReaderError

    echo_error = echo_error or echo
    model = Exported.open(model_dir)
    targets = list_targets(source)
    out = Path(out)
    rows: list[dict[str, Any]] = []
    n = len(targets)
    for i, target in enumerate(targets, start=1):
        rel = f"{SERIES_DIR}/{i:04d}"
        try:
            if target.error:
                raise ReaderError(target.error)
            if target.dicom is not None:
                series = read_dicom_input(target.dicom, target.key)
            else:
                series = read_nifti_input(target.path, target.key)  # type: ignore[arg-type]
            summary = predict_input(
                model, series, out / rel, heatmaps=heatmaps, batch_size=batch_size, device=device
            )
        except Exception as exc:  # one failing series is reported; the batch goes on
            log.debug("series %s failed", target.key, exc_info=exc)
            message = _one_line(exc)
            rows.append(_error_row(target, message, model))
            echo_error(f"[{i}/{n}] {target.key}: ERROR {message}")
            continue
        rows.append(_scored_row(target, summary, rel))
        scope = "" if summary["in_scope"] else f"; OUT OF SCOPE: {' | '.join(summary['warnings'])}"
        echo(
            f"[{i}/{n}] {target.key}: {summary['decision']} (score {summary['max_probability']:.4f} at slice "
            f"{summary['max_slice_index']}, {summary['n_slices']} slices){scope}"
        )
    df = _frame(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WORKLIST_CSV, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))
    atomic_write(out / WORKLIST_PARQUET, lambda tmp: df.to_parquet(tmp, index=False))
    scored = df[df["error"] == ""]
    echo(
        f"{n} series: {len(scored)} scored ({int((scored['decision'] == 'DVT suspected').sum())} DVT suspected, "
        f"{int((~scored['in_scope'].astype(bool)).sum())} with out-of-scope warnings), {n - len(scored)} failed"
    )
    return df

"""Every trial of a run as one tidy table: the leaderboard.

Built only from the run directory (:mod:`dvt_search.rundir.layout`): ``trial.json`` and ``metrics.jsonl``
of each trial and the presence of its checkpoint. One row per trial:

============================  =========================================================================
column                        meaning
============================  =========================================================================
family, trial_id              which trial
optuna_number                 the trial's number in its family's Optuna study (if any)
paper_config                  the trial ran the family's paper configuration (enqueued first)
status                        the record's status (pending / running / completed / stopped / failed)
ended                         how it ended, in words: completed / stopped early / failed / unfinished
epochs, max_epochs            epochs run and the budget
best_epoch                    epoch of the best value of the run metric (the checkpointed epoch)
params                        the configuration as a JSON string (sorted keys)
param_<name>                  one column per parameter (JSON text where a column would mix types)
curve                         per-epoch validation metrics as a JSON list of ``{"epoch", "val_..."}``
best_<metric>, last_<metric>  validation metrics at the best and at the last epoch
wall_s, cpu_s, gpu_s, cost_s  wall-clock, CPU-core and GPU seconds; cost_s = cpu_s + gpu_s
has_checkpoint                a checkpoint directory with ``meta.json`` exists
checkpoint                    its path relative to the run directory ("" without one)
error                         first line of the failure message ("" unless failed)
============================  =========================================================================

Written as ``<run>/leaderboard.parquet`` and ``<run>/leaderboard.csv`` (atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dvt_search.families.base import META_FILE
from dvt_search.rundir.layout import RunDir, TrialRecord

ENDED = {
    "completed": "completed",
    "stopped": "stopped early",
    "failed": "failed",
    "running": "unfinished",
    "pending": "unfinished",
}

_BASE_COLUMNS = (
    "family",
    "trial_id",
    "optuna_number",
    "paper_config",
    "status",
    "ended",
    "epochs",
    "max_epochs",
    "best_epoch",
    "params",
    "curve",
    "wall_s",
    "cpu_s",
    "gpu_s",
    "cost_s",
    "has_checkpoint",
    "checkpoint",
    "error",
)


def _finite(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _val_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: _finite(v) for k, v in row.items() if k.startswith("val_")}


def _best_from_curve(curve: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    scored = [r for r in curve if math.isfinite(_finite(r.get(metric)))]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: _finite(r[metric]))


def trial_row(run: RunDir, rec: TrialRecord, metric: str, mode: str) -> dict[str, Any]:
    """One leaderboard row for a trial (see the module docstring for the columns)."""
    epochs = run.read_epochs(rec.family, rec.trial_id)
    curve = [{"epoch": int(r.get("epoch", i + 1)), **_val_metrics(r)} for i, r in enumerate(epochs)]
    best = _val_metrics(rec.best)
    best_epoch = rec.best_epoch
    if metric not in best and curve:  # an older or partial record: derive the best epoch from the curve
        picked = _best_from_curve(curve, metric, mode)
        if picked is not None:
            best = {k: v for k, v in picked.items() if k != "epoch"}
            best_epoch = picked["epoch"]
    last = _val_metrics(rec.last) or ({k: v for k, v in curve[-1].items() if k != "epoch"} if curve else {})
    ckpt = run.checkpoint_dir(rec.family, rec.trial_id)
    has_ckpt = bool(rec.has_checkpoint) and (ckpt / META_FILE).is_file()
    row: dict[str, Any] = {
        "family": rec.family,
        "trial_id": rec.trial_id,
        "optuna_number": rec.optuna_number,
        "paper_config": bool(rec.paper_config),
        "status": rec.status,
        "ended": ENDED[rec.status],
        "epochs": max(int(rec.epochs), len(curve)),
        "max_epochs": int(rec.max_epochs),
        "best_epoch": best_epoch,
        "params": json.dumps(rec.params, sort_keys=True, default=str),
        "curve": json.dumps(curve, sort_keys=True, allow_nan=True),
        "wall_s": float(rec.wall_s),
        "cpu_s": float(rec.cpu_s),
        "gpu_s": float(rec.gpu_s),
        "cost_s": float(rec.cpu_s) + float(rec.gpu_s),
        "has_checkpoint": has_ckpt,
        "checkpoint": ckpt.relative_to(run.path).as_posix() if has_ckpt else "",
        "error": (rec.error or "").strip().splitlines()[0] if rec.error and rec.error.strip() else "",
    }
    row.update({f"best_{k}": v for k, v in best.items()})
    row.update({f"last_{k}": v for k, v in last.items()})
    row.update({f"param_{k}": v for k, v in rec.params.items()})
    return row


def _uniform_param_column(values: pd.Series) -> pd.Series:
    """Keep a parameter column typed when its values share a type; else store each as JSON text."""
    present = values.dropna()
    kinds = {type(v) for v in present}
    numeric = {int, float}
    if not kinds or kinds <= numeric or len(kinds) == 1 and kinds <= {str, bool}:
        return values
    return values.map(
        lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else json.dumps(v)
    )


def collect(
    run: RunDir | str | os.PathLike[str], metric: str | None = None, mode: str | None = None
) -> pd.DataFrame:
    """The leaderboard of every trial in ``run`` (empty frame with the base columns when none).

    Args:
        run: the run directory.
        metric, mode: how the best epoch is judged when a record lacks it (default: ``run.json``'s).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    info = run.read_info()
    metric = metric or info.metric
    mode = mode or info.mode
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    rows = [trial_row(run, rec, metric, mode) for rec in run.iter_trials()]
    if not rows:
        return pd.DataFrame(columns=list(_BASE_COLUMNS))
    frame = pd.DataFrame(rows)
    metric_cols = sorted(c for c in frame.columns if c.startswith(("best_", "last_")) and c != "best_epoch")
    param_cols = sorted(c for c in frame.columns if c.startswith("param_"))
    for c in param_cols:
        frame[c] = _uniform_param_column(frame[c])
    frame = frame[[*_BASE_COLUMNS, *metric_cols, *param_cols]]
    frame["best_epoch"] = frame["best_epoch"].astype("Int64")
    frame["optuna_number"] = frame["optuna_number"].astype("Int64")
    return frame.sort_values(["family", "trial_id"], kind="stable").reset_index(drop=True)


def write_leaderboard(run: RunDir | str | os.PathLike[str], frame: pd.DataFrame) -> tuple[Path, Path]:
    """Write ``leaderboard.parquet`` and ``leaderboard.csv`` into the run directory."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    parquet, csv = run.leaderboard_files
    return run.write_frame(parquet, frame), run.write_frame(csv, frame)


def read_leaderboard(run: str | os.PathLike[str]) -> pd.DataFrame:
    """The stored leaderboard of a run (``FileNotFoundError`` naming the file when absent)."""
    rd = RunDir(run)
    return rd.read_frame(rd.leaderboard_files[0])

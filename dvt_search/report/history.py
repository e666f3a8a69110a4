"""The search as Optuna saw it: per-family trial history and parameter importances from
``<run>/optuna.journal`` (one study per family, named after the family).

The journal is read from a private temporary copy, so a read-only or still-growing journal (a pulled run,
a live search) is never locked or modified.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: fANOVA needs a handful of finished trials to say anything; below this the Spearman fallback is used.
MIN_TRIALS_FOR_FANOVA = 5
MIN_TRIALS_FOR_ANY = 3


@dataclass
class StudyHistory:
    """One family's study: finished trials in order and parameter importances (method named)."""

    family: str
    direction: str
    trials: pd.DataFrame  # number, state, value, params_* columns
    importances: dict[str, float] = field(default_factory=dict)
    importance_method: str = ""


def _spearman_importance(trials: pd.DataFrame) -> dict[str, float]:
    """|Spearman rho| of each parameter with the objective, normalised to sum 1 (categoricals coded)."""
    from scipy.stats import spearmanr

    done = trials[trials["value"].notna()]
    out = {}
    for col in [c for c in done.columns if c.startswith("params_")]:
        x = done[col]
        if not pd.api.types.is_numeric_dtype(x) or pd.api.types.is_bool_dtype(x):
            # categoricals (object or pandas string dtypes, e.g. schedule: step/cosine/none) as codes
            x = x.astype(str).astype("category").cat.codes
        if x.nunique() < 2:
            continue
        rho = spearmanr(x.to_numpy(dtype=float), done["value"].to_numpy(dtype=float)).statistic
        if math.isfinite(rho):
            out[col[len("params_") :]] = abs(float(rho))
    total = sum(out.values())
    return {k: v / total for k, v in sorted(out.items(), key=lambda kv: -kv[1])} if total > 0 else {}


def _importances(study: Any, trials: pd.DataFrame) -> tuple[dict[str, float], str]:
    import optuna

    n = int(trials["value"].notna().sum())
    if n < MIN_TRIALS_FOR_ANY:
        return {}, f"too few finished trials ({n}) to estimate importances"
    if n >= MIN_TRIALS_FOR_FANOVA:
        try:
            imp = optuna.importance.get_param_importances(study)
            return {k: float(v) for k, v in imp.items()}, "fANOVA (optuna.importance)"
        except (RuntimeError, ValueError) as exc:  # e.g. a single distinct value per parameter
            method = f"|Spearman rho| (fANOVA failed: {exc})"
    else:
        method = f"|Spearman rho| ({n} finished trials, fewer than {MIN_TRIALS_FOR_FANOVA} for fANOVA)"
    return _spearman_importance(trials), method


def read_history(run_path: str | Path) -> dict[str, StudyHistory]:
    """Every family study in the run's journal (empty dict when the run has none)."""
    from dvt_search.rundir.journal import repair_journal
    from dvt_search.rundir.layout import RunDir

    src = RunDir(run_path).journal
    if not src.is_file():
        return {}
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, StudyHistory] = {}
    with tempfile.TemporaryDirectory(prefix="dvt-journal-") as tmp:
        copy = Path(tmp) / src.name
        shutil.copyfile(src, copy)
        repair_journal(copy, backup=False, label=src)  # a torn tail: said, dropped from the copy only
        storage = JournalStorage(JournalFileBackend(str(copy)))
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            frame = study.trials_dataframe(attrs=("number", "state", "value", "params"))
            if frame.empty:
                frame = pd.DataFrame(columns=["number", "state", "value"])
            frame = frame[frame["state"] == "COMPLETE"].reset_index(drop=True)
            frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
            imp, method = _importances(study, frame)
            out[summary.study_name] = StudyHistory(
                family=summary.study_name,
                direction=study.direction.name.lower(),
                trials=frame,
                importances=imp,
                importance_method=method,
            )
    return out


def running_best(values: np.ndarray, direction: str) -> np.ndarray:
    """Best value so far after each trial (``maximize`` or ``minimize``)."""
    v = np.asarray(values, dtype=float)
    return np.fmax.accumulate(v) if direction == "maximize" else np.fmin.accumulate(v)

"""Search vs the paper's hand-tuning: each family's searched winner against its paper-configuration trial.

The searcher enqueues every family's paper configuration (its ``default_params()``) as the first trial of its
study (:mod:`dvt_search.runtime.searcher`; leaderboard column ``paper_config``). That trial is fixed before
any data is seen, so scoring it on the test partition, beside the winner, is a pre-specified comparison and
not a second look at test: nothing is chosen from its test result. Per family:

* the clustered paired test (Obuchowski 1997, patients as clusters; :func:`~dvt_search.stats.clustered.clustered_test`)
  of winner minus paper setting on the same test slices, Holm-adjusted over ONE family: the families'
  winner-vs-paper comparisons of this table;
* the winner's curse: the winner is the best of ``n_trials`` validation scores, so its validation AUC is
  biased upward; its validation - test gap is shown beside the paper setting's (not selected, so unbiased).

The section is stored in ``selection.json`` under ``search_vs_paper``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.data.splits import Splits
from dvt_search.families import get as get_family
from dvt_search.rundir.layout import RunDir
from dvt_search.selection.evaluate import Predictions, predict_winners
from dvt_search.selection.selector import USABLE_STATUSES, Choice, Winner
from dvt_search.stats.clustered import clustered_auc_ci, clustered_test
from dvt_search.stats.measures import auc, holm

#: The multiplicity family of the search-vs-paper table.
PAPER_FAMILY = "the families' searched-winner vs paper-setting comparisons"
PRESPECIFIED_NOTE = (
    "Each family's paper configuration (its default_params(), the paper's settings) was enqueued as the "
    "first trial of its search, fixed before any data was seen; its test score is therefore a pre-specified "
    "comparison, not a second look at the test set: nothing is selected from it."
)


def paper_rows(leaderboard: pd.DataFrame) -> dict[str, pd.Series]:
    """The paper-configuration trial of each family in the leaderboard (first by trial id if several)."""
    if not len(leaderboard) or "paper_config" not in leaderboard.columns:
        return {}
    rows = leaderboard[leaderboard["paper_config"].fillna(False).astype(bool)]
    return {str(f): g.sort_values("trial_id").iloc[0] for f, g in rows.groupby("family", sort=True)}


def _has_paper_configuration(family: str) -> bool:
    """Whether the family has a paper configuration (unknown families are assumed to: the old wording)."""
    try:
        return bool(get_family(family).paper_configuration)
    except KeyError:
        return True


def _unusable(row: pd.Series, col: str) -> str:
    if row["status"] not in USABLE_STATUSES:
        return f"the paper trial {row['ended']}"
    if not bool(row["has_checkpoint"]):
        return "the paper trial finished without a checkpoint"
    try:
        value = float(row.get(col))
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        return f"the paper trial has no finite {col[5:]}"
    return ""


def _as_winner(row: pd.Series, col: str) -> Winner:
    import json

    return Winner(
        family=str(row["family"]),
        trial_id=str(row["trial_id"]),
        value=float(row[col]),
        params=json.loads(row["params"]) if isinstance(row["params"], str) else {},
        epochs=int(row["epochs"]),
        best_epoch=None if pd.isna(row["best_epoch"]) else int(row["best_epoch"]),
        cost_s=float(row["cost_s"]),
        n_params=None,
        checkpoint=str(row["checkpoint"]),
    )


def score_paper_configs(
    run: RunDir,
    leaderboard: pd.DataFrame,
    choice: Choice,
    manifest_path: Path,
    splits: Splits,
    preds: Predictions,
    *,
    level: float = 0.95,
    device: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Score each family's paper trial on test beside its winner (see the module docstring).

    Args:
        run: the run directory.
        leaderboard: the run's leaderboard (:func:`dvt_search.selection.leaderboard.collect`).
        choice: the selection on validation.
        manifest_path, splits: the verified data (as for the winners).
        preds: the winners' validation and test predictions.
        level: confidence level of the intervals (alpha = 1 - level for the Holm-adjusted test).
    """
    col = f"best_{choice.metric}"
    rows = paper_rows(leaderboard)
    out: dict[str, dict[str, Any]] = {}
    to_score: dict[str, Winner] = {}
    for fam, fc in choice.families.items():
        row = rows.get(fam)
        entry: dict[str, Any] = {"n_trials": fc.n_trials}
        out[fam] = entry
        if row is None:
            entry["status"] = (
                "no paper-configuration trial in this run"
                if _has_paper_configuration(fam)
                else "the family is not in the paper (no paper configuration)"
            )
            continue
        entry.update(
            paper_trial_id=str(row["trial_id"]),
            paper_ended=str(row["ended"]),
            paper_outside_space=_outside(run, fam, str(row["trial_id"])),
        )
        why = _unusable(row, col)
        if why:
            entry["status"] = why
        elif fc.winner is None:
            entry["status"] = "the family has no selected model"
        elif fc.winner.trial_id == entry["paper_trial_id"]:
            entry["status"] = "the paper setting is the selected model"
        else:
            entry["status"] = "compared"
            to_score[fam] = _as_winner(row, col)
    paper_preds = (
        predict_winners(
            run, to_score, manifest_path, splits, metric=choice.metric, device=device, batch_size=batch_size
        )
        if to_score
        else None
    )
    for fam, entry in out.items():
        w = choice.families[fam].winner
        if w is None or entry["status"] not in ("compared", "the paper setting is the selected model"):
            continue
        wt = _sorted(preds.test, fam)
        wv = _sorted(preds.val, fam)
        y, pid = wt["label"].to_numpy(), wt["patient_id"].to_numpy()
        entry["winner"] = _side(w.trial_id, w.value, wv, wt, level)
        if entry["status"] != "compared":
            continue
        pt, pv = _sorted(paper_preds.test, fam), _sorted(paper_preds.val, fam)
        if not pt[["row", "label"]].equals(wt[["row", "label"]]):
            raise ValueError(f"{fam}: paper-trial test predictions do not cover the winner's slices")
        entry["paper"] = _side(entry["paper_trial_id"], float(to_score[fam].value), pv, pt, level)
        if len(np.unique(y)) < 2:
            entry["test"] = None
            continue
        entry["test"] = clustered_test(
            y, wt["score"].to_numpy(), pt["score"].to_numpy(), pid, level
        ).as_dict()
    compared = [f for f, e in out.items() if e.get("test")]
    p = [float(out[f]["test"]["p"]) for f in compared]
    adj = holm(np.array([v if math.isfinite(v) else 1.0 for v in p])) if p else np.array([])
    for f, raw, a in zip(compared, p, adj):
        out[f]["p_holm"] = float(a) if math.isfinite(raw) else float("nan")
        out[f]["significant"] = bool(math.isfinite(raw) and a < 1.0 - level)
    return {
        "note": PRESPECIFIED_NOTE,
        "level": level,
        "test": "clustered paired test (Obuchowski 1997, patients as clusters), winner minus paper setting",
        "multiplicity": {"method": "holm", "family": PAPER_FAMILY, "m": len(compared)},
        "families": out,
    }


def _outside(run: RunDir, fam: str, trial_id: str) -> list[str]:
    rec = run.read_trial(fam, trial_id)
    return list(rec.paper_outside_space) if rec is not None else []


def _sorted(frame: pd.DataFrame, fam: str) -> pd.DataFrame:
    return frame[frame["family"] == fam].sort_values("row").reset_index(drop=True)


def _side(
    trial_id: str, recorded: float, val: pd.DataFrame, test: pd.DataFrame, level: float
) -> dict[str, Any]:
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    two = len(np.unique(y)) == 2
    test_auc = clustered_auc_ci(y, s, test["patient_id"].to_numpy(), level).as_dict() if two else None
    val_auc = auc(val["label"], val["score"]) if val["label"].nunique() == 2 else float("nan")
    gap = val_auc - test_auc["estimate"] if test_auc else float("nan")
    return {
        "trial_id": trial_id,
        "val_recorded": recorded,
        "val_auc": val_auc,
        "test_auc": test_auc,
        "val_minus_test": gap,
    }

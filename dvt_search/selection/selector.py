"""Model selection on VALIDATION metrics only: the best trial per family and overall.

Rules (all decided from the leaderboard, before any test data is read):

* Candidates are trials that finished (``completed`` or ``stopped`` early by the scheduler), have a
  checkpoint and a finite value of the selection metric at their best epoch. Failed, unfinished and
  checkpoint-less trials are never selected.
* The winner maximises (``mode="max"``) or minimises (``"min"``) the metric, compared after rounding to
  ``TIE_DECIMALS`` decimals so that float noise cannot break a tie.
* Ties go to the cheaper model, in this order: fewer compute seconds (``cpu_s + gpu_s``), then fewer
  parameters (read from the checkpoint; unknown counts sort last), then fewer epochs, then the smaller
  trial id (so the choice is deterministic).
* A family without a candidate is reported with the reason (no trials / all failed / no checkpoint...),
  never an error. Every result carries how many trials were tried, per family and in total.

The test partition is touched afterwards, once, for the winners only (:mod:`.evaluate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

TIE_DECIMALS = 9
TIE_BREAK = (
    "equal metric (rounded to 9 decimals) -> fewer compute seconds (cpu_s + gpu_s) -> fewer parameters "
    "(unknown last) -> fewer epochs -> smaller trial id"
)
USABLE_STATUSES = ("completed", "stopped")


@dataclass
class Winner:
    """The selected trial of one family."""

    family: str
    trial_id: str
    value: float
    params: dict[str, Any]
    epochs: int
    best_epoch: int | None
    cost_s: float
    n_params: int | None
    checkpoint: str  # relative to the run directory
    tied_with: list[str] = field(default_factory=list)  # other trial ids with the same metric value


@dataclass
class FamilyChoice:
    """Selection outcome of one family with its trial counts."""

    family: str
    n_trials: int
    n_completed: int
    n_stopped: int
    n_failed: int
    n_unfinished: int
    n_candidates: int
    winner: Winner | None
    note: str = ""


@dataclass
class Choice:
    """Per-family winners and the overall winner, by ``metric`` (``mode``) on validation data."""

    metric: str
    mode: str
    n_trials: int
    families: dict[str, FamilyChoice]
    overall: Winner | None
    tie_break: str = TIE_BREAK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def winners(self) -> dict[str, Winner]:
        return {f: c.winner for f, c in self.families.items() if c.winner is not None}


NParams = Callable[[Mapping[str, Any]], "int | None"]


def _no_candidate_note(counts: Mapping[str, int], n_ckpt_free: int, n_no_metric: int) -> str:
    if counts["n_trials"] == 0:
        return "no trials were run for this family"
    if counts["n_failed"] == counts["n_trials"]:
        return f"all {counts['n_trials']} trial(s) failed"
    parts = [f"{counts['n_failed']} failed", f"{counts['n_unfinished']} unfinished"]
    if n_ckpt_free:
        parts.append(f"{n_ckpt_free} finished without a checkpoint")
    if n_no_metric:
        parts.append(f"{n_no_metric} finished without a finite metric")
    return "no usable trial (" + ", ".join(parts) + ")"


def _rank(rows: pd.DataFrame, metric_col: str, mode: str, n_params: NParams | None) -> pd.DataFrame:
    rows = rows.copy()
    sign = -1.0 if mode == "max" else 1.0
    rows["_key"] = (rows[metric_col].astype(float) * sign).round(TIE_DECIMALS)
    top = rows["_key"].min()
    tied = rows["_key"] == top
    rows["_n_params"] = math.inf
    if n_params is not None and tied.sum() > 1:  # load checkpoints only when a parameter count can matter
        rows.loc[tied, "_n_params"] = [
            math.inf if (n := n_params(r)) is None else float(n) for _, r in rows[tied].iterrows()
        ]
    return rows.sort_values(["_key", "cost_s", "_n_params", "epochs", "trial_id"], kind="stable")


def choose(
    leaderboard: pd.DataFrame,
    metric: str = "val_auc",
    mode: str = "max",
    families: Iterable[str] = (),
    n_params: NParams | None = None,
) -> Choice:
    """Pick the best trial per family and overall from a leaderboard (see the module rules).

    Args:
        leaderboard: :func:`dvt_search.selection.leaderboard.collect` output.
        metric: validation metric name (the leaderboard column ``best_<metric>`` is compared).
        mode: ``"max"`` or ``"min"``.
        families: families expected in the run (listed even when they have no trial).
        n_params: returns a trial row's parameter count (or ``None``); used only to break ties.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    col = f"best_{metric}"
    lb = leaderboard
    if len(lb) and col not in lb.columns:
        known = sorted(c[5:] for c in lb.columns if c.startswith("best_") and c != "best_epoch")
        raise KeyError(f"no trial reported metric {metric!r}; metrics in this run: {known}")
    names = list(dict.fromkeys([*families, *sorted(lb["family"].unique())] if len(lb) else list(families)))
    out: dict[str, FamilyChoice] = {}
    for fam in names:
        rows = lb[lb["family"] == fam] if len(lb) else lb
        status = rows["status"] if len(rows) else pd.Series(dtype=str)
        counts = {
            "n_trials": len(rows),
            "n_completed": int((status == "completed").sum()),
            "n_stopped": int((status == "stopped").sum()),
            "n_failed": int((status == "failed").sum()),
            "n_unfinished": int(status.isin(["running", "pending"]).sum()),
        }
        finished = rows[status.isin(USABLE_STATUSES)] if len(rows) else rows
        with_ckpt = finished[finished["has_checkpoint"].astype(bool)] if len(finished) else finished
        cand = (
            with_ckpt[pd.to_numeric(with_ckpt[col], errors="coerce").notna()] if len(with_ckpt) else with_ckpt
        )
        cand = cand[cand[col].astype(float).map(math.isfinite)] if len(cand) else cand
        if not len(cand):
            note = _no_candidate_note(counts, len(finished) - len(with_ckpt), len(with_ckpt) - len(cand))
            out[fam] = FamilyChoice(fam, **counts, n_candidates=0, winner=None, note=note)
            continue
        ranked = _rank(cand, col, mode, n_params)
        best = ranked.iloc[0]
        tied = ranked[ranked["_key"] == best["_key"]]["trial_id"].tolist()[1:]
        winner = Winner(
            family=fam,
            trial_id=str(best["trial_id"]),
            value=float(best[col]),
            params=_params(best),
            epochs=int(best["epochs"]),
            best_epoch=None if pd.isna(best["best_epoch"]) else int(best["best_epoch"]),
            cost_s=float(best["cost_s"]),
            n_params=None if math.isinf(best["_n_params"]) else int(best["_n_params"]),
            checkpoint=str(best["checkpoint"]),
            tied_with=[str(t) for t in tied],
        )
        note = f"tie on {metric} with {len(tied)} other trial(s), broken by cost" if tied else ""
        out[fam] = FamilyChoice(fam, **counts, n_candidates=len(cand), winner=winner, note=note)
    return Choice(
        metric=metric,
        mode=mode,
        n_trials=len(lb),
        families=out,
        overall=_overall([c.winner for c in out.values() if c.winner is not None], mode, n_params),
    )


def _params(row: pd.Series) -> dict[str, Any]:
    return dict(json.loads(row["params"])) if isinstance(row["params"], str) else {}


def _overall(winners: list[Winner], mode: str, n_params: NParams | None) -> Winner | None:
    if not winners:
        return None
    sign = -1.0 if mode == "max" else 1.0
    top = min(round(sign * w.value, TIE_DECIMALS) for w in winners)
    tied = [w for w in winners if round(sign * w.value, TIE_DECIMALS) == top]
    if n_params is not None and len(tied) > 1:
        for w in tied:
            if w.n_params is None:
                w.n_params = n_params(
                    {"family": w.family, "trial_id": w.trial_id, "checkpoint": w.checkpoint}
                )

    def key(w: Winner) -> tuple[Any, ...]:
        n = math.inf if w.n_params is None else w.n_params
        return (round(sign * w.value, TIE_DECIMALS), w.cost_s, n, w.epochs, w.family, w.trial_id)

    return min(winners, key=key)


SELECTION_FORMAT = "dvt-search-selection/1"

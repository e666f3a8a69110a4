"""Everything the report sections read from a selected run, loaded once, plus cell formatting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from dvt_search.report.figures import colours
from dvt_search.report.history import read_history
from dvt_search.rundir.layout import RunDir
from dvt_search.selection.documents import read_comparison, read_selection, read_test_log
from dvt_search.selection.evaluate import read_predictions
from dvt_search.selection.leaderboard import collect, read_leaderboard
from dvt_search.stats.bootstrap import CI

Curve = tuple[str, list[dict[str, Any]], bool]  # trial id, per-epoch metrics, is the family's winner


class ReportContext:
    """Selection, comparison, predictions, test-evaluation log, leaderboard, Optuna history and CAM cases.

    Args:
        run_path: the run directory (after ``dvt-search select``).
        manifest: manifest path for the CAM overlays when it moved since the search.
        cam_per_family: mis-classified slices shown per CNN winner (0 = no CAM overlays).
    """

    def __init__(self, run_path: Path, manifest: str | None = None, cam_per_family: int = 4) -> None:
        self.run_path = Path(run_path)
        self.selection = read_selection(self.run_path)
        evaluated = bool((self.selection.get("test") or {}).get("evaluated"))
        try:
            if not evaluated:  # a --no-test selection: a comparison left from before belongs to another one
                raise FileNotFoundError
            self.comparison: dict[str, Any] = read_comparison(self.run_path)
            self.test = read_predictions(self.run_path, "test")
        except FileNotFoundError:
            self.comparison = {"families": {}, "pairs": [], "vs_reference": []}
            self.test = pd.DataFrame()
        self.test_log = read_test_log(self.run_path)
        try:
            self.leaderboard = read_leaderboard(self.run_path)
        except FileNotFoundError:
            self.leaderboard = collect(self.run_path)
        self.families = list(self.selection["families"])
        self.palette = colours(self.families)
        self.history = read_history(self.run_path)
        self.cases: dict[str, list[dict[str, Any]]] = {}
        self.cam_notes: list[str] = []
        if self.comparison["families"] and cam_per_family > 0:
            from dvt_search.report.cam_cases import misclassified_cases

            self.cases, self.cam_notes = misclassified_cases(
                self.run_path,
                self.selection,
                self.comparison,
                self.test,
                manifest=manifest,
                per_family=cam_per_family,
            )

    @property
    def run_name(self) -> str:
        return str(self.selection["run"])

    @property
    def metric_label(self) -> str:
        m = self.selection["metric"]
        return "AUC" if m == "val_auc" else m

    def stats(self, fam: str) -> dict[str, Any] | None:
        """The comparison entry of a family's winner (None when it was not evaluated)."""
        return self.comparison["families"].get(fam)

    def winner(self, fam: str) -> dict[str, Any] | None:
        return self.selection["families"].get(fam, {}).get("winner")

    def curves(self, fam: str) -> list[Curve]:
        """Per-epoch metrics of every trial of ``fam`` (from ``metrics.jsonl``)."""
        run = RunDir(self.run_path)
        w = self.winner(fam)
        rows = self.leaderboard[self.leaderboard["family"] == fam]
        return [(t, run.read_epochs(fam, t), bool(w and w["trial_id"] == t)) for t in rows["trial_id"]]


def ci(d: dict[str, Any] | None, digits: int = 2) -> str:
    """``est [lo, hi]`` of a stored interval; ``est (interval not estimable)``; ``n/a`` when absent."""
    if not d:
        return "n/a"
    return CI.from_dict(d).fmt(digits)


def pval(v: float, floor: float | None = None, at_floor: bool = False) -> str:
    """A p-value cell: ``floor (floor)`` when floored at the smallest value the data support; ``n/a``.

    ``<0.001`` is printed only for a p-value below 0.001 that is not at its floor.
    """
    if not math.isfinite(v):
        return "n/a"
    if at_floor and floor is not None:
        return f"{floor:.2g} (floor)"
    return f"{v:.3f}" if v >= 0.001 else "<0.001"


def hours(seconds: float) -> str:
    h = float(seconds) / 3600.0
    return f"{h:.2f}" if h >= 0.01 or h == 0 else f"{h:.1e}"

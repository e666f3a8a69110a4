"""Test once, recorded: the append-only log of every evaluation of a run's test set.

Every ``dvt-search select`` that scores the test partition appends one record to
``RunDir.test_log_file``: when, with which settings (selection metric and mode, fixed sensitivities and
specificities, bootstrap resamples, seed, level), which families and trial ids were evaluated, and the
sha256 of the test predictions (:func:`predictions_hash`) and of the comparison it produced.

The rule (:func:`check`), applied before anything in the run directory is written:

* A run whose test set was never evaluated is evaluated (and recorded).
* The same settings with the same winners as an earlier evaluation are **allowed** without ``--force``:
  the models and the statistics are a deterministic function of them, so the evaluation reproduces the
  earlier numbers and the test set informs no new choice. It is still recorded (``reproduces`` names the
  earlier evaluation; a differing predictions hash is flagged in the report).
* Anything else — other settings, other winners (e.g. after more trials), or ``--no-test`` on a run whose
  test set was evaluated (it would replace the selection the recorded evaluation belongs to) — is
  **refused** with a one-line error unless ``force``; a forced evaluation is recorded as such and the report
  lists every evaluation with a warning that the test set was touched more than once.

Runs selected before the log existed hold a ``comparison.json`` but no log: their evaluation is
reconstructed from ``selection.json`` and ``comparison.json`` (``reconstructed: true``) and written as the
first line of the log when the next evaluation is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dvt_search.rundir import RunDir
from dvt_search.selection.evaluate import SelectionError

#: The settings that define an evaluation (compared to decide whether a new one repeats an old one).
SETTINGS = ("metric", "mode", "sensitivities", "specificities", "n_resamples", "seed", "level")


class TestAlreadyEvaluated(SelectionError):
    """The run's test set was evaluated before and this evaluation would differ (pass ``--force``)."""

    __test__ = False  # not a pytest test class


def settings(
    metric: str,
    mode: str,
    sensitivities: Any,
    specificities: Any,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, Any]:
    """The settings of one evaluation in their recorded (JSON) form."""
    return {
        "metric": metric,
        "mode": mode,
        "sensitivities": [float(v) for v in sensitivities],
        "specificities": [float(v) for v in specificities],
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "level": float(level),
    }


def predictions_hash(frame: pd.DataFrame) -> str:
    """sha256 of the test predictions in a canonical text form (rows sorted, scores to 17 digits)."""
    cols = [
        c for c in ("family", "trial_id", "row", "scan_id", "slice_index", "label", "score") if c in frame
    ]
    canon = frame[cols].sort_values(["family", "row"] if "row" in cols else cols, kind="stable")
    text = canon.to_csv(index=False, float_format="%.17g", lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()


def _reconstructed(run: RunDir) -> dict[str, Any] | None:
    """The evaluation of a run selected before the log existed (from its selection and comparison)."""
    if not run.comparison_file.is_file() or not run.selection_file.is_file():
        return None
    sel, comp = run.read_doc(run.selection_file), run.read_doc(run.comparison_file)
    test = sel.get("test") or {}
    rec: dict[str, Any] = {
        "n": 1,
        "time": test.get("evaluated_at") or sel.get("created"),
        "settings": {
            "metric": sel.get("metric"),
            "mode": sel.get("mode"),
            "sensitivities": comp.get("sensitivities"),
            "specificities": comp.get("specificities"),
            "n_resamples": comp.get("n_resamples"),
            "seed": comp.get("seed"),
            "level": comp.get("level"),
        },
        "families": {
            f: c["winner"]["trial_id"] for f, c in sel.get("families", {}).items() if c.get("winner")
        },
        "forced": False,
        "reproduces": None,
        "reconstructed": True,
    }
    tp = run.predictions_file("test")
    rec["predictions_sha256"] = predictions_hash(run.read_frame(tp)) if tp.is_file() else None
    return rec


def previous(run: RunDir) -> list[dict[str, Any]]:
    """The recorded evaluations of the run (a reconstructed one for a run from before the log)."""
    log = run.read_test_log()
    if log:
        return log
    rec = _reconstructed(run)
    return [rec] if rec else []


def _describe(s: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={s.get(k)}" for k in SETTINGS)


def _differences(old: Mapping[str, Any], settings_: Mapping[str, Any], winners: Mapping[str, str]) -> str:
    parts = [
        f"{k} {old['settings'].get(k)} -> {settings_[k]}"
        for k in SETTINGS
        if old["settings"].get(k) != settings_[k]
    ]
    if dict(old.get("families") or {}) != dict(winners):
        parts.append(f"winners {old.get('families')} -> {dict(winners)}")
    return "; ".join(parts)


def check(
    run: RunDir,
    earlier: list[dict[str, Any]],
    settings_: Mapping[str, Any],
    winners: Mapping[str, str],
    *,
    evaluate_test: bool,
    force: bool,
) -> int | None:
    """Apply the rule of the module docstring: the number of the evaluation this one reproduces, or None.

    Raises :class:`TestAlreadyEvaluated` (one line) when the evaluation is refused.
    """
    if not earlier:
        return None
    same = [r for r in earlier if r.get("settings") == dict(settings_) and r.get("families") == dict(winners)]
    if evaluate_test and same:
        return int(same[-1]["n"])
    if force:
        return None
    last = earlier[-1]
    head = (
        f"{run.path}: the test set was already evaluated {len(earlier)} time(s), last at {last.get('time')} "
        f"({_describe(last['settings'])})"
    )
    if not evaluate_test:
        raise TestAlreadyEvaluated(
            f"{head}; re-selecting without evaluating the test set (--no-test) would replace the selection "
            "that evaluation belongs to. Pass --force to do it anyway"
        )
    raise TestAlreadyEvaluated(
        f"{head}; this one differs ({_differences(last, settings_, winners)}). Looking at the test set again "
        "after seeing its results biases them: pass --force to evaluate anyway (it is recorded and the report "
        "lists every evaluation)"
    )


def record(
    run: RunDir,
    earlier: list[dict[str, Any]],
    *,
    time: str,
    settings_: Mapping[str, Any],
    winners: Mapping[str, str],
    predictions_sha256: str,
    comparison_sha256: str,
    forced: bool,
    reproduces: int | None,
) -> dict[str, Any]:
    """Append this evaluation to the log (after a reconstructed earlier one, when the log was absent)."""
    if earlier and earlier[0].get("reconstructed") and not run.read_test_log():
        run.append_test_log(earlier[0])
    rec = {
        "n": len(earlier) + 1,
        "time": time,
        "settings": dict(settings_),
        "families": dict(winners),
        "predictions_sha256": predictions_sha256,
        "comparison_sha256": comparison_sha256,
        "forced": bool(forced and bool(earlier) and reproduces is None),
        "reproduces": reproduces,
    }
    if reproduces is not None:
        ref = next((r for r in earlier if r.get("n") == reproduces), {})
        rec["same_predictions"] = ref.get("predictions_sha256") == predictions_sha256
    run.append_test_log(rec)
    return rec


def summary(log: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the test set was evaluated and how many of those evaluations were genuinely distinct.

    Distinct = not a reproduction (same settings, winners and test predictions) of an earlier one.
    """
    distinct = [r for r in log if r.get("reproduces") is None or not r.get("same_predictions", False)]
    return {
        "n_evaluations": len(log),
        "n_distinct": len(distinct),
        "n_forced": sum(bool(r.get("forced")) for r in log),
        "touched_more_than_once": len(distinct) > 1,
    }

"""The exam-level (scan-level) primary endpoint: is DVT present in this scan?

Pre-specified, and decided on VALIDATION scans only before anything is read from test:

1. **Aggregation.** A scan's score aggregates its slice scores by ``max``, ``mean`` or the mean of the top
   ``k`` (:func:`~dvt_search.stats.measures.aggregate_scans`); a scan is positive when any of its slices
   is. The aggregation with the highest validation scan AUC is used (rounded to 9 decimals; ties go to
   ``max``, then ``mean``, then ``topk``); with one class among the validation scans, ``max``.
2. **Thresholds** on the validation scan scores of that aggregation: Youden's J (the operating point,
   the one exported with the model as ``scan_threshold``), the highest threshold reaching each fixed
   sensitivity, and the lowest keeping each fixed specificity.
3. **Test.** Those thresholds are applied unchanged to the test scans: sensitivity, specificity, PPV and
   NPV (the rule-out figure) with percentile intervals of the patient bootstrap (scans resampled with
   their patient, stratified by patient DVT status — the same resamples as the slice-level intervals);
   the test scan AUC of the chosen aggregation with its clustered interval (Obuchowski, scans within
   patients).

Counts of patients, DVT-positive patients, scans and DVT-positive scans per partition come with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.engine.metrics import threshold_at_sensitivity, youden_threshold
from dvt_search.stats.bootstrap import CI, PatientBootstrap
from dvt_search.stats.clustered import METHOD_AUC, clustered_auc_ci
from dvt_search.stats.measures import (
    AGGREGATIONS,
    aggregate_scans,
    auc,
    operating_point,
    threshold_at_specificity,
)
from dvt_search.stats.usefulness import brier_summary, decision_curve, recalibration

EXAM_RULE = (
    "scan score = the aggregation of its slice scores (max, mean or top-k mean) with the highest "
    "VALIDATION scan AUC (ties: max, then mean, then top-k); a scan is DVT-positive when any of its slices "
    "is; thresholds chosen on validation scans (Youden's J = the operating point; the highest threshold "
    "reaching each fixed sensitivity; the lowest keeping each fixed specificity), applied unchanged to test"
)
EXAM_INTERVAL = (
    "percentile intervals of the patient bootstrap: scans resampled with their patient, stratified by "
    "patient DVT status (the same resamples as the slice-level intervals); scan AUC: clustered "
    "(Obuchowski), scans within patients"
)
_RATES = {"sensitivity": "recall", "specificity": "specificity", "ppv": "precision", "npv": "npv"}


def partition_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Patients, DVT-positive patients, scans, DVT-positive scans, slices and DVT slices of slice rows."""
    if frame.empty:
        return dict.fromkeys(
            ("n_patients", "n_positive_patients", "n_scans", "n_positive_scans", "n_slices", "n_positive"), 0
        )
    pos = frame[frame["label"] == 1]
    return {
        "n_patients": int(frame["patient_id"].nunique()),
        "n_positive_patients": int(pos["patient_id"].nunique()),
        "n_scans": int(frame["scan_id"].nunique()),
        "n_positive_scans": int(pos["scan_id"].nunique()),
        "n_slices": len(frame),
        "n_positive": len(pos),
    }


def choose_aggregation(val: pd.DataFrame, k: int = 3) -> dict[str, Any]:
    """The aggregation with the best validation scan AUC (ties in :data:`AGGREGATIONS` order)."""
    aucs: dict[str, float] = {}
    for how in AGGREGATIONS:
        scans = aggregate_scans(val, how, k=k)
        aucs[how] = auc(scans["label"], scans["score"]) if scans["label"].nunique() == 2 else float("nan")
    finite = {h: round(v, 9) for h, v in aucs.items() if np.isfinite(v)}
    if not finite:
        return {"how": "max", "k": k, "val_auc": aucs, "note": "validation scans hold one class: max used"}
    best = max(finite.values())
    how = next(h for h in AGGREGATIONS if finite.get(h) == best)
    return {"how": how, "k": k, "val_auc": aucs, "note": ""}


def scan_thresholds(
    val_scans: pd.DataFrame, sensitivities: Sequence[float], specificities: Sequence[float]
) -> dict[str, Any]:
    """Youden, fixed-sensitivity and fixed-specificity thresholds on validation scan scores."""
    y, s = val_scans["label"].to_numpy(), val_scans["score"].to_numpy()
    return {
        "youden": float(youden_threshold(y, s)),
        "at_sensitivity": {str(float(t)): float(threshold_at_sensitivity(y, s, t)) for t in sensitivities},
        "at_specificity": {str(float(t)): float(threshold_at_specificity(y, s, t)) for t in specificities},
    }


def _operating(scans: pd.DataFrame, boot: PatientBootstrap, threshold: float) -> dict[str, Any]:
    y, s = scans["label"].to_numpy(), scans["score"].to_numpy()
    op = operating_point(y, s, threshold)
    rates = boot.rate_samples(y, s, threshold)
    out: dict[str, Any] = {"threshold": float(threshold), "tp": op.tp, "fp": op.fp, "fn": op.fn, "tn": op.tn}
    for name, attr in _RATES.items():
        out[name] = boot.interval(getattr(op, attr), rates[attr]).as_dict()
    return out


def scan_bootstrap(
    test: pd.DataFrame, n_resamples: int, seed: int, level: float, k: int = 3
) -> PatientBootstrap:
    """The patient bootstrap over the test scans (rows in :func:`aggregate_scans` order)."""
    scans = aggregate_scans(test, "max", k=k)
    return PatientBootstrap(
        scans["patient_id"], n_resamples=n_resamples, seed=seed, level=level, strata=scans["label"]
    )


def exam_endpoint(
    val: pd.DataFrame,
    test: pd.DataFrame,
    boot: PatientBootstrap,
    *,
    sensitivities: Sequence[float] = (0.8, 0.9),
    specificities: Sequence[float] = (0.9,),
    k: int = 3,
    level: float = 0.95,
) -> dict[str, Any]:
    """The exam-level endpoint of one model from its validation and test slice predictions.

    ``boot`` is :func:`scan_bootstrap` of the test slices (shared by every model, so results are paired).
    """
    agg = choose_aggregation(val, k)
    how = agg["how"]
    vs, ts = aggregate_scans(val, how, k=k), aggregate_scans(test, how, k=k)
    if boot.n_rows != len(ts):
        raise ValueError(f"scan bootstrap built for {boot.n_rows} scans, the test predictions hold {len(ts)}")
    out: dict[str, Any] = {
        "aggregation": agg,
        "counts": {"val": partition_counts(val), "test": partition_counts(test)},
    }
    if vs["label"].nunique() < 2:
        out["note"] = "no scan threshold: the validation scans hold one class only"
        return out
    th = scan_thresholds(vs, sensitivities, specificities)
    out["thresholds"] = th
    yt, st = ts["label"].to_numpy(), ts["score"].to_numpy()
    if ts["label"].nunique() == 2:
        scan_auc = clustered_auc_ci(yt, st, ts["patient_id"], level)
    else:
        nan = float("nan")
        scan_auc = CI(nan, nan, nan, level, method=METHOD_AUC, note="one class among the test scans")
    out["test"] = {
        "auc": scan_auc.as_dict(),
        "youden": _operating(ts, boot, th["youden"]),
        "at_sensitivity": [
            {"target": float(t), **_operating(ts, boot, v)} for t, v in th["at_sensitivity"].items()
        ],
        "at_specificity": [
            {"target": float(t), **_operating(ts, boot, v)} for t, v in th["at_specificity"].items()
        ],
    }
    out["calibration"] = {**brier_summary(yt, st), **recalibration(yt, st, boot)}
    out["decision_curve"] = decision_curve(yt, st)
    return out

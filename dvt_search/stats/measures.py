"""Honest statistics for comparing the selected models on the test partition.

Everything here is plain NumPy/SciPy on arrays of slice labels, slice scores and the patient (or scan) each
slice belongs to, so it can be checked against independent computations.

* :func:`auc` — ROC AUC as the Mann-Whitney statistic (ties count one half).
* :func:`delong` / :func:`delong_test` — the fast DeLong algorithm (Sun & Xu, 2014) for the covariance of
  correlated AUCs and the paired test of two classifiers scored on the same slices. DeLong treats slices as
  independent; slices of one patient are not, so its p-values are optimistic (a secondary column only).
  Verdicts use the clustered test of :mod:`dvt_search.stats.clustered` (patients as clusters).
* :func:`holm` — Holm step-down adjustment for a family of p-values.
* :func:`choose_thresholds` — operating thresholds chosen on VALIDATION predictions (Youden's J and fixed
  sensitivities, via :mod:`dvt_search.engine.metrics`), only ever applied to test predictions.
* :func:`calibration` — Brier score, reliability-curve bins and expected calibration error.
* :func:`threshold_at_specificity` — the threshold keeping a fixed specificity (chosen on validation).
* :func:`aggregate_scans` / :func:`aggregate_scores` — scan-level scores from slice scores (max / mean /
  top-k mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from dvt_search.engine.metrics import threshold_at_sensitivity, youden_threshold

# ------------------------------------------------------------------------------------------------ AUC


def _as_arrays(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def auc(y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> float:
    """ROC AUC = P(score of a positive > score of a negative) + 0.5 P(tie); NaN with a single class."""
    from dvt_search.engine.metrics import roc_auc

    y, s = _as_arrays(y, s)
    return roc_auc(y, s, warn=False)


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks of ``x`` (1-based; tied values share the mean of their ranks)."""
    return sps.rankdata(x, method="average")


@dataclass(frozen=True)
class DeLong:
    """AUCs of ``k`` classifiers on the same slices and their DeLong covariance matrix ``[k, k]``."""

    aucs: np.ndarray
    cov: np.ndarray


def delong(y: Sequence[int] | np.ndarray, scores: np.ndarray) -> DeLong:
    """Fast DeLong (Sun & Xu 2014): AUCs and their covariance for ``scores[k, n_slices]``.

    Uses the structural components ``V10`` (one per positive) and ``V01`` (one per negative) obtained from
    midranks within the positives, within the negatives and over both, in O(k n log n).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y, _ = _as_arrays(y, scores[0])
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {m} and {n})")
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        tx, ty = _midrank(pos[r]), _midrank(neg[r])
        tz = _midrank(np.concatenate([pos[r], neg[r]]))
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return DeLong(aucs=aucs, cov=s10 / m + s01 / n)


@dataclass(frozen=True)
class PairedTest:
    """DeLong paired comparison of classifier ``a`` against ``b`` on the same slices."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float


def delong_test(y: Sequence[int] | np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> PairedTest:
    """Two-sided DeLong test of H0: AUC(a) == AUC(b) for two score vectors on the same slices."""
    d = delong(y, np.vstack([np.asarray(s_a, float), np.asarray(s_b, float)]))
    diff = float(d.aucs[0] - d.aucs[1])
    var = float(d.cov[0, 0] + d.cov[1, 1] - 2 * d.cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    return PairedTest(float(d.aucs[0]), float(d.aucs[1]), diff, se, float(z), p)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    mult = ok.size - np.arange(ok.size)
    adj = np.maximum.accumulate(np.minimum(1.0, p[order] * mult))
    out[order] = adj
    return out


# ----------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates at one threshold (a slice is called positive when ``score >= threshold``)."""

    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    @property
    def npv(self) -> float:
        """Negative predictive value TN / (TN + FN): the rule-out figure (NaN when nothing is negative)."""
        return self.tn / (self.tn + self.fn) if self.tn + self.fn else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "threshold": self.threshold,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "specificity": self.specificity,
            "npv": self.npv,
        }


def operating_point(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, threshold: float
) -> OperatingPoint:
    """Confusion counts of ``score >= threshold`` against the labels."""
    y, s = _as_arrays(y, s)
    pred = s >= threshold
    return OperatingPoint(
        threshold=float(threshold),
        tp=int((pred & (y == 1)).sum()),
        fp=int((pred & (y == 0)).sum()),
        fn=int((~pred & (y == 1)).sum()),
        tn=int((~pred & (y == 0)).sum()),
    )


@dataclass(frozen=True)
class Thresholds:
    """Operating thresholds chosen on VALIDATION predictions (applied unchanged to test predictions).

    ``youden`` maximises sensitivity + specificity - 1 (the default operating point: the highest such
    threshold); ``at_sensitivity[t]`` is the highest threshold reaching sensitivity >= ``t``.
    """

    youden: float
    at_sensitivity: dict[float, float]

    def as_dict(self) -> dict[str, object]:
        return {"youden": self.youden, "at_sensitivity": {str(k): v for k, v in self.at_sensitivity.items()}}


def threshold_at_specificity(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, specificity: float
) -> float:
    """Lowest threshold whose specificity (``score < threshold`` among negatives) is at least ``specificity``.

    The lowest such threshold keeps the most sensitivity. It is the smallest observed score above the
    ``ceil(specificity * n_negatives)``-th smallest negative score (just above it when none is higher).
    """
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    y, s = _as_arrays(y, s)
    negatives = np.sort(s[y == 0])
    if negatives.size == 0:
        raise ValueError("a threshold at fixed specificity needs negative labels")
    k = max(1, math.ceil(specificity * negatives.size - 1e-9))
    edge = negatives[k - 1]
    above = s[s > edge]
    return float(above.min()) if above.size else float(np.nextafter(edge, np.inf))


def choose_thresholds(
    y_val: Sequence[int] | np.ndarray,
    s_val: Sequence[float] | np.ndarray,
    sensitivities: Sequence[float] = (0.8, 0.9),
) -> Thresholds:
    """Thresholds from validation predictions; raises ``ValueError`` unless both classes are present."""
    y, s = _as_arrays(y_val, s_val)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("choosing a threshold needs both classes in the validation predictions")
    return Thresholds(
        youden=float(youden_threshold(y, s)),
        at_sensitivity={float(t): float(threshold_at_sensitivity(y, s, t)) for t in sensitivities},
    )


# ---------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Brier score, expected calibration error and the reliability-curve bins (uniform on [0, 1])."""

    brier: float
    ece: float
    bins: pd.DataFrame  # columns: lo, hi, count, mean_score, frac_positive


def calibration(
    y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, n_bins: int = 10
) -> Calibration:
    """Brier score and reliability bins of probabilities ``s`` in [0, 1]."""
    y, s = _as_arrays(y, s)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = which == b
        c = int(sel.sum())
        rows.append(
            {
                "lo": edges[b],
                "hi": edges[b + 1],
                "count": c,
                "mean_score": float(s[sel].mean()) if c else float("nan"),
                "frac_positive": float(y[sel].mean()) if c else float("nan"),
            }
        )
    bins = pd.DataFrame(rows)
    filled = bins[bins["count"] > 0]
    ece = float((filled["count"] / y.size * (filled["frac_positive"] - filled["mean_score"]).abs()).sum())
    return Calibration(brier=float(np.mean((s - y) ** 2)), ece=ece, bins=bins)


# ---------------------------------------------------------------------------------------- aggregation

AGGREGATIONS = ("max", "mean", "topk")


def aggregate_scores(scores: Sequence[float] | np.ndarray, how: str = "max", k: int = 3) -> float:
    """The scan score of one scan's slice scores: their max, mean or the mean of the top ``k``."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r} not in {AGGREGATIONS}")
    v = np.asarray(scores, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("a scan score needs at least one slice score")
    if how == "max":
        return float(v.max())
    if how == "mean":
        return float(v.mean())
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    return float(np.sort(v)[::-1][:k].mean())


def aggregate_scans(frame: pd.DataFrame, how: str = "max", k: int = 3) -> pd.DataFrame:
    """Scan-level scores from slice rows (``scan_id``, ``patient_id``, ``label``, ``score``).

    A scan is positive when any of its slices is; its score is the max, the mean or the mean of the top
    ``k`` slice scores. Returns one row per scan: scan_id, patient_id, label, score (sorted by scan_id).
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r} not in {AGGREGATIONS}")
    g = frame.groupby("scan_id", sort=True)
    if how == "max":
        score = g["score"].max()
    elif how == "mean":
        score = g["score"].mean()
    else:
        score = g["score"].apply(lambda v: aggregate_scores(v.to_numpy(), "topk", k))
    out = pd.DataFrame(
        {"patient_id": g["patient_id"].first(), "label": g["label"].max().astype(int), "score": score}
    )
    return out.reset_index()

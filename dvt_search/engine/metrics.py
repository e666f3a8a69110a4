"""Classification and segmentation metrics (numpy only, so they run anywhere the engine runs).

Conventions: ``labels`` are 0/1, ``scores`` are probabilities (or any monotone score), a sample is
predicted positive when ``score >= threshold``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


def _as_arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return y, s


def _single_class(y: np.ndarray, what: str, warn: bool = True) -> bool:
    if y.size == 0 or y.min() == y.max():
        if warn:
            warnings.warn(f"{what} is undefined with a single class in labels; returning nan", stacklevel=3)
        return True
    return False


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` for every distinct score, thresholds descending.

    The first point is ``(0, 0)`` with threshold ``+inf``. Both classes must be present.
    """
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if pos == 0 or neg == 0:
        raise ValueError("roc_curve needs both classes in labels")
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    return fpr, tpr, np.r_[np.inf, s[last_of_run]]


def roc_auc(labels: np.ndarray, scores: np.ndarray, *, warn: bool = True) -> float:
    """Area under the ROC curve: P(positive scores above negative) + 1/2 P(tie), the Mann-Whitney statistic.

    The one AUC of the package (``stats.measures.auc`` and the SIFT family call it). Scores are grouped
    into runs of equal value; each positive counts the negatives strictly below it plus half of those tied
    with it, in exact integer arithmetic up to the final division.

    Args:
        labels: 0/1 labels.
        scores: finite scores (any monotone scale).
        warn: warn (``UserWarning``) when one class is missing.

    Returns:
        The AUC in [0, 1]; ``nan`` when one class is missing.

    Raises:
        ValueError: on labels other than 0/1, non-finite scores or a length mismatch.
    """
    y, s = _as_arrays(labels, scores)
    if _single_class(y, "ROC AUC", warn):
        return math.nan
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # runs of tied scores
    pos = np.add.reduceat(y, starts)
    neg = np.add.reduceat(1 - y, starts)
    below = np.cumsum(neg) - neg  # negatives strictly below each run
    twice = int(np.sum(pos * (2 * below + neg)))  # 2 x (wins + ties / 2), exact
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    return float(twice / (2 * n_pos * n_neg))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (highest such threshold).

    Returns 0.5 (with a warning) when one class is missing, so precision/recall stay defined.
    """
    y, s = _as_arrays(labels, scores)
    if y.size == 0 or y.min() == y.max():
        warnings.warn("Youden threshold undefined with a single class; using 0.5", stacklevel=2)
        return 0.5
    fpr, tpr, thr = roc_curve(y, s)
    j = (tpr - fpr)[1:]  # skip the (0, 0) point whose threshold is +inf
    best = int(np.nonzero(j >= j.max() - 1e-12)[0][0]) + 1  # ties (up to rounding): highest threshold
    return float(thr[best])


def threshold_at_sensitivity(labels: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    """Highest threshold whose sensitivity (recall) is at least ``sensitivity``."""
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    y, s = _as_arrays(labels, scores)
    positives = np.sort(s[y == 1])[::-1]
    if positives.size == 0:
        raise ValueError("threshold_at_sensitivity needs positive labels")
    k = math.ceil(sensitivity * positives.size - 1e-9)
    return float(positives[max(k, 1) - 1])


@dataclass(frozen=True)
class Confusion:
    """Confusion counts (the paper's Fig. 2 layout: rows predicted 1/0, columns actual 1/0)."""

    tp: int
    fp: int
    fn: int
    tn: int

    def as_matrix(self) -> np.ndarray:
        return np.array([[self.tp, self.fp], [self.fn, self.tn]], dtype=np.int64)


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Confusion:
    """Confusion counts of ``scores >= threshold`` against ``labels``."""
    y, s = _as_arrays(labels, scores)
    pred = s >= threshold
    pos = y == 1
    return Confusion(
        tp=int(np.sum(pred & pos)),
        fp=int(np.sum(pred & ~pos)),
        fn=int(np.sum(~pred & pos)),
        tn=int(np.sum(~pred & ~pos)),
    )


def precision_recall(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(precision, recall)`` at ``threshold``; a ratio with a zero denominator is 0.0 (as sklearn)."""
    c = confusion(labels, scores, threshold)
    precision = c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0
    recall = c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0
    return float(precision), float(recall)


def patch_auc(patch_targets: np.ndarray, patch_scores: np.ndarray) -> float:
    """ROC AUC of vein presence over all patch cells of all slices (flattened; paper section 5.4)."""
    return roc_auc(np.asarray(patch_targets).ravel(), np.asarray(patch_scores).ravel())


def dice_per_slice(masks: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Hard Dice ``2|A & B| / (|A| + |B|)`` per slice (first axis); 1.0 when both are empty."""
    a = np.asarray(masks).astype(bool).reshape(len(masks), -1)
    b = np.asarray(predicted).astype(bool).reshape(len(predicted), -1)
    if a.shape != b.shape:
        raise ValueError(f"masks {a.shape} and predictions {b.shape} differ in shape")
    inter = np.sum(a & b, axis=1)
    total = a.sum(axis=1) + b.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return d.astype(np.float64)


def mean_dice(masks: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of :func:`dice_per_slice`."""
    return float(dice_per_slice(masks, predicted).mean())


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC plus precision/recall at the Youden threshold chosen on these same labels (validation)."""
    auc = roc_auc(labels, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thr = youden_threshold(labels, scores)
    precision, recall = precision_recall(labels, scores, thr)
    return {"auc": auc, "precision": precision, "recall": recall, "threshold": thr}

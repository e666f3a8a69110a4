"""Patient-level bootstrap: percentile confidence intervals that respect slice clustering.

Slices of one patient are correlated, so resampling slices would make intervals too narrow. A
:class:`PatientBootstrap` draws patients with replacement (``n_resamples`` times, seeded) and every slice
of a drawn patient enters the resample once per draw. That is a weighting of the original slices by the
draw count of their patient, which lets every statistic be computed for all resamples at once (vectorised,
in chunks) without materialising the resampled data.

Two bootstraps built from the same set of patient ids with the same seed draw identical resamples, so
results for different models (or slice- and scan-level results) are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dvt_search.stats.measures import _as_arrays, auc, operating_point

DEFAULT_RESAMPLES = 2000
_CHUNK = 250  # resamples per vectorised block (bounds memory to ~CHUNK x n_slices floats)


@dataclass(frozen=True)
class CI:
    """A point estimate on the full data with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_valid: int  # resamples in which the statistic was defined

    def as_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_valid": self.n_valid,
        }

    def overlaps(self, other: CI) -> bool:
        return not (self.high < other.low or other.high < self.low)

    def fmt(self, digits: int = 2) -> str:
        if not np.isfinite(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


class PatientBootstrap:
    """Resamples of the patients behind ``n`` rows (slices or scans).

    Args:
        patient_ids: the patient of each row.
        n_resamples: number of bootstrap resamples (>= 2,000 recommended for 95% percentile intervals).
        seed: seed of the resampling.
        level: two-sided confidence level of the intervals.
    """

    def __init__(
        self,
        patient_ids: Sequence[str] | np.ndarray,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        level: float = 0.95,
    ) -> None:
        if n_resamples < 1:
            raise ValueError("n_resamples must be >= 1")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        ids = np.asarray(patient_ids).astype(str)
        self.patients, self.inverse = np.unique(ids, return_inverse=True)
        self.n_rows = ids.size
        self.n_resamples = n_resamples
        self.seed = seed
        self.level = level
        rng = np.random.default_rng(seed)
        p = self.patients.size
        draws = rng.integers(0, p, size=(n_resamples, p))
        self.counts = np.zeros((n_resamples, p), dtype=np.float64)
        np.add.at(self.counts, (np.arange(n_resamples)[:, None], draws), 1.0)

    # --- interval ---------------------------------------------------------------------------------------
    def interval(self, estimate: float, values: np.ndarray) -> CI:
        """Percentile interval of the finite ``values`` around ``estimate``."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return CI(float(estimate), float("nan"), float("nan"), self.level, 0)
        a = (1.0 - self.level) / 2.0
        lo, hi = np.quantile(v, [a, 1.0 - a])
        return CI(float(estimate), float(lo), float(hi), self.level, int(v.size))

    def _check(self, y: np.ndarray) -> None:
        if y.size != self.n_rows:
            raise ValueError(f"bootstrap built for {self.n_rows} rows, got {y.size}")

    # --- statistics for all resamples --------------------------------------------------------------------
    def auc_samples(self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> np.ndarray:
        """AUC in every resample (NaN where a resample holds one class only)."""
        y, s = _as_arrays(y, s)
        self._check(y)
        order = np.argsort(s, kind="mergesort")
        ys, ss, pat = y[order], s[order], self.inverse[order]
        starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # groups of tied scores
        out = np.empty(self.n_resamples)
        for c0 in range(0, self.n_resamples, _CHUNK):
            w = self.counts[c0 : c0 + _CHUNK][:, pat]
            pos = np.add.reduceat(w * ys, starts, axis=1)
            neg = np.add.reduceat(w * (1 - ys), starts, axis=1)
            below = np.cumsum(neg, axis=1) - neg
            num = (pos * (below + 0.5 * neg)).sum(axis=1)
            den = pos.sum(axis=1) * neg.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[c0 : c0 + _CHUNK] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return out

    def rate_samples(
        self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, threshold: float
    ) -> dict[str, np.ndarray]:
        """Precision, recall and specificity of ``score >= threshold`` in every resample."""
        y, s = _as_arrays(y, s)
        self._check(y)
        pred = s >= threshold
        per = {
            k: np.bincount(self.inverse, weights=m.astype(float), minlength=self.patients.size)
            for k, m in {
                "tp": pred & (y == 1),
                "fp": pred & (y == 0),
                "fn": ~pred & (y == 1),
                "tn": ~pred & (y == 0),
            }.items()
        }
        c = {k: self.counts @ v for k, v in per.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "precision": c["tp"] / (c["tp"] + c["fp"]),
                "recall": c["tp"] / (c["tp"] + c["fn"]),
                "specificity": c["tn"] / (c["tn"] + c["fp"]),
            }

    # --- convenience ---------------------------------------------------------------------------------------
    def auc_ci(self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> CI:
        return self.interval(auc(y, s), self.auc_samples(y, s))

    def metrics(
        self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, threshold: float
    ) -> dict[str, CI]:
        """AUC, precision, recall and specificity (at ``threshold``) with their intervals."""
        y, s = _as_arrays(y, s)
        point = operating_point(y, s, threshold)
        rates = self.rate_samples(y, s, threshold)
        return {
            "auc": self.auc_ci(y, s),
            "precision": self.interval(point.precision, rates["precision"]),
            "recall": self.interval(point.recall, rates["recall"]),
            "specificity": self.interval(point.specificity, rates["specificity"]),
        }

    def auc_difference(
        self,
        y: Sequence[int] | np.ndarray,
        s_a: Sequence[float] | np.ndarray,
        s_b: Sequence[float] | np.ndarray,
    ) -> tuple[CI, float]:
        """Paired interval of AUC(a) - AUC(b) and the two-sided bootstrap p-value of a zero difference.

        The p-value is ``2 * min(P(diff <= 0), P(diff >= 0))`` over the resamples (capped at 1).
        """
        d = self.auc_samples(y, s_a) - self.auc_samples(y, s_b)
        ci = self.interval(auc(y, s_a) - auc(y, s_b), d)
        d = d[np.isfinite(d)]
        p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if d.size else float("nan")
        return ci, p

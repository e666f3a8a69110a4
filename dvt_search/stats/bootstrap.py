"""Patient-level bootstrap: percentile confidence intervals that respect slice clustering.

Slices of one patient are correlated, so resampling slices would make intervals too narrow. A
:class:`PatientBootstrap` draws patients with replacement (``n_resamples`` times, seeded) and every slice
of a drawn patient enters the resample once per draw. That is a weighting of the original slices by the
draw count of their patient, which lets every statistic be computed for all resamples at once (vectorised,
in chunks) without materialising the resampled data.

With ``strata`` (the label of each row) the resampling is stratified by patient DVT status: a patient is
positive when any of its rows is, and each resample draws as many positive (negative) patients, with
replacement, from the positive (negative) patients as the data hold. Every resample then keeps both kinds
of patient. Resamples in which a statistic is still undefined (one class only) are never dropped silently:
every interval records ``n_valid`` and ``n_invalid`` resamples and the number of *distinct* valid
resamples (``n_distinct``; with 3 patients there are at most 10), and bootstrap p-values are floored at the
resolution those resamples allow (:meth:`PatientBootstrap.p_floor`).

Two bootstraps built from the same set of patient ids (and the same patient strata) with the same seed
draw identical resamples, so results for different models (or slice- and scan-level results) are paired.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dvt_search.stats.measures import _as_arrays, auc, operating_point

DEFAULT_RESAMPLES = 2000
_CHUNK = 250  # resamples per vectorised block (bounds memory to ~CHUNK x n_slices floats)


@dataclass(frozen=True)
class CI:
    """A point estimate on the full data with an interval and how it was obtained.

    ``method`` names the interval (``percentile`` for the patient bootstrap, ``obuchowski-*`` for the
    clustered intervals of :mod:`.clustered`); bootstrap intervals carry ``n_valid`` / ``n_invalid``
    resamples and ``n_distinct`` distinct valid resamples; ``note`` says why an interval is not estimable.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_valid: int | None = None  # resamples in which the statistic was defined (bootstrap only)
    n_invalid: int = 0  # resamples in which it was not (one class only), counted, never hidden
    n_distinct: int | None = None  # distinct valid resamples (bootstrap only)
    method: str = "percentile"
    note: str = ""
    n_clusters: int | None = None  # patients behind a clustered interval

    @property
    def estimable(self) -> bool:
        """Finite bounds of non-zero width (a zero-width interval is not a precise one)."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low)

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_valid": self.n_valid,
            "n_invalid": self.n_invalid,
            "n_distinct": self.n_distinct,
            "method": self.method,
            "note": self.note,
            "n_clusters": self.n_clusters,
            "estimable": self.estimable,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CI:
        """The interval stored by :meth:`as_dict` (older documents lack the newer keys)."""
        return cls(
            d["estimate"],
            d["low"],
            d["high"],
            d["level"],
            d.get("n_valid"),
            d.get("n_invalid", 0),
            d.get("n_distinct"),
            d.get("method", "percentile"),
            d.get("note", ""),
            d.get("n_clusters"),
        )

    def overlaps(self, other: CI) -> bool:
        return not (self.high < other.low or other.high < self.low)

    def fmt(self, digits: int = 2) -> str:
        """``est [lo, hi]``; ``est (interval not estimable)`` for NaN or zero-width bounds; ``n/a``."""
        if not np.isfinite(self.estimate):
            return "n/a"
        if not self.estimable:
            return f"{self.estimate:.{digits}f} (interval not estimable)"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


class PatientBootstrap:
    """Resamples of the patients behind ``n`` rows (slices or scans).

    Args:
        patient_ids: the patient of each row.
        n_resamples: number of bootstrap resamples (>= 2,000 recommended for 95% percentile intervals).
        seed: seed of the resampling.
        level: two-sided confidence level of the intervals.
        strata: the 0/1 label of each row; when given, patients are resampled within their DVT status
            (positive when any row is), so every resample keeps positive and negative patients.
    """

    def __init__(
        self,
        patient_ids: Sequence[str] | np.ndarray,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        level: float = 0.95,
        strata: Sequence[int] | np.ndarray | None = None,
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
        if strata is None:
            groups = [np.arange(p)]
        else:
            lab = np.asarray(strata).astype(int).ravel()
            if lab.size != ids.size:
                raise ValueError(f"strata ({lab.size}) and patient ids ({ids.size}) differ in length")
            positive = np.zeros(p, dtype=bool)
            positive[self.inverse[lab == 1]] = True
            groups = [g for g in (np.flatnonzero(positive), np.flatnonzero(~positive)) if g.size]
        self.stratified = strata is not None
        self.strata_sizes = [int(g.size) for g in groups]
        self.counts = np.zeros((n_resamples, p), dtype=np.float64)
        rows = np.arange(n_resamples)[:, None]
        for g in groups:
            draws = g[rng.integers(0, g.size, size=(n_resamples, g.size))]
            np.add.at(self.counts, (rows, draws), 1.0)

    @property
    def n_possible(self) -> int:
        """Number of distinct resamples the design allows (multisets per stratum, multiplied)."""
        return math.prod(math.comb(2 * s - 1, s) for s in self.strata_sizes)

    def n_distinct(self, valid: np.ndarray | None = None) -> int:
        """Distinct resamples among those drawn (only the ``valid`` ones when a mask is given)."""
        c = self.counts if valid is None else self.counts[valid]
        return int(np.unique(c, axis=0).shape[0]) if c.size else 0

    def describe(self) -> dict[str, Any]:
        """How the resamples were drawn (for the comparison document)."""
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "n_patients": int(self.patients.size),
            "stratified_by": "patient DVT status" if self.stratified else None,
            "strata_sizes": self.strata_sizes,
            "n_distinct": self.n_distinct(),
            "n_possible": self.n_possible,
        }

    # --- interval ---------------------------------------------------------------------------------------
    def interval(self, estimate: float, values: np.ndarray) -> CI:
        """Percentile interval of the finite ``values`` (one per resample) around ``estimate``.

        Resamples where the statistic is undefined are counted in ``n_invalid``; ``n_distinct`` counts the
        distinct valid resamples.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.size != self.n_resamples:
            raise ValueError(f"expected {self.n_resamples} resample values, got {v.size}")
        ok = np.isfinite(v)
        n_ok = int(ok.sum())
        n_bad = self.n_resamples - n_ok
        if n_ok == 0:
            nan = float("nan")
            return CI(float(estimate), nan, nan, self.level, 0, n_bad, 0, note="no resample defined it")
        a = (1.0 - self.level) / 2.0
        lo, hi = np.quantile(v[ok], [a, 1.0 - a])
        note = f"{n_bad} of {self.n_resamples} resamples undefined (one class)" if n_bad else ""
        return CI(
            float(estimate), float(lo), float(hi), self.level, n_ok, n_bad, self.n_distinct(ok), note=note
        )

    @staticmethod
    def p_floor(n_valid: int, n_distinct: int) -> float:
        """Smallest two-sided bootstrap p-value ``n_valid`` resamples (``n_distinct`` distinct) can support.

        ``2 / (n_valid + 1)`` from the resample count and ``2 / n_distinct`` from the distinct resamples: a
        tail probability estimated from 10 distinct resamples cannot be resolved below 1/10.
        """
        if n_valid <= 0 or n_distinct <= 0:
            return 1.0
        return float(min(1.0, max(2.0 / (n_valid + 1), 2.0 / n_distinct)))

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
        """Precision, recall, specificity and NPV of ``score >= threshold`` in every resample."""
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
                "npv": c["tn"] / (c["tn"] + c["fn"]),
            }

    # --- convenience ---------------------------------------------------------------------------------------
    def row_weights(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first resample, weights [chunk, n_rows])``: each row weighted by its patient's draw count."""
        for c0 in range(0, self.n_resamples, _CHUNK):
            yield c0, self.counts[c0 : c0 + _CHUNK][:, self.inverse]

    def auc_ci(self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray) -> CI:
        return self.interval(auc(y, s), self.auc_samples(y, s))

    def metrics(
        self, y: Sequence[int] | np.ndarray, s: Sequence[float] | np.ndarray, threshold: float
    ) -> dict[str, CI]:
        """AUC, precision, recall, specificity and NPV (at ``threshold``) with their intervals."""
        y, s = _as_arrays(y, s)
        point = operating_point(y, s, threshold)
        rates = self.rate_samples(y, s, threshold)
        return {
            "auc": self.auc_ci(y, s),
            "precision": self.interval(point.precision, rates["precision"]),
            "recall": self.interval(point.recall, rates["recall"]),
            "specificity": self.interval(point.specificity, rates["specificity"]),
            "npv": self.interval(point.npv, rates["npv"]),
        }

    def auc_difference(
        self,
        y: Sequence[int] | np.ndarray,
        s_a: Sequence[float] | np.ndarray,
        s_b: Sequence[float] | np.ndarray,
    ) -> tuple[CI, float]:
        """Paired interval of AUC(a) - AUC(b) and the two-sided bootstrap p-value of a zero difference.

        The p-value is ``min(1, 2 (1 + min(#{diff <= 0}, #{diff >= 0})) / (1 + n_valid))`` over the valid
        resamples, floored at :meth:`p_floor` (so it never claims more than the resamples can resolve);
        NaN when no resample is valid.
        """
        d = self.auc_samples(y, s_a) - self.auc_samples(y, s_b)
        ci = self.interval(auc(y, s_a) - auc(y, s_b), d)
        d = d[np.isfinite(d)]
        if not d.size:
            return ci, float("nan")
        tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
        p = min(1.0, 2.0 * (1 + tail) / (1 + d.size))
        return ci, float(max(p, self.p_floor(d.size, ci.n_distinct or 0)))

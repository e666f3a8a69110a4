"""Clustered AUC statistics (Obuchowski 1997): patients are the independent units, slices are not.

Slices (or scans) of one patient are correlated, so methods that treat them as independent (DeLong) give
intervals that are too narrow and p-values that are far too small. Obuchowski's nonparametric analysis of
clustered ROC data ("Nonparametric analysis of clustered ROC curve data", Biometrics 53:567-578, 1997)
keeps the pooled Mann-Whitney AUC and estimates its variance from *cluster sums* of the DeLong structural
components:

* ``V10(x)`` = fraction of all negatives a positive unit ``x`` beats (ties one half), ``V01(y)`` = fraction
  of all positives that beat a negative unit ``y``; ``A_i = sum_{x in i} V10(x) - m_i * AUC`` and
  ``B_i = sum_{y in i} V01(y) - n_i * AUC`` per cluster ``i`` with ``m_i`` positives and ``n_i`` negatives
  (``M``, ``N`` the totals);
* ``var = c10 * sum A_i^2 / M^2 + c01 * sum B_i^2 / N^2 + 2 * c11 * sum A_i B_i / (M N)`` with the
  small-sample factors ``c10 = I10 / (I10 - 1)``, ``c01 = I01 / (I01 - 1)``, ``c11 = I / (I - 1)``
  (``I10`` / ``I01`` clusters holding positives / negatives, ``I`` all clusters); the covariance of two
  classifiers scored on the same units uses the cross products (``A^r B^s + B^r A^s`` for the last term).

With one unit per cluster this is exactly DeLong's covariance. Intervals and tests refer the statistic to a
Student t distribution with ``I - 1`` degrees of freedom (the information comes from ``I`` patients, not
from the number of slices); the AUC interval is computed on the logit scale so it stays inside (0, 1).
Nothing is estimable with fewer than two clusters holding each class, or when the AUC is exactly 0 or 1
(the logit interval degenerates): those intervals are NaN with a note, never a zero-width interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from dvt_search.stats.bootstrap import CI
from dvt_search.stats.measures import _as_arrays

#: Name of the AUC interval method (stored with every clustered interval).
METHOD_AUC = "obuchowski-logit-t"
#: Name of the interval method of an AUC difference.
METHOD_DIFF = "obuchowski-t"


@dataclass(frozen=True)
class ClusteredAUC:
    """AUCs of ``k`` classifiers on the same units and their Obuchowski covariance ``[k, k]``.

    ``cov`` is all NaN when fewer than two clusters hold positives or negatives (:attr:`estimable`).
    """

    aucs: np.ndarray
    cov: np.ndarray
    n_clusters: int
    n_pos_clusters: int
    n_neg_clusters: int
    n_pos: int
    n_neg: int

    @property
    def estimable(self) -> bool:
        return self.n_pos_clusters >= 2 and self.n_neg_clusters >= 2

    @property
    def df(self) -> int:
        """Degrees of freedom of the t reference distribution (clusters - 1)."""
        return self.n_clusters - 1


def _cluster_index(clusters: Sequence[str] | np.ndarray, n: int) -> tuple[np.ndarray, int]:
    ids = np.asarray(clusters).astype(str).ravel()
    if ids.size != n:
        raise ValueError(f"cluster ids ({ids.size}) and labels ({n}) differ in length")
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse, int(inverse.max()) + 1 if inverse.size else 0


def obuchowski(
    y: Sequence[int] | np.ndarray, scores: np.ndarray, clusters: Sequence[str] | np.ndarray
) -> ClusteredAUC:
    """Obuchowski (1997) AUCs and covariance of ``scores[k, n_units]`` with the cluster of each unit.

    Raises ``ValueError`` when the labels hold a single class.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y, _ = _as_arrays(y, scores[0])
    for row in scores:
        _as_arrays(y, row)
    inv, n_cl = _cluster_index(clusters, y.size)
    pos, neg = y == 1, y == 0
    m_tot, n_tot = int(pos.sum()), int(neg.sum())
    if m_tot == 0 or n_tot == 0:
        raise ValueError(f"a clustered AUC needs both classes (got {m_tot} positives, {n_tot} negatives)")
    m_i = np.bincount(inv[pos], minlength=n_cl).astype(float)
    n_i = np.bincount(inv[neg], minlength=n_cl).astype(float)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    k = scores.shape[0]
    aucs = np.empty(k)
    a = np.empty((k, n_cl))
    b = np.empty((k, n_cl))
    for r in range(k):
        s = scores[r]
        # midranks over all units, within positives and within negatives give the structural components
        tz = sps.rankdata(s)
        tx = sps.rankdata(s[pos])
        ty = sps.rankdata(s[neg])
        v10 = (tz[pos] - tx) / n_tot  # negatives below each positive (ties one half) / N
        v01 = 1.0 - (tz[neg] - ty) / m_tot  # positives above each negative (ties one half) / M
        aucs[r] = v10.mean()
        a[r] = np.bincount(inv[pos], weights=v10, minlength=n_cl) - m_i * aucs[r]
        b[r] = np.bincount(inv[neg], weights=v01, minlength=n_cl) - n_i * aucs[r]
    if i10 >= 2 and i01 >= 2:
        c10, c01, c11 = i10 / (i10 - 1), i01 / (i01 - 1), n_cl / (n_cl - 1)
        cov = (
            c10 * (a @ a.T) / m_tot**2
            + c01 * (b @ b.T) / n_tot**2
            + c11 * (a @ b.T + b @ a.T) / (m_tot * n_tot)
        )
    else:
        cov = np.full((k, k), np.nan)
    return ClusteredAUC(aucs, cov, n_cl, i10, i01, m_tot, n_tot)


def _not_estimable_reason(c: ClusteredAUC) -> str:
    return (
        f"{c.n_pos_clusters} patient(s) with positive and {c.n_neg_clusters} with negative "
        "units (at least 2 of each needed)"
    )


def clustered_auc_ci(
    y: Sequence[int] | np.ndarray,
    s: Sequence[float] | np.ndarray,
    clusters: Sequence[str] | np.ndarray,
    level: float = 0.95,
) -> CI:
    """AUC with its clustered interval: logit(AUC) +/- t_{I-1} * SE / (AUC (1 - AUC)), back-transformed.

    NaN bounds and a ``note`` when not estimable (one class, < 2 clusters of a class, AUC of 0 or 1, or a
    zero variance); the estimate is the pooled AUC whenever both classes are present.
    """
    y, s = _as_arrays(y, s)
    if y.min(initial=0) == y.max(initial=0):
        return CI(float("nan"), float("nan"), float("nan"), level, method=METHOD_AUC, note="one class only")
    c = obuchowski(y, s, clusters)
    est = float(c.aucs[0])
    if not c.estimable:
        return _nan_ci(est, level, METHOD_AUC, _not_estimable_reason(c), c)
    var = float(c.cov[0, 0])
    if not 0.0 < est < 1.0:
        return _nan_ci(est, level, METHOD_AUC, f"AUC is exactly {est:g}", c)
    if not var > 0.0:
        return _nan_ci(est, level, METHOD_AUC, "zero clustered variance", c)
    q = float(sps.t.ppf(0.5 + level / 2.0, c.df))
    half = q * np.sqrt(var) / (est * (1.0 - est))
    lg = np.log(est / (1.0 - est))
    lo, hi = 1.0 / (1.0 + np.exp(-(lg - half))), 1.0 / (1.0 + np.exp(-(lg + half)))
    return CI(est, float(lo), float(hi), level, method=METHOD_AUC, n_clusters=c.n_clusters)


def _nan_ci(est: float, level: float, method: str, note: str, c: ClusteredAUC) -> CI:
    return CI(est, float("nan"), float("nan"), level, method=method, note=note, n_clusters=c.n_clusters)


def p_floor(n_clusters: int) -> float:
    """Smallest two-sided p-value a test with ``n_clusters`` independent patients can honestly claim.

    An exact paired randomisation test that flips the sign of each patient's contribution has ``2^I``
    equally likely arrangements, so its two-sided p-value is at least ``2 / 2^I``; the asymptotic t test is
    floored there too (3 patients: 0.25; 10: 0.002; 30: ~2e-9).
    """
    return float(min(1.0, 2.0 ** (1 - max(int(n_clusters), 0))))


@dataclass(frozen=True)
class ClusteredTest:
    """Paired clustered comparison of classifier ``a`` against ``b`` on the same units."""

    auc_a: float
    auc_b: float
    diff: CI  # AUC(a) - AUC(b) with its t interval (NaN bounds with a note when not estimable)
    se: float
    t: float
    df: int
    p: float  # two-sided, floored at :func:`p_floor` (NaN when not estimable)
    p_floor: float

    @property
    def at_floor(self) -> bool:
        return bool(np.isfinite(self.p) and self.p <= self.p_floor)

    def as_dict(self) -> dict[str, object]:
        return {
            "auc_a": self.auc_a,
            "auc_b": self.auc_b,
            "diff": self.diff.as_dict(),
            "se": self.se,
            "t": self.t,
            "df": self.df,
            "p": self.p,
            "p_floor": self.p_floor,
            "at_floor": self.at_floor,
        }


def clustered_test(
    y: Sequence[int] | np.ndarray,
    s_a: Sequence[float] | np.ndarray,
    s_b: Sequence[float] | np.ndarray,
    clusters: Sequence[str] | np.ndarray,
    level: float = 0.95,
) -> ClusteredTest:
    """Two-sided test of H0: AUC(a) == AUC(b) with Obuchowski's covariance and ``I - 1`` t degrees of freedom.

    Identical score vectors give p = 1; a zero variance of the difference with a non-zero difference, or
    too few clusters of a class, gives NaN (not estimable), never p = 0.
    """
    y, _ = _as_arrays(y, s_a)
    nan = float("nan")
    if y.min(initial=0) == y.max(initial=0):
        n_cl = _cluster_index(clusters, y.size)[1]
        ci = CI(nan, nan, nan, level, method=METHOD_DIFF, note="one class only", n_clusters=n_cl)
        return ClusteredTest(nan, nan, ci, nan, nan, n_cl - 1, nan, p_floor(n_cl))
    c = obuchowski(y, np.vstack([np.asarray(s_a, float), np.asarray(s_b, float)]), clusters)
    diff = float(c.aucs[0] - c.aucs[1])
    floor = p_floor(c.n_clusters)
    if not c.estimable:
        ci = _nan_ci(diff, level, METHOD_DIFF, _not_estimable_reason(c), c)
        return ClusteredTest(float(c.aucs[0]), float(c.aucs[1]), ci, nan, nan, c.df, nan, floor)
    var = float(c.cov[0, 0] + c.cov[1, 1] - 2 * c.cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se <= 1e-12 * max(1.0, abs(diff)):
        if diff == 0.0:
            ci = CI(
                0.0, 0.0, 0.0, level, method=METHOD_DIFF, note="identical rankings", n_clusters=c.n_clusters
            )
            return ClusteredTest(float(c.aucs[0]), float(c.aucs[1]), ci, 0.0, 0.0, c.df, 1.0, floor)
        ci = _nan_ci(diff, level, METHOD_DIFF, "zero clustered variance", c)
        return ClusteredTest(float(c.aucs[0]), float(c.aucs[1]), ci, 0.0, nan, c.df, nan, floor)
    t = diff / se
    p = max(float(2 * sps.t.sf(abs(t), c.df)), floor)
    q = float(sps.t.ppf(0.5 + level / 2.0, c.df))
    ci = CI(diff, diff - q * se, diff + q * se, level, method=METHOD_DIFF, n_clusters=c.n_clusters)
    return ClusteredTest(float(c.aucs[0]), float(c.aucs[1]), ci, se, float(t), c.df, p, floor)

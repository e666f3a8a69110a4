"""Guards of the interval level: a 95% interval must be a 95% one (see bench/mutation_check.py).

Expected bounds are computed here from the definitions (DeLong's structural components by explicit pairwise
comparison; the t quantile from scipy), not with the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from dvt_search.stats.bootstrap import PatientBootstrap
from dvt_search.stats.clustered import clustered_auc_ci


def _delong_var_by_hand(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = float(psi.mean())
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return auc, float(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


@pytest.mark.parametrize("level", [0.95, 0.80])
def test_clustered_auc_interval_has_the_stated_level(level: float) -> None:
    rng = np.random.default_rng(4)
    y = np.array([1] * 12 + [0] * 18)
    s = rng.normal(0, 1, y.size) + 1.0 * y
    ids = [f"P{i}" for i in range(y.size)]  # one slice per patient: Obuchowski's variance is DeLong's
    auc, var = _delong_var_by_hand(y, s)
    q = sps.t.ppf(0.5 + level / 2, y.size - 1)
    half = q * math.sqrt(var) / (auc * (1 - auc))
    logit = math.log(auc / (1 - auc))
    lo, hi = 1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half)))
    ci = clustered_auc_ci(y, s, ids, level=level)
    assert ci.level == level
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((auc, lo, hi), rel=1e-9)


def test_bootstrap_percentile_interval_has_the_stated_level() -> None:
    boot = PatientBootstrap([f"P{i}" for i in range(10)], n_resamples=2001, seed=0, level=0.95)
    values = np.linspace(0.0, 1.0, 2001)  # the q-quantile of these values is q
    ci = boot.interval(0.5, values)
    assert (ci.low, ci.high) == pytest.approx((0.025, 0.975), abs=1e-9)

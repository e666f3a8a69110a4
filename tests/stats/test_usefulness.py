"""Brier reference, calibration slope / intercept and net benefit against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from dvt_search.stats.bootstrap import PatientBootstrap
from dvt_search.stats.usefulness import _fit, brier_summary, decision_curve, logit, net_benefit, recalibration


def _simulate(n_pat: int, per: int, seed: int, temperature: float = 1.0):
    """Scores whose true probability is ``sigmoid(logit(s) / temperature)`` (1 = calibrated)."""
    rng = np.random.default_rng(seed)
    s_true = rng.uniform(0.03, 0.97, n_pat * per)
    y = (rng.random(s_true.size) < s_true).astype(int)
    s = 1 / (1 + np.exp(-logit(s_true) * temperature))  # temperature > 1: over-confident (too extreme)
    return y, s, np.repeat([f"P{i:03d}" for i in range(n_pat)], per)


def _nll_fit(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """(a, b) of logit P = a + b x and a' of logit P = a' + x, by generic numerical optimisation."""

    def nll(theta: np.ndarray, slope: bool) -> float:
        z = theta[0] + (theta[1] if slope else 1.0) * x
        return float(np.sum(np.logaddexp(0, z) - y * z))

    ab = optimize.minimize(nll, [0.0, 1.0], args=(True,), method="BFGS", options={"gtol": 1e-10}).x
    a1 = optimize.minimize(nll, [0.0], args=(False,), method="BFGS", options={"gtol": 1e-10}).x
    return float(ab[0]), float(ab[1]), float(a1[0])


def test_brier_reference_and_scaled_brier_by_formula() -> None:
    y = np.array([1, 0, 0, 0])
    s = np.array([0.8, 0.1, 0.3, 0.2])
    b = brier_summary(y, s)
    assert b["brier"] == pytest.approx((0.04 + 0.01 + 0.09 + 0.04) / 4)
    assert b["brier_reference"] == pytest.approx(0.25 * 0.75)
    assert b["scaled_brier"] == pytest.approx(1 - 0.045 / 0.1875)
    const = brier_summary(y, np.full(4, 0.25))  # predicting the prevalence is exactly the reference
    assert const["brier"] == pytest.approx(const["brier_reference"]) and const[
        "scaled_brier"
    ] == pytest.approx(0)


def test_net_benefit_by_formula_and_the_references() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.2, 0.7])
    # at pt = 0.5: called positive 0.9 (TP), 0.6 (FP), 0.7 (TP): 2/5 - 1/5 * 1 = 0.2
    assert net_benefit(y, s, [0.5])[0] == pytest.approx(0.2)
    # at pt = 0.25: 0.9, 0.4, 0.6, 0.7 -> TP 3, FP 1: 3/5 - 1/5 * 1/3
    assert net_benefit(y, s, [0.25])[0] == pytest.approx(0.6 - 0.2 / 3)
    dc = decision_curve(y, s, thresholds=[0.25, 0.5, 0.65, 0.8])
    assert dc["treat_all"] == pytest.approx(
        [0.6 - 0.4 / 3, 0.6 - 0.4, 0.6 - 0.4 * 0.65 / 0.35, 0.6 - 0.4 * 4]
    )
    assert dc["treat_none"] == 0.0 and dc["prevalence"] == pytest.approx(0.6)
    # 0.25: 0.533 > treat all 0.467; 0.5: equal to treat all (0.2), not useful; 0.65: TP 2, FP 0 -> 0.4
    # > max(treat all < 0, 0); 0.8: TP 1 -> 0.2 > 0
    assert dc["model"] == pytest.approx([0.6 - 0.2 / 3, 0.2, 0.4, 0.2])
    assert dc["useful"] == [[0.25, 0.25], [0.65, 0.8]]


def test_calibration_slope_is_one_when_calibrated_and_below_one_when_overconfident() -> None:
    y, s, pid = _simulate(300, 10, seed=1)
    boot = PatientBootstrap(pid, n_resamples=300, seed=0, strata=y)
    good = recalibration(y, s, boot)
    assert good["slope"]["low"] < 1.0 < good["slope"]["high"]
    assert good["intercept"]["low"] < 0.0 < good["intercept"]["high"]
    y2, s2, pid2 = _simulate(300, 10, seed=2, temperature=2.0)
    over = recalibration(y2, s2, PatientBootstrap(pid2, n_resamples=300, seed=0, strata=y2))
    assert over["slope"]["high"] < 1.0 and over["slope"]["estimate"] == pytest.approx(0.5, abs=0.08)


def test_recalibration_point_estimates_match_a_generic_optimiser() -> None:
    y, s, _ = _simulate(40, 5, seed=5, temperature=1.5)
    a, b, a1 = _nll_fit(y.astype(float), logit(s))
    got = recalibration(y, s)
    assert got["slope"]["estimate"] == pytest.approx(b, abs=1e-5)
    assert got["slope_model_intercept"] == pytest.approx(a, abs=1e-5)
    assert got["intercept"]["estimate"] == pytest.approx(a1, abs=1e-5)


def test_weighted_fits_equal_fits_on_materialised_resamples() -> None:
    y, s, pid = _simulate(15, 6, seed=8)
    boot = PatientBootstrap(pid, n_resamples=5, seed=3, strata=y)
    x = logit(s)
    _, w = next(boot.row_weights())
    _, b, a1 = _fit(w, y.astype(float), x)
    for r in range(5):
        idx = np.concatenate(
            [np.flatnonzero(pid == p) for p, c in zip(boot.patients, boot.counts[r]) for _ in range(int(c))]
        )
        _, bb, aa = _nll_fit(y[idx].astype(float), x[idx])
        assert b[r] == pytest.approx(bb, abs=1e-4) and a1[r] == pytest.approx(aa, abs=1e-4)


def test_separated_scores_have_no_slope() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    got = recalibration(y, s)
    assert np.isnan(got["slope"]["estimate"]) and "separate" in got["slope"]["note"]
    assert np.isfinite(got["intercept"]["estimate"])  # calibration-in-the-large still exists

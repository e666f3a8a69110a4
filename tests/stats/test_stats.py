"""Statistics checked against independent computations written out here from their definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

from dvt_search.stats import measures as stats
from dvt_search.stats.bootstrap import PatientBootstrap


def _clustered(n_patients: int, slices: int, seed: int, shift: float = 1.0):
    """Patients with a random effect shared by their slices; label-dependent score shift."""
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"p{i:03d}" for i in range(n_patients)], slices)
    effect = np.repeat(rng.normal(0, 0.7, n_patients), slices)
    y = rng.integers(0, 2, pid.size)
    s = 1 / (1 + np.exp(-(effect + shift * y + rng.normal(0, 1, pid.size))))
    return y, np.round(s, 2), pid  # rounding creates ties on purpose


def test_auc_equals_mann_whitney_u_with_ties() -> None:
    y, s, _ = _clustered(20, 10, seed=1)
    u = mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided").statistic
    assert stats.auc(y, s) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
    assert np.isnan(stats.auc(np.ones(5), np.arange(5.0)))


def _psi(x: float, yv: float) -> float:
    return 1.0 if x > yv else 0.5 if x == yv else 0.0


def test_delong_covariance_matches_structural_components_from_definition() -> None:
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0])
    a = np.array([0.9, 0.8, 0.55, 0.7, 0.4, 0.3, 0.55, 0.2, 0.6, 0.1, 0.4, 0.65, 0.5])
    b = np.array([0.7, 0.9, 0.3, 0.6, 0.6, 0.5, 0.2, 0.4, 0.45, 0.1, 0.6, 0.2, 0.3])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = pos.size, neg.size
    comps = []
    for s in (a, b):
        v10 = np.array([np.mean([_psi(s[i], s[j]) for j in neg]) for i in pos])
        v01 = np.array([np.mean([_psi(s[i], s[j]) for i in pos]) for j in neg])
        comps.append((v10, v01))
    expected = np.empty((2, 2))
    for r in range(2):
        for c in range(2):
            s10 = np.sum((comps[r][0] - comps[r][0].mean()) * (comps[c][0] - comps[c][0].mean())) / (m - 1)
            s01 = np.sum((comps[r][1] - comps[r][1].mean()) * (comps[c][1] - comps[c][1].mean())) / (n - 1)
            expected[r, c] = s10 / m + s01 / n
    d = stats.delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(d.aucs, [comps[0][0].mean(), comps[1][0].mean()], atol=1e-12)
    np.testing.assert_allclose(d.cov, expected, atol=1e-12)

    t = stats.delong_test(y, a, b)
    var = expected[0, 0] + expected[1, 1] - 2 * expected[0, 1]
    assert t.z == pytest.approx((d.aucs[0] - d.aucs[1]) / np.sqrt(var))
    assert stats.delong_test(y, b, a).p == pytest.approx(t.p)
    assert stats.delong_test(y, a, a).p == 1.0


def test_delong_detects_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 600)
    good = y + rng.normal(0, 0.6, y.size)
    bad = y + rng.normal(0, 3.0, y.size)
    assert stats.delong_test(y, good, bad).p < 1e-3
    twin = good + rng.normal(0, 1e-3, y.size)
    assert stats.delong_test(y, good, twin).p > 0.05


def test_holm_matches_step_down_definition() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    finite = p[:4]
    order = np.argsort(finite)
    expected = np.empty(4)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * finite[idx]))
        expected[idx] = running
    out = stats.holm(p)
    np.testing.assert_allclose(out[:4], expected)
    assert np.isnan(out[4])


def test_thresholds_are_chosen_on_the_given_predictions() -> None:
    y, s, _ = _clustered(30, 8, seed=4)
    fpr, tpr, _ = roc_curve(y, s)
    th = stats.choose_thresholds(y, s, sensitivities=(0.8, 0.9))
    c = stats.operating_point(y, s, th.youden)
    assert c.recall - (1 - c.specificity) == pytest.approx(np.max(tpr - fpr))
    for target, t in th.at_sensitivity.items():
        assert stats.operating_point(y, s, t).recall >= target
        above = s[s > t]
        if above.size:
            assert stats.operating_point(y, s, above.min()).recall < target
    with pytest.raises(ValueError, match="both classes"):
        stats.choose_thresholds(np.zeros(4), np.arange(4.0))


def test_calibration_brier_and_bins() -> None:
    y, s, _ = _clustered(25, 6, seed=5)
    cal = stats.calibration(y, s, n_bins=5)
    assert cal.brier == pytest.approx(brier_score_loss(y, s))
    assert cal.bins["count"].sum() == y.size
    b = cal.bins.iloc[2]
    sel = (s >= b.lo) & (s < b.hi)
    assert b["count"] == sel.sum()
    assert b["frac_positive"] == pytest.approx(y[sel].mean())


def test_aggregate_scans() -> None:
    f = pd.DataFrame(
        {
            "scan_id": ["a"] * 4 + ["b"] * 2,
            "patient_id": ["p1"] * 4 + ["p2"] * 2,
            "label": [0, 1, 0, 0, 0, 0],
            "score": [0.1, 0.9, 0.5, 0.3, 0.2, 0.4],
        }
    )
    mx = stats.aggregate_scans(f, "max")
    assert mx["score"].tolist() == [0.9, 0.4] and mx["label"].tolist() == [1, 0]
    assert stats.aggregate_scans(f, "mean")["score"].tolist() == pytest.approx([0.45, 0.3])
    assert stats.aggregate_scans(f, "topk", k=2)["score"].tolist() == pytest.approx([0.7, 0.3])


def _materialise(boot: PatientBootstrap, r: int, pid: np.ndarray) -> np.ndarray:
    """Row indices of resample ``r``: every slice of a drawn patient, once per draw."""
    rows = [np.flatnonzero(pid == p) for p, k in zip(boot.patients, boot.counts[r]) for _ in range(int(k))]
    return np.concatenate(rows)


def test_bootstrap_statistics_equal_explicit_resamples() -> None:
    y, s, pid = _clustered(15, 7, seed=6)
    boot = PatientBootstrap(pid, n_resamples=40, seed=11)
    aucs = boot.auc_samples(y, s)
    rates = boot.rate_samples(y, s, 0.5)
    for r in range(0, 40, 7):
        idx = _materialise(boot, r, pid)
        yy, ss = y[idx], s[idx]
        assert aucs[r] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
        c = stats.operating_point(yy, ss, 0.5)
        assert rates["recall"][r] == pytest.approx(c.recall)
        assert rates["precision"][r] == pytest.approx(c.precision)
        assert rates["specificity"][r] == pytest.approx(c.specificity)
    again = PatientBootstrap(pid, n_resamples=40, seed=11)
    np.testing.assert_array_equal(again.counts, boot.counts)


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_patients() -> None:
    widths = []
    for n_pat in (12, 120):
        y, s, pid = _clustered(n_pat, 10, seed=7)
        boot = PatientBootstrap(pid, n_resamples=2000, seed=0)
        m = boot.metrics(y, s, threshold=0.5)
        for ci in m.values():
            assert ci.low <= ci.estimate <= ci.high
            assert ci.n_valid > 1900
        assert m["auc"].estimate == pytest.approx(stats.auc(y, s))
        widths.append(m["auc"].high - m["auc"].low)
    assert widths[1] < 0.6 * widths[0]


def test_paired_auc_difference() -> None:
    y, s, pid = _clustered(40, 8, seed=8, shift=2.0)
    noise = np.random.default_rng(0).normal(0, 2.0, y.size)
    boot = PatientBootstrap(pid, n_resamples=500, seed=1)
    ci, p = boot.auc_difference(y, s, s + noise)
    assert ci.estimate == pytest.approx(stats.auc(y, s) - stats.auc(y, s + noise))
    assert ci.low > 0 and p < 0.05
    ci0, p0 = boot.auc_difference(y, s, s)
    assert ci0.low == ci0.high == 0.0 and p0 == 1.0

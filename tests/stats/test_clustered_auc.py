"""Obuchowski's clustered AUC variance checked against its definition, DeLong, invariances and simulation."""

from __future__ import annotations

import numpy as np
import pytest

from dvt_search.stats import measures
from dvt_search.stats.clustered import clustered_auc_ci, clustered_test, obuchowski, p_floor


def _psi(x: float, yv: float) -> float:
    return 1.0 if x > yv else 0.5 if x == yv else 0.0


def _brute_force(y: np.ndarray, scores: list[np.ndarray], cl: np.ndarray) -> tuple[list[float], np.ndarray]:
    """AUCs and covariance written out from Obuchowski (1997) with explicit loops over units and clusters."""
    units_pos = [i for i in range(y.size) if y[i] == 1]
    units_neg = [i for i in range(y.size) if y[i] == 0]
    big_m, big_n = len(units_pos), len(units_neg)
    clusters = sorted(set(cl))
    aucs, a_comp, b_comp = [], [], []
    for s in scores:
        theta = sum(_psi(s[i], s[j]) for i in units_pos for j in units_neg) / (big_m * big_n)
        aucs.append(theta)
        a_i, b_i = [], []
        for c in clusters:
            pos_c = [i for i in units_pos if cl[i] == c]
            neg_c = [j for j in units_neg if cl[j] == c]
            v10 = sum(sum(_psi(s[i], s[j]) for j in units_neg) / big_n for i in pos_c)
            v01 = sum(sum(_psi(s[i], s[j]) for i in units_pos) / big_m for j in neg_c)
            a_i.append(v10 - len(pos_c) * theta)
            b_i.append(v01 - len(neg_c) * theta)
        a_comp.append(a_i)
        b_comp.append(b_i)
    n_cl = len(clusters)
    i10 = len({cl[i] for i in units_pos})
    i01 = len({cl[j] for j in units_neg})
    k = len(scores)
    cov = np.zeros((k, k))
    for r in range(k):
        for q in range(k):
            s10 = i10 / ((i10 - 1) * big_m) * sum(a_comp[r][c] * a_comp[q][c] for c in range(n_cl))
            s01 = i01 / ((i01 - 1) * big_n) * sum(b_comp[r][c] * b_comp[q][c] for c in range(n_cl))
            s11_rq = n_cl / (n_cl - 1) * sum(a_comp[r][c] * b_comp[q][c] for c in range(n_cl))
            s11_qr = n_cl / (n_cl - 1) * sum(a_comp[q][c] * b_comp[r][c] for c in range(n_cl))
            cov[r, q] = s10 / big_m + s01 / big_n + (s11_rq + s11_qr) / (big_m * big_n)
    return aucs, cov


def _clustered(n_patients: int, slices: int, rng: np.random.Generator, sd_patient: float = 1.0):
    pid = np.repeat(np.arange(n_patients), slices)
    y = np.zeros(pid.size, dtype=int)
    for p in range(n_patients // 2):
        y[p * slices : p * slices + max(1, slices // 2)] = 1
    u = rng.normal(0, sd_patient, n_patients)[pid]
    s = y * 1.0 + u + rng.normal(0, 1, pid.size)
    return y, s, pid.astype(str)


def test_obuchowski_matches_the_definition_with_ties_and_uneven_clusters() -> None:
    rng = np.random.default_rng(0)
    cl = np.array(list("aaabbbbccddddde"))
    y = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1])
    a = np.round(rng.random(y.size) + 0.3 * y, 1)  # rounded: ties within and across classes
    b = np.round(rng.random(y.size), 1)
    aucs, cov = _brute_force(y, [a, b], cl)
    got = obuchowski(y, np.vstack([a, b]), cl)
    np.testing.assert_allclose(got.aucs, aucs, atol=1e-12)
    np.testing.assert_allclose(got.cov, cov, atol=1e-12)
    assert (got.n_clusters, got.n_pos_clusters, got.n_neg_clusters) == (5, 4, 4)
    t = clustered_test(y, a, b, cl)
    assert t.se == pytest.approx(np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    assert t.df == 4 and t.diff.estimate == pytest.approx(aucs[0] - aucs[1])


def test_one_slice_per_patient_is_exactly_delong() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    a = y + rng.normal(0, 1, 80)
    b = np.round(y + rng.normal(0, 1.5, 80), 1)
    ob = obuchowski(y, np.vstack([a, b]), [f"p{i}" for i in range(80)])
    dl = measures.delong(y, np.vstack([a, b]))
    np.testing.assert_allclose(ob.aucs, dl.aucs, atol=1e-12)
    np.testing.assert_allclose(ob.cov, dl.cov, rtol=1e-10, atol=1e-14)
    assert clustered_test(y, a, b, np.arange(80)).t == pytest.approx(measures.delong_test(y, a, b).z)


def test_copying_every_slice_within_its_patient_leaves_the_clustered_variance_unchanged() -> None:
    """Copies of a slice carry no new information: Obuchowski is unchanged, DeLong shrinks ~1/copies."""
    rng = np.random.default_rng(2)
    y, s, pid = _clustered(12, 6, rng)
    rep = 4
    y4, s4, pid4 = np.repeat(y, rep), np.repeat(s, rep), np.repeat(pid, rep)
    v1 = obuchowski(y, s, pid).cov[0, 0]
    v4 = obuchowski(y4, s4, pid4).cov[0, 0]
    assert v4 == pytest.approx(v1, rel=1e-10)
    assert measures.delong(y4, s4).cov[0, 0] < 0.4 * measures.delong(y, s).cov[0, 0]


def test_variance_tracks_the_true_sampling_variance_of_clustered_auc() -> None:
    """Over simulated test sets with a patient effect, the mean Obuchowski variance is close to the
    empirical variance of the AUC; DeLong's is far below it (slices are not independent)."""
    rng = np.random.default_rng(3)
    est, ob_var, dl_var = [], [], []
    for _ in range(300):
        y, s, pid = _clustered(40, 10, rng, sd_patient=1.0)
        c = obuchowski(y, s, pid)
        est.append(c.aucs[0])
        ob_var.append(c.cov[0, 0])
        dl_var.append(measures.delong(y, s).cov[0, 0])
    true_var = np.var(est, ddof=1)
    assert 0.75 * true_var < np.mean(ob_var) < 1.3 * true_var
    assert np.mean(dl_var) < 0.5 * true_var


def test_interval_is_on_the_logit_scale_and_not_estimable_cases_say_so() -> None:
    rng = np.random.default_rng(4)
    y, s, pid = _clustered(20, 8, rng)
    ci = clustered_auc_ci(y, s, pid)
    c = obuchowski(y, s, pid)
    assert ci.low < ci.estimate < ci.high and ci.low > 0 and ci.high < 1
    # the logit interval is symmetric around logit(AUC) with half-width t_{I-1} * se / (AUC (1 - AUC))
    lg = lambda v: np.log(v / (1 - v))  # noqa: E731
    assert lg(ci.high) - lg(ci.estimate) == pytest.approx(lg(ci.estimate) - lg(ci.low))
    from scipy.stats import t as student

    half = student.ppf(0.975, 19) * np.sqrt(c.cov[0, 0]) / (ci.estimate * (1 - ci.estimate))
    assert lg(ci.high) - lg(ci.estimate) == pytest.approx(half)

    perfect = clustered_auc_ci(y, y + 0.01 * rng.random(y.size), pid)
    assert perfect.estimate == 1.0 and not perfect.estimable and "exactly 1" in perfect.note
    assert perfect.fmt() == "1.00 (interval not estimable)"
    one_pos_patient = np.where(pid == "0", y, 0)
    lone = clustered_auc_ci(one_pos_patient, s, pid)
    assert np.isnan(lone.low) and "at least 2" in lone.note
    t = clustered_test(one_pos_patient, s, s + 1e-3 * rng.random(s.size), pid)
    assert np.isnan(t.p)
    no_pos = np.zeros_like(y)
    assert np.isnan(clustered_test(no_pos, s, s + 1, pid).p)
    assert clustered_auc_ci(no_pos, s, pid).fmt() == "n/a"


def test_identical_models_give_p_one_and_few_patients_never_claim_small_p() -> None:
    rng = np.random.default_rng(5)
    y, s, pid = _clustered(3 * 2, 10, rng)  # 3 positive, 3 negative patients
    assert clustered_test(y, s, s, pid).p == 1.0
    sep = clustered_test(y, y + 0.1 * rng.random(y.size), rng.random(y.size), pid)
    assert sep.p >= p_floor(6) == pytest.approx(2.0**-5) and sep.at_floor
    assert p_floor(3) == 0.25 and p_floor(10) == pytest.approx(2.0**-9)

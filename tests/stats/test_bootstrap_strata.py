"""Stratified patient bootstrap: strata kept, invalid resamples counted, distinct resamples, honest p floors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvt_search.stats.bootstrap import CI, PatientBootstrap


def _patients(n_pos: int, n_neg: int, slices: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"p{i}" for i in range(n_pos + n_neg)], slices)
    y = np.zeros(pid.size, dtype=int)
    for i in range(n_pos):
        y[i * slices] = 1  # one positive slice per DVT-positive patient, the others negative
    return y, y + rng.normal(0, 1, y.size), pid


def test_stratified_resamples_keep_the_number_of_positive_patients() -> None:
    y, _, pid = _patients(3, 5)
    boot = PatientBootstrap(pid, n_resamples=300, seed=1, strata=y)
    positive = np.array([y[pid == p].max() == 1 for p in boot.patients])
    assert (boot.counts[:, positive].sum(axis=1) == 3).all()
    assert (boot.counts[:, ~positive].sum(axis=1) == 5).all()
    assert boot.n_possible == math.comb(5, 3) * math.comb(9, 5)


def test_one_class_resamples_are_counted_not_hidden() -> None:
    y, s, pid = _patients(1, 4)
    boot = PatientBootstrap(pid, n_resamples=400, seed=2)  # unstratified: the DVT patient is often missing
    ci = boot.auc_ci(y, s)
    positive = np.array([y[pid == p].max() == 1 for p in boot.patients])
    missing = int((boot.counts[:, positive].sum(axis=1) == 0).sum())  # resamples without a positive slice
    assert missing > 50
    assert ci.n_invalid == missing and ci.n_valid == 400 - missing
    assert str(missing) in ci.note
    strat = PatientBootstrap(pid, n_resamples=400, seed=2, strata=y).auc_ci(y, s)
    assert strat.n_invalid == 0 and strat.n_valid == 400


def test_three_patients_have_ten_distinct_resamples_and_p_values_say_so() -> None:
    y, s, pid = _patients(2, 1, slices=5)
    boot = PatientBootstrap(pid, n_resamples=2000, seed=3)
    assert boot.n_possible == 10 and boot.n_distinct() == 10
    ci, p = boot.auc_difference(y, s + 5 * y, -(s + 5 * y))  # AUC 1 vs 0 in every valid resample
    assert ci.n_invalid > 0 and ci.n_distinct == 9  # the resample of the negative patient alone is invalid
    assert p == pytest.approx(PatientBootstrap.p_floor(ci.n_valid, ci.n_distinct))
    assert p >= 2 / 10  # never "p < 0.001" from 10 distinct resamples
    strat = PatientBootstrap(pid, n_resamples=2000, seed=3, strata=y)
    assert strat.n_possible == 3 and strat.n_distinct() == 3


def test_p_value_without_floor_uses_the_plus_one_rule() -> None:
    y, s, pid = _patients(30, 30, seed=4)
    boot = PatientBootstrap(pid, n_resamples=500, seed=5, strata=y)
    ci, p = boot.auc_difference(y, s + 3 * y, s)
    assert ci.n_distinct == 500
    # no resample on the other side: max(2 (1 + 0) / (1 + n_valid), 2 / n_distinct)
    assert p == pytest.approx(max(2 / 501, 2 / 500)) == PatientBootstrap.p_floor(500, 500)
    _, p_same = boot.auc_difference(y, s, s)
    assert p_same == 1.0


def test_zero_width_and_nan_intervals_print_as_not_estimable() -> None:
    assert CI(1.0, 1.0, 1.0, 0.95, 500).fmt() == "1.00 (interval not estimable)"
    assert CI(0.7, float("nan"), float("nan"), 0.95).fmt() == "0.70 (interval not estimable)"
    assert CI(0.7, 0.6, 0.8, 0.95).fmt() == "0.70 [0.60, 0.80]"
    assert CI(float("nan"), 0.1, 0.2, 0.95).fmt() == "n/a"
    d = CI(0.7, 0.6, 0.8, 0.95, 90, 10, 40, note="x").as_dict()
    assert CI.from_dict(d) == CI(0.7, 0.6, 0.8, 0.95, 90, 10, 40, note="x")
    old = {"estimate": 0.7, "low": 0.6, "high": 0.8, "level": 0.95, "n_valid": 100}  # format 1 document
    assert CI.from_dict(old).fmt() == "0.70 [0.60, 0.80]"

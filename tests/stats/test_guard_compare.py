"""Guards of the comparison on test: each test here fails for one deliberate bug (see bench/mutation_check.py).

Data are synthetic prediction tables with a known structure, and every expected figure is counted by hand
in the test (never recomputed with the function under test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dvt_testkit_stats import simulated_predictions

from dvt_search.stats.compare import compare


def _frame(fam: str, patients: list[tuple[int, list[float]]]) -> pd.DataFrame:
    """One scan per patient; ``patients`` = [(label of all its slices, slice scores)]."""
    rows = [
        (fam, f"{fam}-t", f"P{p:02d}", f"P{p:02d}-S0", z, lab, s)
        for p, (lab, scores) in enumerate(patients)
        for z, s in enumerate(scores)
    ]
    f = pd.DataFrame(
        rows, columns=["family", "trial_id", "patient_id", "scan_id", "slice_index", "label", "score"]
    )
    f["row"] = np.arange(len(f))
    return f


def _simulated(seed: int, spec: dict[str, tuple[float, float]], n_pat: int, slices: int) -> pd.DataFrame:
    """Half the patients positive (first half of their slices); per family a label shift and a patient sd."""
    return simulated_predictions(seed, spec, n_pat, slices, lambda z: z < slices // 2)


# validation: positives 0.80-0.90, negatives 0.10-0.20 -> every Youden-optimal threshold lies in (0.2, 0.8]
VAL = [(1, [0.80, 0.85, 0.90]), (0, [0.10, 0.15, 0.20])] * 3
# test: positives 0.40-0.50, negatives 0.00-0.10 (a threshold chosen on TEST would sit in (0.1, 0.4])
TEST = [(1, [0.40, 0.45, 0.50]), (0, [0.00, 0.05, 0.10])] * 3


def test_thresholds_come_from_validation_never_from_test() -> None:
    doc = compare(_frame("a", VAL), _frame("a", TEST), n_resamples=200)
    st = doc["families"]["a"]
    assert 0.5 < st["thresholds"]["youden"] <= 0.8  # inside validation's gap, above every test score
    # so on test every slice is called negative: counted by hand, 9 positive and 9 negative slices
    assert st["test"]["confusion"]["tp"] == 0 and st["test"]["confusion"]["tn"] == 9
    assert st["test"]["recall"]["estimate"] == 0.0


def test_table1_metrics_are_at_the_validation_youden_threshold_not_at_half() -> None:
    # every score above 0.5; validation separates at 0.85, test negatives at 0.6-0.7 and positives 0.9-0.95
    val = _frame("a", [(1, [0.85, 0.90, 0.95]), (0, [0.55, 0.60, 0.65])] * 3)
    test = _frame("a", [(1, [0.90, 0.95, 0.80]), (0, [0.60, 0.70, 0.90])] * 3)
    st = compare(val, test, n_resamples=200)["families"]["a"]
    t = st["thresholds"]["youden"]
    assert 0.65 < t <= 0.85
    ys, ss = test["label"].to_numpy(), test["score"].to_numpy()
    pred = ss >= t
    tp, fp = int((pred & (ys == 1)).sum()), int((pred & (ys == 0)).sum())
    assert (tp, fp) != (9, 9)  # at 0.5 every slice would be called positive
    conf = st["test"]["confusion"]
    assert (conf["tp"], conf["fp"]) == (tp, fp)
    assert st["test"]["recall"]["estimate"] == pytest.approx(tp / 9)
    assert st["test"]["specificity"]["estimate"] == pytest.approx((9 - fp) / 9)
    assert st["test"]["precision"]["estimate"] == pytest.approx(tp / (tp + fp))


def test_significance_is_the_clustered_test_not_delong() -> None:
    # 8 patients x 30 correlated slices, two equally good models: DeLong (slices independent) calls the
    # difference significant, the clustered test (8 patients) does not; the rule must follow the latter.
    spec = {"a": (1.5, 1.5), "b": (1.5, 1.5)}
    doc = compare(_simulated(1012, spec, 8, 30), _simulated(12, spec, 8, 30), n_resamples=200)
    (pair,) = doc["pairs"]
    assert pair["delong_p_holm"] < 0.01 and pair["p_holm"] > 0.2  # the data show the discordance
    assert pair["significant"] is False
    assert not any(r["significant"] for r in doc["vs_reference"])


def _holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    adj, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def test_significance_uses_holm_adjusted_not_raw_p_values() -> None:
    # three families -> three pairs; a vs c has a raw clustered p of ~0.03 but a Holm-adjusted one of ~0.09
    spec = {"a": (1.5, 0.2), "b": (1.0, 0.2), "c": (0.8, 0.2)}
    doc = compare(_simulated(1010, spec, 40, 4), _simulated(10, spec, 40, 4), n_resamples=200)
    pairs = {(p["a"], p["b"]): p for p in doc["pairs"]}
    ac = pairs[("a", "c")]
    assert ac["p"] < 0.05 < ac["p_holm"]  # the data show the discordance
    assert ac["significant"] is False
    expected = _holm_by_hand([p["p"] for p in doc["pairs"]])
    for p, adj in zip(doc["pairs"], expected):
        assert p["p_holm"] == pytest.approx(adj)
        assert p["significant"] == (adj < 0.05)


def test_bootstrap_resamples_patients_not_slices() -> None:
    # 4 patients (2 positive, 2 negative), 6 slices each: resampling patients within their DVT status has
    # C(3, 2)^2 = 9 distinct outcomes; resampling 24 slices would have thousands
    pats = [(1, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), (0, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0])] * 2
    doc = compare(_frame("a", pats), _frame("a", pats), n_resamples=500)
    boot = doc["bootstrap"]
    assert boot["n_patients"] == 4 and boot["n_possible"] == 9
    assert boot["n_distinct"] <= 9
    rec = doc["families"]["a"]["test"]["recall"]
    assert rec["n_distinct"] is not None and rec["n_distinct"] <= 9

"""The exam-level endpoint against hand counts: NPV, thresholds chosen on VALIDATION scans, aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dvt_search.stats.bootstrap import PatientBootstrap
from dvt_search.stats.compare import compare
from dvt_search.stats.exam import choose_aggregation, exam_endpoint, partition_counts, scan_bootstrap
from dvt_search.stats.measures import aggregate_scans, operating_point, threshold_at_specificity


def _slices(scans: list[tuple[str, str, list[int], list[float]]], family: str = "m") -> pd.DataFrame:
    """Slice rows from (patient, scan, slice labels, slice scores) tuples."""
    rows = []
    for pid, sid, labels, scores in scans:
        for z, (lab, s) in enumerate(zip(labels, scores)):
            rows.append((family, f"{family}-t", pid, sid, z, lab, s))
    f = pd.DataFrame(
        rows, columns=["family", "trial_id", "patient_id", "scan_id", "slice_index", "label", "score"]
    )
    f.insert(2, "row", np.arange(len(f)))
    return f


def _youden_brute(y: np.ndarray, s: np.ndarray) -> float:
    """Youden's J by trying every observed score as the threshold (highest maximiser), independently."""
    best, best_t = -np.inf, None
    for t in np.sort(np.unique(s))[::-1]:
        pred = s >= t
        j = pred[y == 1].mean() + (~pred[y == 0]).mean() - 1
        if j > best + 1e-12:
            best, best_t = j, t
    return float(best_t)


def test_npv_by_counting() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.2, 0.7, 0.1, 0.3, 0.8, 0.05, 0.35])
    op = operating_point(y, s, 0.5)
    called_negative = s < 0.5
    assert op.npv == pytest.approx((called_negative & (y == 0)).sum() / called_negative.sum())  # 3 / 5
    assert op.npv == pytest.approx(0.6)
    assert np.isnan(operating_point(y, s, 0.0).npv)  # nothing called negative


def test_bootstrap_npv_equals_the_npv_of_each_materialised_resample() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.4, 0.2, 0.3, 0.1, 0.6, 0.8, 0.45, 0.05, 0.3])
    pid = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    boot = PatientBootstrap(pid, n_resamples=20, seed=4, strata=y)
    got = boot.rate_samples(y, s, 0.5)["npv"]
    for r in range(20):
        idx = np.concatenate(
            [np.flatnonzero(pid == p) for p, c in zip(boot.patients, boot.counts[r]) for _ in range(int(c))]
        )
        neg = s[idx] < 0.5
        expect = ((y[idx] == 0) & neg).sum() / neg.sum() if neg.sum() else np.nan
        np.testing.assert_allclose(got[r], expect)


def test_threshold_at_specificity_is_the_lowest_keeping_the_target() -> None:
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.65, 0.3])
    t = threshold_at_specificity(y, s, 0.8)  # 8 of 10 negatives must fall below: above 0.8 -> 0.85
    assert t == pytest.approx(0.85)
    spec = lambda th: (s[y == 0] < th).mean()  # noqa: E731
    assert spec(t) >= 0.8
    lower = np.sort(s[s < t])[-1]  # the next lower observed score no longer keeps the specificity
    assert spec(lower) < 0.8
    assert threshold_at_specificity(y, s, 1.0) > 0.95  # every negative below: just above the highest


def test_aggregation_is_chosen_on_validation_with_ties_to_max() -> None:
    # validation: the mean ranks the scans correctly, the max does not (a negative scan with one spike)
    val = _slices(
        [
            ("p1", "s1", [0, 0, 0], [0.95, 0.1, 0.1]),
            ("p2", "s2", [1, 1, 0], [0.8, 0.7, 0.6]),
            ("p3", "s3", [0, 0, 0], [0.2, 0.3, 0.1]),
            ("p4", "s4", [1, 0, 0], [0.9, 0.5, 0.5]),
        ]
    )
    agg = choose_aggregation(val, k=2)
    assert agg["val_auc"]["max"] == pytest.approx(0.5) and agg["val_auc"]["mean"] == pytest.approx(1.0)
    assert agg["how"] in ("mean", "topk") and agg["val_auc"][agg["how"]] == 1.0
    assert agg["how"] == "mean"  # mean and top-2 tie at 1.0: the pre-specified order puts mean first
    tied = _slices([("p1", "s1", [0, 0], [0.1, 0.2]), ("p2", "s2", [1, 0], [0.9, 0.3])])
    assert choose_aggregation(tied)["how"] == "max"  # every aggregation 1.0: max
    # on test the max would win (and the mean lose): the endpoint still uses validation's choice
    test = _slices(
        [
            ("q1", "t1", [0, 0, 0], [0.3, 0.3, 0.3]),
            ("q2", "t2", [1, 0, 0], [0.9, 0.05, 0.05]),
            ("q3", "t3", [0, 0, 0], [0.4, 0.35, 0.4]),
            ("q4", "t4", [1, 0, 0], [0.8, 0.1, 0.1]),
        ]
    )
    on_test = choose_aggregation(test, k=2)
    assert on_test["how"] == "max" and on_test["val_auc"]["mean"] < 1.0
    e = exam_endpoint(val, test, scan_bootstrap(test, 20, 0, 0.95, k=2), k=2)
    assert e["aggregation"]["how"] == "mean"
    means = aggregate_scans(test, "mean")["score"].to_numpy()
    assert e["test"]["youden"]["tp"] == int(
        ((means >= e["thresholds"]["youden"]) & (np.array([0, 1, 0, 1]) == 1)).sum()
    )


def test_scan_threshold_comes_from_validation_not_test() -> None:
    """Choosing on test would give another threshold and other numbers; the endpoint uses validation's."""
    rng = np.random.default_rng(0)

    def scans(n_pat: int, shift: float) -> pd.DataFrame:
        out = []
        for p in range(n_pat):
            for k in range(2):
                lab = int(rng.random() < 0.5)
                labels = [lab, 0, 0]
                base = rng.normal(0.3 + 0.3 * lab + shift * lab, 0.15)
                out.append(
                    (
                        f"P{p}",
                        f"P{p}-{k}",
                        labels,
                        list(np.clip([base, base - 0.2, base - 0.25], 0.001, 0.999)),
                    )
                )
        return _slices(out)

    val, test = scans(20, 0.0), scans(20, 0.25)  # test positives score higher: test's own Youden differs
    boot = scan_bootstrap(test, 200, 1, 0.95)
    e = exam_endpoint(val, test, boot, sensitivities=(0.9,), specificities=(0.9,))
    how = e["aggregation"]["how"]
    vs, ts = aggregate_scans(val, how), aggregate_scans(test, how)
    t_val = _youden_brute(vs["label"].to_numpy(), vs["score"].to_numpy())
    t_test = _youden_brute(ts["label"].to_numpy(), ts["score"].to_numpy())
    assert t_val != pytest.approx(t_test)
    assert e["thresholds"]["youden"] == pytest.approx(t_val)
    y = e["test"]["youden"]
    yt, st = ts["label"].to_numpy(), ts["score"].to_numpy()
    pred = st >= t_val
    assert (y["tp"], y["fp"], y["fn"], y["tn"]) == (
        int((pred & (yt == 1)).sum()),
        int((pred & (yt == 0)).sum()),
        int((~pred & (yt == 1)).sum()),
        int((~pred & (yt == 0)).sum()),
    )
    assert y["npv"]["estimate"] == pytest.approx(y["tn"] / (y["tn"] + y["fn"]))
    pred_test = st >= t_test
    assert (int((pred_test & (yt == 1)).sum()), int((pred_test & (yt == 0)).sum())) != (y["tp"], y["fp"])
    # the fixed-sensitivity threshold reaches >= 0.9 sensitivity on VALIDATION scans (highest such)
    t90 = e["thresholds"]["at_sensitivity"]["0.9"]
    pos = np.sort(vs.loc[vs["label"] == 1, "score"].to_numpy())
    assert (pos >= t90).mean() >= 0.9 and (pos > t90).mean() < 0.9
    t_spec = e["thresholds"]["at_specificity"]["0.9"]
    assert (vs.loc[vs["label"] == 0, "score"] < t_spec).mean() >= 0.9


def test_partition_counts_by_hand() -> None:
    f = _slices(
        [
            ("p1", "a", [0, 1, 0], [0.1] * 3),
            ("p1", "b", [0, 0], [0.1] * 2),
            ("p2", "c", [0], [0.1]),
            ("p3", "d", [1, 1], [0.1] * 2),
        ]
    )
    assert partition_counts(f) == {
        "n_patients": 3,
        "n_positive_patients": 2,
        "n_scans": 4,
        "n_positive_scans": 2,
        "n_slices": 8,
        "n_positive": 3,
    }


def test_compare_stores_the_exam_endpoint_and_states_it_in_the_verdict() -> None:
    rng = np.random.default_rng(3)

    def preds() -> pd.DataFrame:
        out = []
        for fam, sd in (("good", 0.5), ("bad", 3.0)):
            rng2 = np.random.default_rng(7)  # same scans and labels for both families
            rows = []
            for p in range(12):
                lab = int(rng2.random() < 0.5)
                labels = [lab, lab, 0, 0]
                scores = 1 / (1 + np.exp(-(2 * np.array(labels) - 1 + rng.normal(0, sd, 4))))
                rows.append((f"P{p:02d}", f"P{p:02d}-s", labels, list(scores)))
            out.append(_slices(rows, fam))
        return pd.concat(out, ignore_index=True)

    doc = compare(preds(), preds(), reference="good", n_resamples=200, seed=0)
    assert doc["format"] == "dvt-search-comparison/3"
    e = doc["families"]["good"]["exam"]
    assert {"aggregation", "thresholds", "test", "counts", "calibration", "decision_curve"} <= set(e)
    assert doc["counts"]["test"]["n_scans"] == 12
    line = next(v for v in doc["verdict"] if v.startswith("Exam level"))
    assert "NPV" in line and f"{e['test']['youden']['threshold']:.3g}" in line


def test_scan_and_slice_bootstraps_draw_the_same_patients() -> None:
    """The exam-level intervals are paired with the slice-level ones: identical patient resamples."""
    f = _slices(
        [
            ("p1", "a", [0, 1, 0], [0.1] * 3),
            ("p1", "b", [0, 0], [0.1] * 2),
            ("p2", "c", [0], [0.1]),
            ("p3", "d", [1, 1], [0.1] * 2),
            ("p4", "e", [0, 0], [0.1] * 2),
        ]
    )
    slices = PatientBootstrap(f["patient_id"], n_resamples=50, seed=9, strata=f["label"])
    scans = scan_bootstrap(f, 50, 9, 0.95)
    np.testing.assert_array_equal(slices.counts, scans.counts)

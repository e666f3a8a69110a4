"""Metrics against scikit-learn and small hand-worked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from dvt_search.engine import metrics as M


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # coarse rounding makes many ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_perfect_and_inverted() -> None:
    y = np.array([0, 0, 1, 1])
    assert M.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_auc_single_class_is_nan_with_warning() -> None:
    with pytest.warns(UserWarning, match="single class"):
        assert math.isnan(M.roc_auc([1, 1, 1], [0.2, 0.4, 0.9]))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        M.roc_auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        M.roc_auc([0, 2], [0.5, 0.6])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.5, float("nan")])


def test_youden_threshold_hand_example() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.3, 0.6, 0.4, 0.7, 0.9])
    # thresholds: 0.9 -> J=1/3; 0.7 -> 2/3; 0.6 -> 2/3-1/3; 0.4 -> 1-1/3=2/3; 0.3 -> 1-2/3 ...
    # maximum J = 2/3, first reached (highest threshold) at 0.7
    assert M.youden_threshold(y, s) == 0.7
    p, r = M.precision_recall(y, s, 0.7)
    assert (p, r) == (1.0, pytest.approx(2 / 3))


def test_threshold_at_sensitivity() -> None:
    y = np.array([0, 1, 1, 1, 1, 0])
    s = np.array([0.2, 0.3, 0.5, 0.8, 0.9, 0.95])
    assert M.threshold_at_sensitivity(y, s, 0.5) == 0.8
    assert M.threshold_at_sensitivity(y, s, 1.0) == 0.3
    _, recall = M.precision_recall(y, s, M.threshold_at_sensitivity(y, s, 0.75))
    assert recall >= 0.75


def test_confusion_matches_sklearn_layout() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    c = M.confusion(y, s, 0.5)
    tn, fp, fn, tp = confusion_matrix(y, s >= 0.5).ravel()
    assert (c.tp, c.fp, c.fn, c.tn) == (tp, fp, fn, tn)
    assert c.as_matrix().tolist() == [[tp, fp], [fn, tn]]


def test_precision_zero_division_is_zero() -> None:
    assert M.precision_recall([0, 1], [0.1, 0.2], 0.5) == (0.0, 0.0)


def test_patch_auc_flattens() -> None:
    targets = np.array([[[0, 1], [0, 0]], [[1, 0], [0, 0]]])
    scores = np.array([[[0.1, 0.9], [0.2, 0.3]], [[0.8, 0.4], [0.1, 0.2]]])
    assert M.patch_auc(targets, scores) == 1.0


def test_dice_per_slice() -> None:
    masks = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros((3, 4, 4), np.uint8)
    masks[1, :2] = 1  # 8 pixels
    pred[1, :1] = 1  # 4 pixels, all inside
    masks[2, 0, 0] = 1
    pred[2, 3, 3] = 1
    d = M.dice_per_slice(masks, pred)
    assert d.tolist() == [1.0, pytest.approx(2 * 4 / 12), 0.0]
    assert M.mean_dice(masks, pred) == pytest.approx((1 + 2 / 3) / 3)


def test_classification_metrics_keys() -> None:
    out = M.classification_metrics([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9])
    assert set(out) == {"auc", "precision", "recall", "threshold"}
    assert out["auc"] == 1.0 and out["recall"] == 1.0 and out["precision"] == 1.0


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Brute force: every (positive, negative) pair, 1 for a win and 1/2 for a tie."""
    pos, neg = s[y == 1], s[y == 0]
    credit = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return credit / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_brute_force_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    s = rng.integers(0, 4 if seed % 2 else 50, n).astype(float)  # few distinct values: many ties
    assert M.roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-12)


def test_auc_all_tied_is_one_half_and_order_free() -> None:
    y = np.array([1, 0, 1, 0, 0])
    assert M.roc_auc(y, np.full(5, 0.3)) == 0.5
    perm = np.array([3, 1, 4, 0, 2])
    s = np.array([0.2, 0.2, 0.9, 0.1, 0.2])
    assert M.roc_auc(y[perm], s[perm]) == M.roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_every_auc_name_is_the_engine_one() -> None:
    """stats.measures.auc and the SIFT family's validation AUC agree with engine.metrics.roc_auc."""
    from dvt_search.stats.measures import auc

    y = np.array([0, 1, 1, 0, 1, 0, 0])
    s = np.array([0.1, 0.4, 0.4, 0.4, 0.9, 0.05, 0.6])
    assert auc(y, s) == M.roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the statistics name stays silent on a single class
        assert math.isnan(auc(np.ones(4), np.arange(4.0)))
        assert math.isnan(M.roc_auc(np.ones(4), np.arange(4.0), warn=False))

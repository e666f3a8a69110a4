"""The comparison document from synthetic prediction tables (no models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dvt_search.stats.compare import compare
from dvt_search.stats.measures import aggregate_scans, auc


def _preds(partition_seed: int, noise: dict[str, float], n_pat: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(partition_seed)
    rows = []
    for p in range(n_pat):
        for sc in range(2):
            scan_pos = rng.random() < 0.5
            for z in range(6):
                rows.append((f"P{p:02d}", f"P{p:02d}-S{sc}", z, int(scan_pos and z in (2, 3))))
    base = pd.DataFrame(rows, columns=["patient_id", "scan_id", "slice_index", "label"])
    base["row"] = np.arange(len(base))
    out = []
    for fam, sd in noise.items():
        f = base.copy()
        f["family"], f["trial_id"] = fam, f"{fam}-t"
        f["score"] = 1 / (1 + np.exp(-(2 * f["label"] - 1 + rng.normal(0, sd, len(f)))))
        out.append(f)
    return pd.concat(out, ignore_index=True)


def test_compare_good_vs_chance_is_significant_and_similar_is_not() -> None:
    noise = {"good": 0.4, "twin": 0.41, "chance": 50.0}
    val, test = _preds(1, noise), _preds(2, noise)
    doc = compare(val, test, reference="good", n_resamples=2000, seed=3)
    fam = doc["families"]["good"]
    g = test[test["family"] == "good"]
    assert fam["test"]["auc"]["estimate"] == pytest.approx(auc(g["label"], g["score"]))
    scans = aggregate_scans(g, "max")
    assert fam["scan_level"]["max"]["estimate"] == pytest.approx(auc(scans["label"], scans["score"]))
    assert fam["scan_level"]["n_scans"] == 60
    vs = {r["b"]: r for r in doc["vs_reference"]}
    assert vs["chance"]["significant"] and vs["chance"]["diff"] > 0
    assert not vs["twin"]["significant"]
    text = " ".join(doc["verdict"])
    assert "NOT a statistically significant" in text and "good vs chance" in text
    assert len(doc["pairs"]) == 3


def test_compare_rejects_misaligned_predictions() -> None:
    noise = {"a": 1.0, "b": 1.0}
    test = _preds(2, noise)
    test = test[~((test["family"] == "b") & (test["row"] == 0))]
    with pytest.raises(ValueError, match="same slices"):
        compare(_preds(1, noise), test, reference="a", n_resamples=50)


def test_compare_without_winners() -> None:
    empty = pd.DataFrame(
        columns=["family", "trial_id", "row", "patient_id", "scan_id", "slice_index", "label", "score"]
    )
    doc = compare(empty, empty)
    assert doc["families"] == {} and "nothing was compared" in doc["verdict"][0]

"""export -> load -> predict reproduces the in-memory predictions (torch family and SIFT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dvt_search.data.dataset import build_datasets
from dvt_search.deploy.export import export_run, file_digest_ok
from dvt_search.deploy.preprocess import spec_from_preprocess
from dvt_search.families import get

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")]


def _test_rows(selected_run, family: str) -> pd.DataFrame:
    preds = pd.read_parquet(selected_run["run"].path / "test_predictions.parquet")
    return preds[preds["family"] == family].sort_values("row")


def _test_dataset(selected_run, directory: Path):
    spec = spec_from_preprocess(json.loads((directory / "preprocess.json").read_text()))
    run = selected_run["run"].path
    return build_datasets(
        selected_run["manifest"], run / "splits.json", size=spec.image_size, windows=spec.windows
    )["test"]


def test_torchscript_and_reloaded_family_reproduce_selection_scores(selected_run, exported: Path) -> None:
    d = exported / "vgg16"
    info = json.loads((d / "export.json").read_text())
    assert info["kind"] == "torch" and info["torchscript"]["max_abs_diff"] <= 1e-4
    assert file_digest_ok(d)
    assert not (d / "train_state.pt").exists()
    ds = _test_dataset(selected_run, d)
    expected = _test_rows(selected_run, "vgg16")["score"].to_numpy()
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    ts = torch.jit.load(str(d / "model.ts"))
    with torch.inference_mode():
        np.testing.assert_allclose(ts(x).double().numpy(), expected, atol=1e-5)
    reloaded = get("vgg16").load(d)  # the export directory is itself a checkpoint
    np.testing.assert_allclose(reloaded.predict(ds), expected, atol=1e-5)
    state = torch.load(d / "weights.pt", weights_only=True)
    assert set(state) == set(reloaded.module.state_dict())


def test_onnx_graph_matches_eager(selected_run, exported: Path) -> None:
    d = exported / "vgg16"
    info = json.loads((d / "export.json").read_text())
    assert info["onnx"]["ok"], info["onnx"]
    import onnx
    from onnx.reference import ReferenceEvaluator

    ds = _test_dataset(selected_run, d)
    x = torch.stack([ds[i]["image"] for i in range(3)]).numpy()
    got = ReferenceEvaluator(onnx.load(str(d / "model.onnx"))).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, _test_rows(selected_run, "vgg16")["score"].to_numpy()[:3], atol=1e-4)


def test_sift_export_is_pickle_free_and_reproduces_scores(selected_run, exported: Path) -> None:
    d = exported / "sift_bow_svm"
    info = json.loads((d / "export.json").read_text())
    assert (
        info["kind"] == "classic"
        and not info["onnx"]["ok"]
        and "not a neural network" in info["onnx"]["error"]
    )
    assert not list(d.glob("*.pkl")) and not (d / "model.ts").exists()
    for f in d.glob("*.np[yz]"):
        np.load(f, allow_pickle=False)  # raises if anything needed pickle
    model = get("sift_bow_svm").load(d)
    model.use_cache = False
    ds = _test_dataset(selected_run, d)
    np.testing.assert_allclose(
        model.predict(ds), _test_rows(selected_run, "sift_bow_svm")["score"], atol=1e-9
    )


def test_cards_thresholds_and_metrics(selected_run, exported: Path) -> None:
    comp = json.loads((selected_run["run"].path / "comparison.json").read_text())
    for fam in ("vgg16", "sift_bow_svm"):
        d = exported / fam
        thr = json.loads((d / "threshold.json").read_text())
        assert thr["threshold"] == comp["families"][fam]["thresholds"]["youden"]
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["test"]["auc"] == comp["families"][fam]["test"]["auc"]
        exam = comp["families"][fam]["exam"]  # the scan decision chosen on validation scans
        assert thr["scan_threshold"] == exam["thresholds"]["youden"]
        assert thr["scan_aggregation"] == {"how": exam["aggregation"]["how"], "k": exam["aggregation"]["k"]}
        assert metrics["test"]["exam"]["thresholds"] == exam["thresholds"]
        card = (d / "MODEL_CARD.md").read_text()
        assert "Exam level (primary endpoint" in card and "| NPV |" in card and "no-skill reference" in card
        for needle in (
            "Intended use",
            "synthetic phantom",
            "5 trials were searched",
            "Limitations",
            "test AUC",
            "AUC intervals clustered (Obuchowski 1997",
        ):
            assert needle in card, needle
        if comp["test"]["n_patients"] < 30:  # the tiny run: the card must warn
            assert "**Warning: only" in card and "indicative only" in card
    pre = json.loads((exported / "vgg16" / "preprocess.json").read_text())
    assert pre["resize"]["size"] == 32 and pre["windows"] == [[40.0, 400.0]] and pre["channels"] == 1


def test_export_unknown_family_fails_clearly(selected_run, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="patch_resnet50"):
        export_run(selected_run["run"].path, tmp_path, families=["patch_resnet50"])


def test_export_of_an_older_comparison_keeps_the_slice_rule(selected_run, tmp_path: Path) -> None:
    """A comparison without the exam endpoint (format 2): no scan threshold, predict falls back to max."""
    from dvt_search.deploy.export import export_winner
    from dvt_search.deploy.scan_rule import scan_decision
    from dvt_search.selection.documents import read_comparison, read_selection

    run = selected_run["run"].path
    comp = read_comparison(run)
    comp["format"] = "dvt-search-comparison/2"
    for st in comp["families"].values():
        st.pop("exam")
    d = export_winner(run, "sift_bow_svm", read_selection(run), comp, tmp_path)
    thr = json.loads((d / "threshold.json").read_text())
    assert thr["scan_threshold"] is None and thr["scan_aggregation"] is None
    assert thr["threshold"] == comp["families"]["sift_bow_svm"]["thresholds"]["youden"]
    t = thr["threshold"]
    below, above = scan_decision(d, np.array([t - 0.2, t - 0.1])), scan_decision(d, np.array([t - 0.1, t]))
    assert not below["scan_positive"] and above["scan_positive"] and "slice threshold" in above["scan_rule"]
    assert "not recorded" in (d / "MODEL_CARD.md").read_text()

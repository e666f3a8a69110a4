"""`select` on a real tiny run: winners, test predictions, comparison, split verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dvt_search.data.schema import read_manifest
from dvt_search.selection.evaluate import SelectionError
from dvt_search.selection.run import select_run

pytestmark = pytest.mark.slow


def test_selection_document_and_files(selected_run) -> None:
    run, sel = selected_run["run"], selected_run["selection"]
    assert sel["n_trials"] == 5
    fams = sel["families"]
    assert fams["vgg16"]["winner"]["trial_id"] == "vgg1_0" and fams["vgg16"]["n_failed"] == 1
    assert fams["multitask_unet"]["n_trials"] == 2 and fams["multitask_unet"]["n_stopped"] == 1
    assert fams["patch_resnet50"]["winner"] is None and fams["patch_resnet50"]["n_trials"] == 0
    assert fams["sift_bow_svm"]["winner"] is not None
    assert sel["test"]["evaluated"] and sel["test"]["families"] == ["multitask_unet", "sift_bow_svm", "vgg16"]
    for fam, check in sel["test"]["validation_check"].items():
        assert check["agrees"], (fam, check)  # the checkpoint reproduces the recorded val_auc
    on_disk = json.loads((run.path / "selection.json").read_text())
    assert on_disk["overall"]["family"] == sel["overall"]["family"]
    for name in ("leaderboard.parquet", "leaderboard.csv", "comparison.json", "val_predictions.parquet"):
        assert (run.path / name).is_file(), name


def test_test_predictions_hold_manifest_pseudonyms_of_the_test_partition(selected_run) -> None:
    run = selected_run["run"]
    preds = pd.read_parquet(run.path / "test_predictions.parquet")
    assert {"family", "row", "patient_id", "scan_id", "label", "score"} <= set(preds.columns)
    df = read_manifest(selected_run["manifest"])
    splits = json.loads((run.path / "splits.json").read_text())
    assert set(preds["scan_id"]) == set(splits["partitions"]["test"])
    assert set(preds["patient_id"]) <= set(df["patient_id"])
    per = preds.groupby("family").size()
    assert per.nunique() == 1 and set(per.index) == {"multitask_unet", "sift_bow_svm", "vgg16"}
    assert preds["score"].between(0, 1).all()


def test_comparison_has_intervals_and_pairwise_tests(selected_run) -> None:
    comp = json.loads((selected_run["run"].path / "comparison.json").read_text())
    assert comp["n_resamples"] >= 2000
    for stats in comp["families"].values():
        auc = stats["test"]["auc"]
        assert auc["low"] <= auc["estimate"] <= auc["high"]
        assert [op["target_sensitivity"] for op in stats["operating_points"]] == [0.8, 0.9]
        scan = stats["scan_level"]
        assert {"max", "mean", "topk"} <= set(scan) or 0 in (
            scan["n_positive"],
            scan["n_scans"] - scan["n_positive"],
        )
    assert len(comp["pairs"]) == 3 and len(comp["vs_reference"]) == 2
    assert all(0 <= p["delong_p_holm"] <= 1 for p in comp["pairs"])
    assert any("DeLong" in line for line in comp["verdict"])


def test_split_hash_mismatch_refuses_to_touch_test(selected_run, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, copy)
    info = json.loads((copy / "run.json").read_text())
    info["splits_hash"] = "0" * 64
    (copy / "run.json").write_text(json.dumps(info))
    (copy / "test_predictions.parquet").unlink()
    with pytest.raises(SelectionError, match="splits hash"):
        select_run(copy, n_resamples=10, force=True)  # even --force never skips the split check
    assert not (copy / "test_predictions.parquet").exists()

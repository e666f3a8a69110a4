"""`select` scores each family's paper-configuration trial on test beside its winner; the report shows it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dvt_search.rundir import RunDir, TrialRecord
from dvt_search.selection.leaderboard import collect
from dvt_search.stats.clustered import clustered_test

pytestmark = pytest.mark.slow
SIZE = 32


def _train_paper_trial(run: RunDir, manifest: Path, cache: Path) -> None:
    """A real (deliberately weak: tiny lr) vgg16 trial recorded as the paper configuration."""
    import torch

    from dvt_search.data.dataset import SliceDataset, build_datasets, spec_for
    from dvt_search.families import get
    from dvt_search.families.base import FitData

    torch.set_num_threads(1)
    ds = build_datasets(manifest, run.splits_file, size=SIZE)
    small = SliceDataset(ds["train"].frame.iloc[::4], ds["train"].root, size=SIZE)
    params = {"batch_size": 8, "seed": 3, "head": "gap", "batch_norm": True, "lr": 1e-7, "weight_decay": 0.0}
    model = get("vgg16").build(params, spec_for(small))
    model.fit(FitData(small, ds["val"], cache_dir=cache), 1)
    # A 1e-7-lr network's validation AUC is a coin flip around 0.5 and can beat the tiny run's searched
    # trials; its recorded validation AUC is set below theirs so that the winner is a searched trial and
    # the comparison path runs (the test-set comparison below uses the checkpoint's real predictions).
    m = {**model.history[-1].metrics, "val_auc": 0.05}
    run.append_epoch("vgg16", "vgg1_p", {"epoch": 1, **m})
    model.save(run.checkpoint_dir("vgg16", "vgg1_p"))
    rec = TrialRecord(
        "vgg1_p",
        "vgg16",
        params,
        status="completed",
        epochs=1,
        max_epochs=1,
        best_epoch=1,
        best=m,
        last=m,
        cpu_s=1.0,
        has_checkpoint=True,
        optuna_number=0,
        paper_config=True,
        paper_outside_space=["weight_decay"],
    )
    run.write_trial(rec)


@pytest.fixture(scope="module")
def paper_run(selected_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from dvt_search.selection.run import select_run

    root = tmp_path_factory.mktemp("paper")
    run = RunDir(root / "run")
    shutil.copytree(selected_run["run"].path, run.path)
    _train_paper_trial(run, selected_run["manifest"], selected_run["cache"])
    sift = run.read_trial("sift_bow_svm", "sift_0")
    sift.paper_config = True  # the SIFT family's only trial: its paper setting is its winner
    run.write_trial(sift)
    sel = select_run(
        run.path, n_resamples=200, seed=0, force=True
    )  # the copied run was evaluated once already
    return {"run": run, "selection": sel, "manifest": selected_run["manifest"]}


def test_leaderboard_marks_the_paper_trials(paper_run) -> None:
    lb = collect(paper_run["run"])
    marked = lb[lb["paper_config"]][["family", "trial_id"]].values.tolist()
    assert sorted(map(tuple, marked)) == [("sift_bow_svm", "sift_0"), ("vgg16", "vgg1_p")]


def test_paper_trial_is_scored_on_test_and_compared_with_the_clustered_paired_test(paper_run) -> None:
    sel = paper_run["selection"]
    svp = sel["search_vs_paper"]
    fams = svp["families"]
    assert sel["families"]["vgg16"]["winner"]["trial_id"] == "vgg1_0"  # the tiny-lr paper trial lost on val
    v = fams["vgg16"]
    assert v["status"] == "compared" and v["paper_trial_id"] == "vgg1_p"
    assert v["paper_outside_space"] == ["weight_decay"] and v["n_trials"] == 3
    assert fams["sift_bow_svm"]["status"] == "the paper setting is the selected model"
    assert fams["multitask_unet"]["status"] == "no paper-configuration trial in this run"
    assert svp["multiplicity"]["m"] == 1 and "not a second look" in svp["note"]
    # the paired test is the winner's stored test predictions vs the paper checkpoint's own predictions
    from dvt_search.data.dataset import build_datasets
    from dvt_search.selection.models import load_checkpoint

    run = paper_run["run"]
    test = pd.read_parquet(run.path / "test_predictions.parquet")
    w = test[test["family"] == "vgg16"].sort_values("row")
    ds = build_datasets(paper_run["manifest"], run.splits_file, size=SIZE)["test"]
    paper_scores = load_checkpoint(run.checkpoint_dir("vgg16", "vgg1_p")).predict(ds, device="cpu")
    expect = clustered_test(w["label"], w["score"], paper_scores, w["patient_id"])
    assert v["test"]["diff"]["estimate"] == pytest.approx(expect.diff.estimate, abs=1e-9)
    assert v["paper"]["test_auc"]["estimate"] == pytest.approx(expect.auc_b, abs=1e-9)
    assert v["winner"]["test_auc"]["estimate"] == pytest.approx(expect.auc_a, abs=1e-9)
    assert np.isnan(v["p_holm"]) or v["p_holm"] == pytest.approx(min(1.0, expect.p), abs=1e-12)
    gap = v["winner"]["val_auc"] - v["winner"]["test_auc"]["estimate"]
    assert v["winner"]["val_minus_test"] == pytest.approx(gap)
    on_disk = json.loads((run.path / "selection.json").read_text())
    assert on_disk["search_vs_paper"]["families"]["vgg16"]["status"] == "compared"


def test_report_shows_search_vs_paper_and_the_winners_curse(paper_run, tmp_path) -> None:
    from dvt_search.report.build import write_report

    _, md = write_report(paper_run["run"].path, tmp_path, cam_per_family=0)
    text = md.read_text()
    assert "Search vs the paper's hand-tuning" in text and "not a second look" in text
    assert "Winner's curse" in text and "best of 3 trial(s) on validation" in text
    assert "it found nothing better on validation" in text  # SIFT: the paper setting won
    section = text[text.index("Search vs the paper's hand-tuning") :]
    row = next(line for line in section.splitlines() if line.startswith("| vgg16 "))
    assert "vgg1_0" in row and "vgg1_p" in row and "weight_decay" in row and "compared" in row

"""Selection from synthetic run directories: ties, failures, missing families, trial counts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dvt_search.selection.leaderboard import collect, read_leaderboard, write_leaderboard
from dvt_search.selection.selector import choose


@pytest.fixture()
def run(tmp_path: Path, run_factory):
    make_run, trial = run_factory
    trials = [
        trial("vgg16", "v0", 0.70, cpu_s=50.0),
        trial("vgg16", "v1", 0.70, cpu_s=20.0),  # tie with v0, cheaper -> wins
        trial("vgg16", "v2", 0.90, status="failed", error="CUDA OOM\ntraceback..."),  # never selected
        trial("vgg16", "v3", 0.95, ckpt=None),  # best metric but no checkpoint -> never selected
        trial("densenet161", "d0", 0.65, status="stopped", epochs=1, curve=[0.65]),
        trial("densenet161", "d1", 0.60, params={"lr": 0.01, "dropout": 0.2, "kind": "a"}),
        trial("sift_bow_svm", "s0", None, status="failed", error="boom", ckpt=None),
        trial("multitask_unet", "m0", 0.70, gpu_s=5.0, cpu_s=5.0, ckpt={"n_params": 100}),
        trial("multitask_unet", "m1", 0.70, gpu_s=5.0, cpu_s=5.0, ckpt={"n_params": 50}),
        trial("multitask_unet", "m2", 0.70, status="running"),
    ]
    fams = ["sift_bow_svm", "vgg16", "densenet161", "multitask_unet", "patch_resnet50"]
    return make_run(tmp_path / "run", fams, trials)


def _n_params(run):
    def count(row):
        meta = json.loads((run.path / row["checkpoint"] / "meta.json").read_text())
        return meta.get("n_params")

    return count


def test_leaderboard_columns_and_files(run) -> None:
    lb = collect(run)
    assert len(lb) == 10
    v2 = lb.set_index("trial_id").loc["v2"]
    assert v2["ended"] == "failed" and v2["error"] == "CUDA OOM" and v2["has_checkpoint"]
    assert lb.set_index("trial_id").loc["d0", "ended"] == "stopped early"
    assert lb.set_index("trial_id").loc["m2", "ended"] == "unfinished"
    assert not lb.set_index("trial_id").loc["v3", "has_checkpoint"]
    curve = json.loads(lb.set_index("trial_id").loc["v0", "curve"])
    assert [c["epoch"] for c in curve] == [1, 2, 3] and "train_loss" not in curve[0]
    assert {"best_val_auc", "last_val_loss", "param_lr", "param_dropout", "params", "cost_s"} <= set(
        lb.columns
    )
    assert lb["param_dropout"].isna().sum() == 9  # only d1 has it
    pq, csv = write_leaderboard(run, lb)
    back = read_leaderboard(run.path)
    assert back["trial_id"].tolist() == lb["trial_id"].tolist()
    assert pd.read_csv(csv)["best_val_auc"].notna().sum() == 9
    assert not list(run.path.glob(".*.tmp"))


def test_choose_ties_failures_missing_families_and_counts(run) -> None:
    lb = collect(run)
    c = choose(
        lb,
        families=["sift_bow_svm", "vgg16", "densenet161", "multitask_unet", "patch_resnet50"],
        n_params=_n_params(run),
    )
    assert c.n_trials == 10
    v = c.families["vgg16"]
    assert (v.n_trials, v.n_failed, v.n_candidates) == (4, 1, 2)
    assert v.winner.trial_id == "v1" and v.winner.tied_with == ["v0"] and "tie" in v.note
    d = c.families["densenet161"]
    assert d.winner.trial_id == "d0" and d.n_stopped == 1  # stopped early still counts
    assert c.families["multitask_unet"].winner.trial_id == "m1"  # same cost, fewer parameters
    assert c.families["multitask_unet"].winner.n_params == 50
    assert c.families["multitask_unet"].n_unfinished == 1
    s = c.families["sift_bow_svm"]
    assert s.winner is None and "failed" in s.note and s.n_trials == 1
    p = c.families["patch_resnet50"]
    assert p.winner is None and p.n_trials == 0 and "no trials" in p.note
    # overall: vgg16 v1 and multitask m1 tie at 0.70; m1 is cheaper (10 s vs 20 s)
    assert (c.overall.family, c.overall.trial_id) == ("multitask_unet", "m1")
    assert sum(f.n_trials for f in c.families.values()) == c.n_trials


def test_choose_min_mode_and_epoch_tie_break(tmp_path: Path, run_factory) -> None:
    make_run, trial = run_factory
    run = make_run(
        tmp_path / "r",
        ["vgg16"],
        [
            trial("vgg16", "a", 0.7, epochs=3, best={"val_loss": 0.30, "val_auc": 0.7}),
            trial("vgg16", "b", 0.8, epochs=2, curve=[0.7, 0.8], best={"val_loss": 0.30, "val_auc": 0.8}),
            trial("vgg16", "c", 0.9, epochs=3, best={"val_loss": 0.40, "val_auc": 0.9}),
        ],
    )
    c = choose(collect(run), metric="val_loss", mode="min")
    assert c.overall.trial_id == "b"  # equal loss and cost -> fewer epochs
    assert choose(collect(run)).overall.trial_id == "c"
    with pytest.raises(KeyError, match="val_dice"):
        choose(collect(run), metric="val_dice")


def test_best_epoch_derived_from_curve_when_record_lacks_it(tmp_path: Path, run_factory) -> None:
    make_run, trial = run_factory
    run = make_run(tmp_path / "r", ["vgg16"], [trial("vgg16", "a", 0.7, best={}, curve=[0.6, 0.8, 0.7])])
    lb = collect(run)
    assert lb.loc[0, "best_val_auc"] == pytest.approx(0.8) and lb.loc[0, "best_epoch"] == 2


def test_empty_run(tmp_path: Path, run_factory) -> None:
    make_run, _ = run_factory
    run = make_run(tmp_path / "r", ["vgg16"], [])
    c = choose(collect(run), families=["vgg16"])
    assert c.overall is None and c.families["vgg16"].n_trials == 0 and c.n_trials == 0

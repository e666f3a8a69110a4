"""Guard of the tie-break ORDER (compute seconds before parameters before epochs; bench/mutation_check.py)."""

from __future__ import annotations

import json
from pathlib import Path

from dvt_search.selection.leaderboard import collect
from dvt_search.selection.selector import choose


def _n_params(run):
    def count(row):
        return json.loads((run.path / row["checkpoint"] / "meta.json").read_text()).get("n_params")

    return count


def test_a_tie_goes_to_fewer_compute_seconds_before_fewer_parameters(tmp_path: Path, run_factory) -> None:
    make_run, trial = run_factory
    run = make_run(
        tmp_path / "run",
        ["vgg16"],
        [
            # equal val AUC; "cheap" costs fewer seconds but has more parameters, and runs more epochs
            trial("vgg16", "cheap", 0.8, cpu_s=5.0, ckpt={"n_params": 1000}, epochs=3),
            trial("vgg16", "small", 0.8, cpu_s=9.0, ckpt={"n_params": 10}, epochs=3),
            trial("vgg16", "short", 0.8, cpu_s=9.0, ckpt={"n_params": 10}, epochs=2, curve=[0.7, 0.8]),
        ],
    )
    choice = choose(collect(run), families=["vgg16"], n_params=_n_params(run))
    w = choice.families["vgg16"].winner
    assert w.trial_id == "cheap"  # compute seconds decide first
    assert sorted(w.tied_with) == ["short", "small"]
    # without "cheap", parameters are equal, so fewer epochs decide before the trial id ("short" < "small")
    run2 = make_run(
        tmp_path / "run2",
        ["vgg16"],
        [
            trial("vgg16", "a_long", 0.8, cpu_s=9.0, ckpt={"n_params": 10}, epochs=3),
            trial("vgg16", "b_short", 0.8, cpu_s=9.0, ckpt={"n_params": 10}, epochs=2, curve=[0.7, 0.8]),
            trial("vgg16", "c_big", 0.8, cpu_s=9.0, ckpt={"n_params": 11}, epochs=1, curve=[0.8]),
        ],
    )
    w2 = choose(collect(run2), families=["vgg16"], n_params=_n_params(run2)).families["vgg16"].winner
    assert w2.trial_id == "b_short"  # parameters before epochs (c_big has fewer epochs but more params)

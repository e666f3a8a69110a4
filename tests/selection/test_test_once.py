"""Test once, recorded: every evaluation of the test set is logged; a different one needs --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dvt_search.cli import main
from dvt_search.rundir import RunDir
from dvt_search.selection.test_log import TestAlreadyEvaluated, check, summary

SETTINGS = {
    "metric": "val_auc",
    "mode": "max",
    "sensitivities": [0.8, 0.9],
    "specificities": [0.9],
    "n_resamples": 2000,
    "seed": 0,
    "level": 0.95,
}
WINNERS = {"vgg16": "a"}


def _rec(n: int, **kw) -> dict:
    return {"n": n, "time": "t", "settings": dict(SETTINGS), "families": dict(WINNERS), **kw}


def test_check_rules(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert check(run, [], SETTINGS, WINNERS, evaluate_test=True, force=False) is None  # first evaluation
    earlier = [_rec(1)]
    assert check(run, earlier, SETTINGS, WINNERS, evaluate_test=True, force=False) == 1  # a reproduction
    other = {**SETTINGS, "n_resamples": 200}
    with pytest.raises(TestAlreadyEvaluated, match=r"n_resamples 2000 -> 200.*--force") as exc:
        check(run, earlier, other, WINNERS, evaluate_test=True, force=False)
    assert "\n" not in str(exc.value)  # one line
    with pytest.raises(TestAlreadyEvaluated, match="winners"):
        check(run, earlier, SETTINGS, {"vgg16": "b"}, evaluate_test=True, force=False)
    with pytest.raises(TestAlreadyEvaluated, match="--no-test"):
        check(run, earlier, SETTINGS, WINNERS, evaluate_test=False, force=False)
    assert check(run, earlier, other, WINNERS, evaluate_test=True, force=True) is None


def test_summary_counts_only_genuinely_new_evaluations() -> None:
    log = [_rec(1), _rec(2, reproduces=1, same_predictions=True)]
    assert summary(log) == {
        "n_evaluations": 2,
        "n_distinct": 1,
        "n_forced": 0,
        "touched_more_than_once": False,
    }
    log.append(_rec(3, forced=True, reproduces=None))
    assert summary(log)["touched_more_than_once"] and summary(log)["n_forced"] == 1
    drift = [_rec(1), _rec(2, reproduces=1, same_predictions=False)]  # same settings, other predictions
    assert summary(drift)["touched_more_than_once"]


def _state(run: Path) -> dict[str, bytes]:
    names = (
        "selection.json",
        "comparison.json",
        "leaderboard.parquet",
        "test_predictions.parquet",
        "test_evaluations.jsonl",
    )
    # bytes, and inode + mtime: an atomic rewrite with identical content is still a rewrite
    return {n: ((run / n).read_bytes(), (run / n).stat().st_ino, (run / n).stat().st_mtime_ns) for n in names}


@pytest.mark.slow
def test_second_evaluation_refused_then_forced_and_reported(selected_run, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, run)
    log = RunDir(run).read_test_log()
    assert len(log) == 1 and log[0]["settings"]["n_resamples"] == 2000 and not log[0]["forced"]
    assert set(log[0]["families"]) == {"multitask_unet", "sift_bow_svm", "vgg16"}
    before = _state(run)

    assert main(["select", str(run), "--seed", "7"]) == 1  # other settings: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "already evaluated 1 time" in err[0]
        and "seed 0 -> 7" in err[0]
        and "--force" in err[0]
    )
    assert _state(run) == before  # nothing overwritten
    assert main(["select", str(run), "--no-test"]) == 1
    assert _state(run) == before

    assert main(["select", str(run)]) == 0  # the same settings: allowed, reproduces #1, recorded
    log = RunDir(run).read_test_log()
    assert len(log) == 2 and log[1]["reproduces"] == 1 and log[1]["same_predictions"]
    assert log[1]["comparison_sha256"] == log[0]["comparison_sha256"]  # the same numbers

    assert main(["select", str(run), "--seed", "7", "--force"]) == 0
    log = RunDir(run).read_test_log()
    assert len(log) == 3 and log[2]["forced"] and log[2]["settings"]["seed"] == 7
    assert [json.loads(line) for line in (run / "test_evaluations.jsonl").read_text().splitlines()][
        :2
    ] == log[:2]
    assert json.loads((run / "selection.json").read_text())["test"]["evaluation"] == 3

    from dvt_search.report.build import write_report

    html, md = write_report(run, tmp_path / "rep", cam_per_family=0)
    text = md.read_text()
    assert "Test-set evaluations" in text and "evaluated 3 times, 2 of them with different" in text
    assert "| 3 |" in text and "forced" in text and "repeat of #1" in text


@pytest.mark.slow
def test_run_selected_before_the_log_is_reconstructed(selected_run, tmp_path: Path) -> None:
    from dvt_search.selection.run import select_run

    run = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, run)
    (run / "test_evaluations.jsonl").unlink()
    with pytest.raises(TestAlreadyEvaluated, match="already evaluated 1 time"):
        select_run(run, n_resamples=100)
    assert not (run / "test_evaluations.jsonl").exists()
    select_run(run, n_resamples=100, force=True)
    log = RunDir(run).read_test_log()
    assert [r["n"] for r in log] == [1, 2] and log[0]["reconstructed"] and log[1]["forced"]
    assert log[0]["settings"]["n_resamples"] == 2000

"""The select-room commands are registered and work end to end through `dvt-search`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dvt_search.cli import build_parser, main


def test_commands_registered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"select", "report", "export", "pull", "predict"} <= set(sub.choices)


@pytest.mark.slow
def test_select_report_export_via_cli(selected_run, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(selected_run["run"].path, run)
    # the fixture already evaluated test with the defaults: other settings need --force (issue 11 item 5)
    assert main(["select", str(run), "--resamples", "200", "--sensitivities", "0.85", "--force"]) == 0
    out = capsys.readouterr().out
    sel = json.loads((run / "selection.json").read_text())
    assert "5 trials in run tiny" in out and "no trials were run" in out
    assert f"overall: {sel['overall']['family']} trial {sel['overall']['trial_id']}" in out
    comp = json.loads((run / "comparison.json").read_text())
    assert comp["n_resamples"] == 200 and comp["sensitivities"] == [0.85]
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--cam", "0"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--family", "sift_bow_svm"]) == 0
    assert "exported sift_bow_svm (classic, no onnx)" in capsys.readouterr().out


def test_select_on_missing_run_fails_clearly(tmp_path: Path, capsys) -> None:
    assert main(["select", str(tmp_path)]) == 1
    assert "not a dvt-search run directory" in capsys.readouterr().err


def test_no_test_selection_touches_no_test_data(tmp_path: Path, run_factory, capsys) -> None:
    make_run, trial = run_factory
    make_run(tmp_path / "r", ["vgg16"], [trial("vgg16", "a", 0.7)])
    assert main(["select", str(tmp_path / "r"), "--no-test"]) == 0
    sel = json.loads((tmp_path / "r" / "selection.json").read_text())
    assert sel["test"] == {"evaluated": False} and sel["overall"]["trial_id"] == "a"
    assert not (tmp_path / "r" / "test_predictions.parquet").exists()

"""`pull` copies a run's results and only the selected checkpoints, from a path or a file:// URI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dvt_search.cli import main
from dvt_search.deploy.export import export_run
from dvt_search.deploy.pull import pull
from dvt_search.rundir.layout import RunDir, TrialRecord

pytestmark = pytest.mark.slow


@pytest.fixture()
def remote(selected_run, tmp_path: Path) -> Path:
    """A copy of the selected run plus a losing trial that has a checkpoint (must not be pulled)."""
    src = tmp_path / "cluster" / "run"
    shutil.copytree(selected_run["run"].path, src)
    run = RunDir(src)
    shutil.copytree(run.checkpoint_dir("vgg16", "vgg1_0"), run.checkpoint_dir("vgg16", "vgg1_2"))
    run.write_trial(
        TrialRecord(
            "vgg1_2", "vgg16", {}, status="completed", epochs=1, best={"val_auc": 0.0}, has_checkpoint=True
        )
    )
    return src


@pytest.mark.parametrize("as_uri", [False, True])
def test_pull_fetches_records_and_winner_checkpoints_only(remote: Path, tmp_path: Path, as_uri: bool) -> None:
    out = tmp_path / "local"
    pull(remote.as_uri() if as_uri else str(remote), out)
    sel = json.loads((out / "selection.json").read_text())
    for fam, c in sel["families"].items():
        if c["winner"]:
            assert (out / c["winner"]["checkpoint"] / "meta.json").is_file(), fam
    assert (out / "trials/vgg16/vgg1_2/trial.json").is_file()
    assert not (out / "trials/vgg16/vgg1_2/checkpoint").exists()
    for name in ("run.json", "splits.json", "comparison.json", "test_predictions.parquet", "optuna.journal"):
        assert (out / name).is_file(), name
    export_run(out, tmp_path / "models", families=["sift_bow_svm"])  # the pulled run is usable locally


def test_pull_without_selection_chooses_from_records(remote: Path, tmp_path: Path) -> None:
    (remote / "selection.json").unlink()
    out = tmp_path / "local"
    assert main(["pull", str(remote), "--out", str(out)]) == 0
    assert (out / "trials/vgg16/vgg1_0/checkpoint/weights.pt").is_file()
    assert not (out / "trials/vgg16/vgg1_2/checkpoint").exists()
    assert not (out / "selection.json").exists()


def test_pull_of_a_non_run_fails_clearly(tmp_path: Path, capsys) -> None:
    assert main(["pull", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "no run.json" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

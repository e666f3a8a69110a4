"""Failing trials: retried from their last checkpoint (FailureConfig), or recorded as failed when retries run out."""

from __future__ import annotations

import optuna
import pytest
from dvt_test_plugins import read_attempts
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir.layout import RunDir

EPOCHS = 3


@pytest.mark.ray
@pytest.mark.slow
def test_failing_trials_are_retried_from_checkpoints_and_recorded(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    state = tmp_path / "state"
    fixed = {"lr": 0.01, "batch_size": 8, "state_dir": str(state)}
    spaces = write_spaces(
        tmp_path / "spaces",
        {"tiny_cnn": {"fixed": {**fixed, "fail_attempts": 1}}, "tiny_cnn_broken": {"fixed": fixed}},
    )
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="flaky",
        families=["tiny_cnn", "tiny_cnn_broken"],
        trials=1,
        max_epochs=EPOCHS,
        size=32,
        space_dir=spaces,
        plugins=[PLUGIN],
        max_failures=1,
        scheduler="fifo",
        progress_every_s=1e9,
        include_dashboard=False,
    )
    best = run_search(opts)
    run = RunDir(tmp_path / "runs" / "flaky")
    (ok,) = run.trials("tiny_cnn")
    (broken,) = run.trials("tiny_cnn_broken")
    attempts = read_attempts(state)

    # retried once, resumed with 1 epoch done, then ran to the end
    assert [done for tid, done, _ in attempts if tid == ok.trial_id] == [0, 1]
    assert ok.status == "completed" and ok.failures == 1 and ok.error is None
    assert ok.epochs == EPOCHS and ok.has_checkpoint
    assert [r["epoch"] for r in run.read_epochs("tiny_cnn", ok.trial_id)] == list(range(1, EPOCHS + 1))
    assert best["tiny_cnn"].trial_id == ok.trial_id

    # failed in both attempts (the retry resumed from epoch 1): recorded as failed, with what it reached
    assert [done for tid, done, _ in attempts if tid == broken.trial_id] == [0, 1]
    assert broken.status == "failed" and broken.failures == 2
    assert "injected failure in attempt 2" in broken.error
    assert broken.epochs == 2 and broken.has_checkpoint
    assert best["tiny_cnn_broken"] is None

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run.path / "optuna.journal"))
    )
    states = {
        f: optuna.load_study(study_name=f, storage=storage).trials[0].state
        for f in ("tiny_cnn", "tiny_cnn_broken")
    }
    assert states == {
        "tiny_cnn": optuna.trial.TrialState.COMPLETE,
        "tiny_cnn_broken": optuna.trial.TrialState.FAIL,
    }

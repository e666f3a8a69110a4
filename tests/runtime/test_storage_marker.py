"""Shared storage enforced per trial: a trial that cannot read the driver's storage marker fails at once.

One machine has one filesystem, so there is no honest way here to give a second Ray node
(``ray.cluster_utils.Cluster``) another view of the storage. What is tested instead: the check itself on a
real run directory whose marker is missing, altered or unreadable, and a real search whose marker is
altered mid-run (what a node with a node-local or stale ``--storage`` sees): the next trial fails before it
trains, with the message naming the node and the path, recorded ``failed``, not retried, FAIL in Optuna.
"""

from __future__ import annotations

import socket
import threading
import time

import optuna
import pytest
from dvt_test_plugins import read_attempts
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir import RunDir
from dvt_search.runtime.storage import StorageError, check_marker


def _ref(run: RunDir, token: str) -> dict[str, str]:
    return {"run_dir": str(run.path), "family": "scripted", "metric": "val_auc", "marker": token}


def test_check_passes_on_the_drivers_token_and_names_node_and_path_otherwise(tmp_path) -> None:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    token = run.ensure_storage_marker()
    assert run.ensure_storage_marker() == token  # written once per run: a resume keeps it
    check_marker(_ref(run, token))  # the driver's view: passes

    run.storage_marker.write_text("dvt-search run r 0000 (another run)\n")
    with pytest.raises(StorageError) as altered:
        check_marker(_ref(run, token))
    run.storage_marker.unlink()
    with pytest.raises(StorageError) as missing:
        check_marker(_ref(run, token))
    run.storage_marker.mkdir()  # unreadable as a file
    with pytest.raises(StorageError) as unreadable:
        check_marker(_ref(run, token))
    for exc, reason in (
        (altered, "another run's token"),
        (missing, "no such file"),
        (unreadable, "cannot read"),
    ):
        message = str(exc.value)
        assert socket.gethostname() in message and str(run.storage_marker) in message, message
        assert reason in message and "every Ray node mounts at the same path" in message


@pytest.mark.ray
@pytest.mark.slow
def test_trial_on_a_node_without_the_marker_fails_at_once_not_retried(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    state = tmp_path / "state"
    spaces = write_spaces(
        tmp_path / "spaces", {"scripted": {"fixed": {"epoch_s": 1.0, "state_dir": str(state)}}}
    )
    run = RunDir(tmp_path / "runs" / "blind")

    def alter_marker_once_the_first_trial_trains() -> None:
        deadline = time.monotonic() + 300
        while not read_attempts(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        run.storage_marker.write_text("a node-local copy of another run\n")

    watcher = threading.Thread(target=alter_marker_once_the_first_trial_trains, daemon=True)
    watcher.start()
    opts = SearchOptions(
        manifest=phantom, storage=tmp_path / "runs", name="blind", families=["scripted"], trials=2,
        max_epochs=2, size=32, space_dir=spaces, plugins=[PLUGIN], max_failures=2, max_concurrent=1,
        scheduler="fifo", progress_every_s=1e9, include_dashboard=False,
    )  # fmt: skip
    run_search(opts)
    watcher.join(timeout=5)

    first, second = sorted(run.trials("scripted"), key=lambda r: r.optuna_number)
    assert first.status == "completed" and first.epochs == 2
    assert second.status == "failed" and second.epochs == 0 and second.failures == 1
    assert "shared storage not visible" in second.error and str(run.storage_marker) in second.error
    assert socket.gethostname() in second.error and "Ray node" in second.error
    # it never trained and was not retried (max_failures=2): only the first trial has attempts
    assert [tid for tid, _, _ in read_attempts(state)] == [first.trial_id]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run.journal)))
    states = [t.state for t in optuna.load_study(study_name="scripted", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_a_train_workers_storage_failure_is_recognised_in_trains_error(tmp_path) -> None:
    from ray.train.v2.api.exceptions import WorkerGroupError

    from dvt_search.runtime.storage import storage_message

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(StorageError) as exc:
        check_marker(_ref(run, "token-the-driver-sent"))
    worker_text = f"[Rank 1]\nTraceback (most recent call last):\n  ...\nStorageError: {exc.value}\n"
    failure = WorkerGroupError(worker_text, {1: exc.value})
    assert storage_message(failure) == str(exc.value)
    assert storage_message(WorkerGroupError("[Rank 0]\nRuntimeError: CUDA out of memory\n", {})) is None

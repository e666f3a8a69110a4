"""Losing a node mid-search loses nothing: its trial restarts elsewhere from its last checkpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import optuna
import pytest
from dvt_test_plugins import read_attempts
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir.layout import RunDir

TRIALS, EPOCHS = 3, 6


@pytest.fixture
def two_node_cluster() -> Iterator[object]:
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_search_survives_losing_a_node(two_node_cluster, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    cluster = two_node_cluster
    worker = next(n for n in cluster.worker_nodes)
    state = tmp_path / "state"
    spaces = write_spaces(
        tmp_path / "spaces",
        {
            "scripted": {
                "params": {"quality": {"type": "float", "low": 0.1, "high": 1.0}},
                "fixed": {"epoch_s": 1.0, "state_dir": str(state)},
            }
        },
    )
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="nodes",
        families=["scripted"],
        trials=TRIALS,
        max_epochs=EPOCHS,
        size=32,
        space_dir=spaces,
        plugins=[PLUGIN],
        scheduler="fifo",
        max_failures=3,
        progress_every_s=1e9,
    )
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            run_search(opts)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    run = RunDir(tmp_path / "runs" / "nodes")
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and driver.is_alive():
        on_worker = [tid for tid, _, node in read_attempts(state) if node == worker.node_id]
        for tid in on_worker:
            if len(run.read_epochs("scripted", tid)) >= 3:  # checkpoint of epoch 2 surely registered
                victim = tid
        time.sleep(0.2)
    assert victim is not None, f"no trial reached epoch 3 on the worker node; driver errors: {errors}"
    cluster.remove_node(worker)
    driver.join(timeout=300)
    assert not driver.is_alive() and not errors, errors

    records = {r.trial_id: r for r in run.trials("scripted")}
    assert len(records) == TRIALS
    assert all(r.status == "completed" and r.epochs == EPOCHS and r.has_checkpoint for r in records.values())
    assert records[victim].failures >= 1
    restarts = [done for tid, done, _ in read_attempts(state) if tid == victim]
    assert restarts[0] == 0 and len(restarts) >= 2 and restarts[-1] >= 2, (
        restarts
    )  # resumed, not from scratch
    assert [r["epoch"] for r in run.read_epochs("scripted", victim)] == list(range(1, EPOCHS + 1))
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run.path / "optuna.journal"))
    )
    study = optuna.load_study(study_name="scripted", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * TRIALS

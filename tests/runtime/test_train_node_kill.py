"""A node killed abruptly under a 2-worker Ray Train trial loses nothing: the trial resumes from its checkpoint.

Abrupt means every process of the node is SIGKILLed at once (its raylet and every worker process it
started, the Train worker among them), as in a power cut or a reclaimed spot instance: nobody tells the
GCS, which finds out through its health checks. ``Cluster.remove_node(node, allow_graceful=False)`` alone
SIGKILLs only the processes the node object started itself (raylet, agents, log monitor); the worker
processes would notice their raylet's death and exit on their own. So the test SIGKILLs the raylet's
descendants too, then lets ``remove_node`` clean up the rest.

Topology: the documented cluster's shape, a ``CPU: 0`` head and two 1-CPU worker nodes. One of them
holds the Tune trial's function (0.01 CPU, with its Train controller) beside a Train worker (0.99 CPU),
the other one Train worker only: that one is killed, and a replacement node joins right after so two
workers fit again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from dvt_test_plugins import read_attempts
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search import families
from dvt_search.rundir.layout import RunDir

EPOCHS, WORKERS, EPOCH_S = 5, 2, 1.0
FAMILY = "tiny_cnn"

# The GCS learns of a SIGKILLed raylet only by its health checks (Ray's default: ~30 s); check every 1 s.
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}


@pytest.fixture
def train_cluster() -> Iterator[object]:
    """A ``CPU: 0`` head and two 1-CPU worker nodes; this process never joins it (the search runs in a CLI)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # a shared instance of earlier modules (ray_2_cpus): its CPUs are not this topology's
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS},
    )
    try:
        for _ in range(WORKERS):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=120)
        yield cluster
    finally:
        cluster.shutdown()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of process ``pid`` (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the parenthesised name
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _raylet_pid(node: object) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def node_processes(node: object) -> list[str]:
    """Command lines (process titles: ``ray::RayTrainWorker``, ...) of the worker processes of ``node``."""
    return [_cmdline(pid) for pid in _descendants(_raylet_pid(node))]


def kill_node_abruptly(cluster: object, node: object) -> list[str]:
    """SIGKILL the node's raylet and every process under it at once; returns their command lines."""
    raylet = _raylet_pid(node)
    victims = [raylet, *_descendants(raylet)]
    names = [_cmdline(pid) for pid in victims]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.remove_node(node, allow_graceful=False)  # the node's other processes, also SIGKILLed
    return names


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.is_file() else "(no output)"


def _wait(condition, timeout_s: float, what: str, driver: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert driver.poll() is None or condition(), f"search ended before {what}:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{_tail(log)}"
        time.sleep(0.2)


@pytest.fixture
def driver_process() -> Iterator[list[subprocess.Popen]]:
    """Holds the search's CLI process; a test that fails midway leaves none behind (before the cluster goes)."""
    held: list[subprocess.Popen] = []
    yield held
    for proc in held:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.ray
@pytest.mark.slow
def test_train_trial_resumes_after_a_worker_node_is_killed(
    train_cluster, driver_process, phantom, tmp_path
) -> None:
    cluster = train_cluster
    state = tmp_path / "state"
    fixed = {"lr": 0.01, "batch_size": 4, "schedule": "none", "seed": 0}
    spaces = write_spaces(
        tmp_path / "spaces", {FAMILY: {"fixed": {**fixed, "state_dir": str(state), "epoch_s": EPOCH_S}}}
    )
    cmd = [sys.executable, "-m", "dvt_search.cli", "search", "--address", cluster.address,
           "--data", str(phantom), "--storage", str(tmp_path / "runs"), "--name", "kill",
           "--family", FAMILY, "--trials", "1", "--max-epochs", str(EPOCHS), "--size", "32",
           "--space-dir", str(spaces), "--plugin", PLUGIN, "--train-workers", str(WORKERS),
           "--trainer", "ray-train", "--cpus-per-trial", "1", "--scheduler", "fifo",
           "--max-failures", "2", "--no-dashboard", "--progress-every", "1000"]  # fmt: skip
    log = tmp_path / "search.log"
    with log.open("wb") as out:  # its own session: the finalizer can end it with everything it started
        driver = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    driver_process.append(driver)
    run = RunDir(tmp_path / "runs" / "kill")

    def trial_id() -> str | None:
        recs = run.trials(FAMILY) if run.path.is_dir() else []
        return recs[0].trial_id if recs else None

    def reported() -> int:
        tid = trial_id()
        return max((int(r["epoch"]) for r in run.read_epochs(FAMILY, tid)), default=0) if tid else 0

    # 1. the trial has reported 2 epochs: Train registered (and persisted) their checkpoints before Tune saw them
    _wait(lambda: reported() >= 2, 300, "2 reported epochs", driver, log)
    tid = trial_id()
    assert list((run.train_dir(FAMILY) / tid).glob("checkpoint_*")), "no Train checkpoint on the storage"
    ranks = [node for t, done, node in read_attempts(state) if t == tid]
    assert len(ranks) == WORKERS, ranks  # one attempt so far, one line per rank
    assert len(set(ranks)) == WORKERS, ranks  # one Train worker per worker node
    # the victim holds a Train worker and not the trial's own function (ImplicitFunc) and controller
    titles = {n.node_id: " ".join(node_processes(n)) for n in cluster.worker_nodes}
    (victim,) = [
        n
        for n in cluster.worker_nodes
        if "RayTrainWorker" in titles[n.node_id] and "ImplicitFunc" not in titles[n.node_id]
    ]

    # 2. the node of one Train worker dies abruptly; a replacement joins so 2 workers fit again
    killed = kill_node_abruptly(cluster, victim)
    assert any("RayTrainWorker" in name for name in killed), killed  # the Train worker itself was SIGKILLed
    cluster.add_node(num_cpus=1)
    _wait(lambda: run.trials(FAMILY)[0].failures >= 1, 120, "the failure to be recorded", driver, log)
    last_before = reported()  # what the killed attempt had reported (the retry needs seconds to start)
    assert last_before < EPOCHS, "the trial finished before the node was killed: nothing tested"

    assert driver.wait(timeout=300) == 0, _tail(log)
    # 3. the retry resumed from the last checkpoint the killed attempt reported, on both ranks
    attempts = [done for t, done, _ in read_attempts(state) if t == tid]
    assert attempts[:WORKERS] == [0] * WORKERS
    assert attempts[WORKERS:] == [last_before] * WORKERS, (attempts, last_before)  # not 0: not from scratch
    # ... and ran the remaining epochs once each: every epoch recorded, none missing, none twice
    (rec,) = run.trials(FAMILY)
    assert rec.status == "completed" and rec.error is None and rec.failures == 1
    assert rec.epochs == EPOCHS and rec.has_checkpoint
    assert [r["epoch"] for r in run.read_epochs(FAMILY, tid)] == list(range(1, EPOCHS + 1))

    # 4. the best checkpoint loads (tensors only) and the study holds exactly one COMPLETE trial
    best = run.checkpoint_dir(FAMILY, tid)
    state_dict = torch.load(best / "weights.pt", weights_only=True)
    assert state_dict and all(isinstance(v, torch.Tensor) for v in state_dict.values())
    model = families.get(FAMILY).load(best)
    assert model.epochs_done == rec.best_epoch
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run.journal)))
    study = optuna.load_study(study_name=FAMILY, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]

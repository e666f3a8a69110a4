"""Every family's study at once: overlapping trials, exactly N trials each, all marked finished, resume.

Overlap is proven from the trials' start/end times in their records (``started_at`` / ``ended_at``), not
from timing thresholds: with one trial at a time per family on 2 CPUs, a concurrent search must have a
trial of one family running while a trial of the other runs; a sequential one never does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir.layout import RunDir
from dvt_search.rundir.status import status_lines

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPACE = {"params": {"quality": {"type": "float", "low": 0.0, "high": 1.0}}, "fixed": {"epoch_s": 0.4}}
#: (trials, epochs) of the first test's families: scripted's own --budget, tiny_cnn the run's.
BUDGETS = {"scripted": (2, 2), "tiny_cnn": (1, 1)}


def _overlaps(run: RunDir, a: str, b: str) -> int:
    """Pairs of trials (one of ``a``, one of ``b``) whose [started_at, ended_at] intervals intersect."""
    spans = {f: [(r.started_at, r.ended_at) for r in run.trials(f)] for f in (a, b)}
    for f, s in spans.items():
        assert all(start is not None and end is not None and start <= end for start, end in s), (f, s)
    return sum(1 for s0, e0 in spans[a] for s1, e1 in spans[b] if s0 < e1 and s1 < e0)


def _study_sizes(run: RunDir) -> dict[str, int]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run.journal)))
    return {s.study_name: len(optuna.load_study(study_name=s.study_name, storage=storage).trials)
            for s in optuna.get_all_study_summaries(storage)}  # fmt: skip


def _study_states(run: RunDir) -> dict[str, set[str]]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run.journal)))
    return {s.study_name: {t.state.name for t in optuna.load_study(study_name=s.study_name, storage=storage).trials}
            for s in optuna.get_all_study_summaries(storage)}  # fmt: skip


def test_two_families_search_at_once(ray_2_cpus, phantom, tmp_path, capsys) -> None:
    """Two families at once (overlapping trials), then in turn (never overlapping), each with its own budget;
    the second run's Tune experiment restored at another concurrency.

    One pair of searches holds both properties (each trial in turn costs a Ray actor start): ``scripted`` has a
    ``--budget`` of 2 trials x 2 epochs, ``tiny_cnn`` keeps the run's 1 x 1. Catches: families searched one
    after another, a family's Tune run not marked finished, a study with more or fewer trials than its budget,
    the driver's progress line per family instead of one; a per-family budget ignored (scripted at the run's
    1 x 1) or applied to every family (tiny_cnn at 2 x 2), and a budget missing from the run's records.
    """
    from dvt_search.runtime.driver import SearchOptions, run_search

    # tiny_cnn's one trial pauses 3 s after its epoch: longer than the gap between scripted's two trials in
    # series (a trial actor start), so a concurrent search overlaps them even if one family starts late
    tiny = {"fixed": {"schedule": "none", "batch_size": 8, "epoch_s": 3.0}}
    spaces = write_spaces(tmp_path / "spaces", {"scripted": SPACE, "tiny_cnn": tiny})
    common = dict(
        manifest=phantom, storage=tmp_path / "runs", trials=1, max_epochs=1, budget=[{"scripted": (2, 2)}],
        scheduler="fifo", size=32, space_dir=spaces, plugins=[PLUGIN], max_concurrent=1, progress_every_s=1e9,
        include_dashboard=False,
    )  # fmt: skip
    run_search(SearchOptions(name="together", families=["scripted,tiny_cnn"], **common))
    out = capsys.readouterr().out
    run = RunDir(tmp_path / "runs" / "together")
    for fam, (trials, epochs) in BUDGETS.items():
        records = run.trials(fam)
        assert len(records) == trials and all(
            (r.status, r.epochs, r.max_epochs) == ("completed", epochs, epochs) for r in records
        ), [(r.status, r.epochs, r.max_epochs, r.error) for r in records]
    assert sorted(run.read_info().state.finished_families) == ["scripted", "tiny_cnn"]
    assert _study_sizes(run) == {"scripted": 2, "tiny_cnn": 1}
    assert _overlaps(run, "scripted", "tiny_cnn") > 0
    assert "searching 2 families at once: scripted, tiny_cnn" in out
    # the driver's one line over both families (from the records), not per-family lines from the actors
    final = [ln for ln in out.splitlines() if ln.startswith("[scripted 2/2 done")]
    assert final and "| tiny_cnn 1/1 done" in final[-1] and "(finished)" in final[-1], out[-2000:]
    # each family's own budget: announced, recorded in run.json, shown by `dvt-search status`
    assert "[scripted] searching 2 trials, up to 2 epoch(s) each" in out
    assert "[tiny_cnn] searching 1 trials, up to 1 epoch(s) each" in out
    runs = run.read_info().state.family_runs
    assert (runs["scripted"]["budget_epochs"], runs["tiny_cnn"]["budget_epochs"]) == (2, 1)
    lines = status_lines(run)
    assert any(line.startswith("[scripted] 2/2 finished") for line in lines), lines
    assert any(line.startswith("[tiny_cnn] 1/1 finished") for line in lines), lines

    # The same families with --families-sequential: never two families' trials at once (one trial each is
    # enough: searched at once, both would start together).
    common["budget"] = []
    run_search(
        SearchOptions(name="in-turn", families=["scripted,tiny_cnn"], families_sequential=True, **common)
    )
    seq = RunDir(tmp_path / "runs" / "in-turn")
    assert [len(seq.trials(f)) for f in ("scripted", "tiny_cnn")] == [1, 1]
    assert _overlaps(seq, "scripted", "tiny_cnn") == 0

    # What --resume does with a family's Tune experiment (scripted, run at max_concurrent 1): Tuner.restore
    # brings back the first run's pickled limiter, and this session's value replaces it on the very object
    # Tuner.fit() hands to Tune. Catches a resume stuck at the first session's concurrency.
    from ray import tune

    from dvt_search.families.base import TrialNeeds
    from dvt_search.runtime.tuning import family_trainable, restored_limiter, set_concurrency

    assert seq.read_info().state.family_runs["scripted"]["max_concurrent"] == 1
    trainable = family_trainable("scripted", TrialNeeds(budget=1))
    tuner = tune.Tuner.restore(str(seq.tune_dir("scripted")), trainable=trainable)
    assert restored_limiter(tuner).max_concurrent == 1
    set_concurrency(tuner, 3)
    assert tuner._local_tuner._tune_config.search_alg.max_concurrent == 3


FAMS = ("scripted", "scripted_gpu", "scripted_gpu_b")


def _cmd(phantom, spaces, runs, address, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dvt_search.cli", "search", "--data", str(phantom),
            "--family", ",".join(FAMS), "--size", "32", "--storage", str(runs), "--name", "kill",
            "--space-dir", str(spaces), "--plugin", PLUGIN, "--no-dashboard", "--reduction-factor", "2",
            "--progress-every", "1000", "--address", address, *extra]  # fmt: skip


@pytest.fixture
def gpu_cluster() -> Iterator[str]:
    """A Ray cluster of one node with 3 CPUs (a trial of each family at once) and 2 fake GPUs, for driver
    subprocesses (``--address``)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the drivers connect to this cluster; keep the 2 cores for it
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 3, "num_gpus": 2, "include_dashboard": False}
    )
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def test_interrupted_concurrent_driver_resumes_every_family(gpu_cluster, phantom, tmp_path) -> None:
    """Ctrl-C to a driver searching a CPU family and two GPU families (these two in one shared Tune
    experiment, ``runtime/group.py``), then ``--resume``: every family ends with exactly its trials, and every
    Optuna trial is told its outcome (catches a resumed trial's end never reaching its study: it stayed
    RUNNING and was closed FAIL, as with Ray's own ``ConcurrencyLimiter``)."""
    trials = 3
    # GPU epochs of 2 s: the GPU experiment starts first (GPU-first), so with the CPU family's 0.4 s epochs it
    # could otherwise end all its trials before the CPU family's first trial ends, and nothing is left to resume
    slow = {**SPACE, "fixed": {"epoch_s": 2.0}}
    spaces = write_spaces(
        tmp_path / "spaces", {"scripted": SPACE, "scripted_gpu": slow, "scripted_gpu_b": slow}
    )
    runs = tmp_path / "runs"
    run = RunDir(runs / "kill")
    extra = ("--trials", str(trials), "--max-epochs", "2", "--max-concurrent", "1", "--gpus-per-trial", "1")
    first = subprocess.Popen(
        _cmd(phantom, spaces, runs, gpu_cluster, *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1000"},  # only the stop signal's snapshot is fresh
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            ended = {f: sum(r.final for r in run.trials(f)) for f in FAMS}
            if run.path.is_dir() and min(ended.values()) >= 1:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the first driver ended early:\n" + "".join(first.communicate())
        first.send_signal(signal.SIGINT)  # Ctrl-C to the driver alone: it stops every family's Tune run
        out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 1, out[-2000:] + err[-3000:]
    assert "interrupted; continue the run with --resume --name kill" in err, err[-3000:]
    assert "[scripted_gpu+scripted_gpu_b] one Tune experiment" in out
    # no traceback from the driver itself (Ray may forward one from a trial process it ends at shutdown)
    own = [ln for ln in err.splitlines() if "pid=" not in ln]
    assert not any("Traceback" in ln for ln in own), err[-3000:]
    assert "Stop signal received" in err  # each experiment's Tune run saved its state (Tune's own stop path)
    assert run.read_info().state.finished_families == []
    assert run.tune_groups() == [("scripted_gpu", "scripted_gpu_b")]

    second = subprocess.run(_cmd(phantom, spaces, runs, gpu_cluster, "--resume"), capture_output=True, text=True,
                            timeout=600, start_new_session=True)  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "searching 3 families at once" in second.stdout
    for fam in FAMS:
        records = run.trials(fam)
        assert len(records) == trials and all(r.final for r in records), [
            (r.status, r.error) for r in records
        ]
        assert sorted(r.optuna_number for r in records) == list(range(trials))
    assert sorted(run.read_info().state.finished_families) == list(FAMS)
    assert _study_sizes(run) == dict.fromkeys(FAMS, trials)
    states = _study_states(run)
    assert all(s <= {"COMPLETE", "PRUNED"} for s in states.values()), states


def test_each_family_keeps_its_own_trial_resources_in_the_jobs_registry(ray_2_cpus) -> None:
    """Tune's trainable registry is one per Ray job, read back by every process: families searched at once
    must register under their own names, or one family's trials get another's resources."""
    from ray.tune.experiment import Experiment
    from ray.tune.registry import get_trainable_cls

    from dvt_search.families.base import TrialNeeds
    from dvt_search.runtime.tuning import family_trainable

    cpu = family_trainable("sift", TrialNeeds(budget=1, cpus=1.0))
    gpu = family_trainable("vgg16", TrialNeeds(budget=3, cpus=1.0, gpus=0.5))
    names = [Experiment.register_if_needed(t) for t in (cpu, gpu)]  # what Tuner.fit does with each
    assert names == ["run_trial_sift", "run_trial_vgg16"]
    bundles = [get_trainable_cls(n).default_resource_request({}).bundles for n in names]
    assert bundles == [[{"CPU": 1.0}], [{"CPU": 1.0, "GPU": 0.5}]]

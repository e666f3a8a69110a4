"""Killing the driver and resuming ends with exactly the requested trials, in one Optuna study.

The driver runs as a subprocess (``dvt-search search``) in its own process group with its own local Ray;
after some trials finished the whole group is SIGKILLed, then ``--resume`` finishes the search.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search.rundir.layout import RunDir

TRIALS, EPOCHS = 6, 3
STATE = {"completed": optuna.trial.TrialState.COMPLETE, "stopped": optuna.trial.TrialState.PRUNED}


def _cmd(phantom, spaces, runs, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dvt_search.cli", "search",
        "--data", str(phantom), "--family", "scripted", "--size", "32",
        "--storage", str(runs), "--name", "resume", "--space-dir", str(spaces),
        "--plugin", PLUGIN, "--no-dashboard", "--reduction-factor", "2", "--progress-every", "1000",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def no_ray_here() -> None:
    import ray

    ray.shutdown()  # the driver subprocesses start their own Ray; keep the 2 cores for them


@pytest.mark.ray
@pytest.mark.slow
def test_killed_driver_resumes_to_exactly_n_trials(no_ray_here, phantom, tmp_path) -> None:
    spaces = write_spaces(
        tmp_path / "spaces",
        {
            "scripted": {
                "params": {"quality": {"type": "float", "low": 0.0, "high": 1.0}},
                "fixed": {"epoch_s": 1.0},
            }
        },
    )
    runs = tmp_path / "runs"
    run = RunDir(runs / "resume")
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        _cmd(phantom, spaces, runs, "--trials", str(TRIALS), "--max-epochs", str(EPOCHS)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Rare experiment snapshots: the restored Tune state lags the Optuna journal and the records, the
        # case the searcher's orphan re-use and the records clean-up exist for.
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1000"},
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            finished = [r for r in run.trials("scripted")] if run.path.is_dir() else []
            if sum(r.status in ("completed", "stopped") for r in finished) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, f"the first driver ended early:\n{(tmp_path / 'first.log').read_text()}"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        first.wait()
        log.close()
    killed_with = len(run.trials("scripted"))
    assert killed_with < TRIALS or any(r.status == "running" for r in run.trials("scripted"))

    second = subprocess.run(
        _cmd(phantom, spaces, runs, "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming run" in second.stdout and "best scripted: trial" in second.stdout

    records = run.trials("scripted")
    assert len(records) == TRIALS, [(r.trial_id, r.status) for r in records]
    assert all(r.status in STATE for r in records), [
        (r.trial_id, r.status, r.epochs, r.error) for r in records
    ]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run.path / "optuna.journal"))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name="scripted", storage=storage)
    assert summary.study_name == "scripted" and len(study.trials) == TRIALS
    by_number = {r.optuna_number: r for r in records}
    assert sorted(by_number) == list(range(TRIALS))
    for t in study.trials:
        assert t.state == STATE[by_number[t.number].status], (t.number, t.state, by_number[t.number].status)
    assert run.read_info().state.finished_families == ["scripted"]
    # the paper trial was enqueued once, by the first driver, and never again by the resumed one
    assert [t.number for t in study.trials if t.user_attrs.get("paper_config")] == [0]
    assert [r.optuna_number for r in records if r.paper_config] == [0]


def test_resume_refuses_changed_manifest_or_splits(phantom, tmp_path) -> None:
    import dvt_test_plugins  # noqa: F401  (registers "scripted")

    from dvt_search.data.schema import read_manifest, write_manifest
    from dvt_search.runtime.driver import RunError, SearchOptions, run_search
    from dvt_search.runtime.rundir import prepare_fresh

    spaces = write_spaces(tmp_path / "spaces", {"scripted": {"fixed": {"epoch_s": 0.0}}})
    rd = RunDir(tmp_path / "runs" / "r")
    df = read_manifest(phantom)
    prepare_fresh(rd, SearchOptions(manifest=phantom, storage=tmp_path / "runs", name="r", trials=2, max_epochs=2,
                                     space_dir=spaces), df, ["scripted"])  # fmt: skip

    changed = tmp_path / "changed" / "manifest.parquet"
    changed.parent.mkdir()
    write_manifest(df.iloc[1:], changed)
    with pytest.raises(RunError, match="manifest .* differs"):
        run_search(SearchOptions(manifest=changed, storage=tmp_path / "runs", name="r", resume=True))
    with pytest.raises(RunError, match="--trials 3 differs"):
        run_search(
            SearchOptions(manifest=phantom, storage=tmp_path / "runs", name="r", resume=True, trials=3)
        )
    splits = rd.path / "splits.json"
    doc = json.loads(splits.read_text())
    doc["seed"] += 1  # content no longer matches its recorded hash
    splits.write_text(json.dumps(doc))
    with pytest.raises(RunError, match="refusing to resume"):
        run_search(SearchOptions(manifest=phantom, storage=tmp_path / "runs", name="r", resume=True))


# A restored experiment running at this session's concurrency (Tuner.restore + set_concurrency) is checked
# at the end of test_concurrent_families.py::test_two_families_search_at_once, on that test's own run.

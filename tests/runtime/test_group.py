"""GPU families searched at once share one Tune experiment (``runtime/group.py``): which families share, each
family's searcher and scheduler kept its own inside it, and one trial process passing between families."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dvt_test_plugins  # noqa: F401  (registers the test families)
import optuna
import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces
from ray.tune.search import Searcher

from dvt_search.families.base import TrialNeeds
from dvt_search.rundir import RunDir
from dvt_search.runtime.group import GroupSearcher, plan
from dvt_search.runtime.searcher import TUNE_ID_ATTR, OptunaStudySearcher, ResumableLimiter
from dvt_search.runtime.tuning import SessionSettings
from dvt_search.search.space import SearchSpace, parse_space

QUALITY = {"quality": {"type": "float", "low": 0.0, "high": 1.0}}
GPU = TrialNeeds(budget=2, cpus=1.0, gpus=1.0)
CPU = TrialNeeds(budget=2, cpus=1.0, gpus=0.0)
TRAIN = TrialNeeds(budget=2, cpus=1.0, gpus=1.0, trainer="ray-train", workers=2, reuse_actors=False)


def test_which_families_share_an_experiment(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    needs = {"a": GPU, "b": GPU, "c": GPU, "sift": CPU, "ddp": TRAIN}
    todo = list(needs)
    on, off = SessionSettings(), SessionSettings(reuse_actors=False)
    assert plan(run, todo, needs, on, together=True) == [("a", "b", "c"), ("sift",), ("ddp",)]
    # in turn, without re-use, or with one GPU family: every family its own experiment
    assert plan(run, todo, needs, on, together=False) == [(f,) for f in todo]
    assert plan(run, todo, needs, off, together=True) == [(f,) for f in todo]
    assert plan(run, ["a", "sift"], needs, on, together=True) == [("a",), ("sift",)]
    # a family with its own experiment on disk (an earlier session) keeps it
    run.tune_dir("c").mkdir(parents=True)
    assert plan(run, todo, needs, on, together=True) == [("a", "b"), ("c",), ("sift",), ("ddp",)]
    # a shared experiment on disk is restored whole, in turn or at once, re-use on or off
    run.tune_group_dir(["b", "a"]).mkdir(parents=True)
    assert run.tune_groups() == [("a", "b")]
    for session, together in ((on, True), (off, False)):
        assert plan(run, todo, needs, session, together=together) == [("a", "b"), ("c",), ("sift",), ("ddp",)]
    assert plan(run, ["b", "sift"], needs, on, together=True) == [("a", "b"), ("sift",)]


def _space(family: str) -> SearchSpace:
    return parse_space({"family": family, "params": QUALITY}, family=family)


def _group(tmp_path, caps: dict[str, int], trials: int) -> GroupSearcher:
    members = {
        f: ResumableLimiter(
            OptunaStudySearcher(_space(f), tmp_path / "optuna.journal", num_samples=trials, budget=2,
                                sampler="random", paper_trial=False),
            max_concurrent=cap,
        )
        for f, cap in caps.items()
    }  # fmt: skip
    return GroupSearcher(
        members, {f: {"family": f, "run_dir": str(tmp_path)} for f in caps}, metric="val_auc", mode="max"
    )


def _studies(tmp_path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
        for s in optuna.get_all_study_summaries(storage)
    }


def test_group_searcher_keeps_each_familys_search_its_own(tmp_path) -> None:
    """Catches: one family starving the other, a cap applied to the group instead of the family, events
    routed to the wrong study, FINISHED while a family still has trials to suggest, state lost on restore."""
    group = _group(tmp_path, {"scripted_gpu": 1, "scripted_gpu_b": 2}, trials=3)
    first = [group.suggest(f"t{i}") for i in range(4)]
    got = [c["run"]["family"] if isinstance(c, dict) else c for c in first]
    # turns: a, b, then a is at its cap of 1 and b takes its second; then both are at their caps
    assert got == ["scripted_gpu", "scripted_gpu_b", "scripted_gpu_b", None]
    group.on_trial_result("t0", {"val_auc": 0.7, "epoch": 1})
    group.on_trial_complete("t0", {"val_auc": 0.8, "epoch": 2})
    group.on_trial_complete("t1", {"val_auc": 0.4, "epoch": 1})  # stopped early: PRUNED
    studies = _studies(tmp_path)
    a, b = studies["scripted_gpu"], studies["scripted_gpu_b"]
    assert [(t.user_attrs[TUNE_ID_ATTR], t.state.name, t.value) for t in a] == [("t0", "COMPLETE", 0.8)]
    assert [(t.user_attrs[TUNE_ID_ATTR], t.state.name) for t in b] == [("t1", "PRUNED"), ("t2", "RUNNING")]
    # restored from its saved state (Tune's experiment snapshot): the same trials go to the same studies
    group.save(str(tmp_path / "state.json"))
    again = _group(tmp_path, {"scripted_gpu": 1, "scripted_gpu_b": 2}, trials=3)
    again.restore(str(tmp_path / "state.json"))
    assert again.owner == {"t0": "scripted_gpu", "t1": "scripted_gpu_b", "t2": "scripted_gpu_b"}
    again.on_trial_complete("t2", {"val_auc": 0.9, "epoch": 2})
    assert _studies(tmp_path)["scripted_gpu_b"][1].state.name == "COMPLETE"
    # the rest: every family ends with exactly its 3 trials, then FINISHED
    seen, n = [], 10
    while (cfg := again.suggest(f"t{n}")) != Searcher.FINISHED:
        assert cfg is not None, "a family with trials left and room under its cap suggested nothing"
        seen.append(cfg["run"]["family"])
        again.on_trial_complete(f"t{n}", {"val_auc": 0.5, "epoch": 2})
        n += 1
    assert sorted(seen) == ["scripted_gpu", "scripted_gpu", "scripted_gpu_b"]
    assert {f: len(t) for f, t in _studies(tmp_path).items()} == {"scripted_gpu": 3, "scripted_gpu_b": 3}


@pytest.fixture(scope="module")
def ray_2_gpus(_runtime_env: None) -> Iterator[None]:
    """A local Ray instance with 2 CPUs and 2 fake GPUs (nothing touches a device); shut down afterwards."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _pids(run: RunDir, group: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for path in run.tune_group_dir(group).glob("trial_*/result.json"):
        out[path.parent.name.removeprefix("trial_")] = int(
            json.loads(path.read_text().splitlines()[0])["pid"]
        )
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_families_share_trial_processes_and_keep_their_own_asha(
    ray_2_gpus, phantom, tmp_path, capsys
) -> None:
    """Two GPU families at once (with a CPU family beside them): one shared experiment whose trial processes
    run both families' trials, each family with exactly its trials, its own records and its own ASHA.

    Catches: one experiment per family (no process ever runs two families' trials), trials recorded under the
    wrong family, a family's budget of epochs taken from the other (one ASHA for the group: scripted_gpu_b's
    3-epoch budget cut at scripted_gpu's 2), a family marked finished with trials missing.
    """
    from dvt_search.runtime.driver import SearchOptions, run_search

    fixed = {"fixed": {"epoch_s": 0.3}, "params": QUALITY}
    spaces = write_spaces(
        tmp_path / "spaces", {"scripted": fixed, "scripted_gpu": fixed, "scripted_gpu_b": fixed}
    )
    opts = SearchOptions(
        manifest=phantom, storage=tmp_path / "runs", name="g", families=["scripted,scripted_gpu,scripted_gpu_b"],
        trials=4, max_epochs=2, budget=[{"scripted": (1, 1), "scripted_gpu_b": (4, 3)}], gpus_per_trial=1.0,
        grace_period=1, reduction_factor=2.0, sampler="random", paper_trial=False, size=32, space_dir=spaces,
        plugins=[PLUGIN], progress_every_s=1e9, include_dashboard=False,
    )  # fmt: skip
    run_search(opts)
    out = capsys.readouterr().out
    run = RunDir(tmp_path / "runs" / "g")
    group = ("scripted_gpu", "scripted_gpu_b")
    assert run.tune_groups() == [group]
    assert not run.tune_dir("scripted_gpu").exists() and run.tune_dir("scripted").is_dir()
    assert "[scripted_gpu+scripted_gpu_b] one Tune experiment" in out
    assert sorted(run.read_info().state.finished_families) == ["scripted", "scripted_gpu", "scripted_gpu_b"]
    studies = _studies(run.path)
    budgets = {"scripted_gpu": 2, "scripted_gpu_b": 3}
    for fam, epochs in budgets.items():
        recs = run.trials(fam)
        assert len(recs) == 4 and all(r.status in ("completed", "stopped") for r in recs), [
            (r.status, r.error) for r in recs
        ]
        assert {t.user_attrs[TUNE_ID_ATTR] for t in studies[fam]} == {r.trial_id for r in recs}
        assert max(r.epochs for r in recs) == epochs, [(r.trial_id, r.epochs) for r in recs]
        for rec in recs:  # its epochs and checkpoint are the family's own
            assert [row["epoch"] for row in run.read_epochs(fam, rec.trial_id)] == list(
                range(1, rec.epochs + 1)
            )
    pids = _pids(run, group)
    ran = {}
    for fam in group:
        for rec in run.trials(fam):
            ran.setdefault(pids[rec.trial_id], set()).add(fam)
    assert any(len(f) == 2 for f in ran.values()), f"no process ran trials of both families: {ran}"

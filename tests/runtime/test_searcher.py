"""The Optuna-backed Tune searcher: fidelity-aware tells, deferred FAIL, resume re-use, and ASHA for real."""

from __future__ import annotations

import json

import dvt_test_plugins  # noqa: F401  (registers the test families)
import optuna
import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces
from optuna.trial import TrialState
from ray.tune.search import Searcher

from dvt_search.rundir.layout import RunDir
from dvt_search.runtime.searcher import TUNE_ID_ATTR, OptunaStudySearcher, close_unfinished, open_study
from dvt_search.search.space import parse_space

SPACE = {
    "family": "scripted",
    "params": {"quality": {"type": "float", "low": 0.0, "high": 1.0}},
    "fixed": {"epoch_s": 0.0},
}


def _searcher(tmp_path, n=4, budget=3, **kw) -> OptunaStudySearcher:
    return OptunaStudySearcher(
        parse_space(SPACE), tmp_path / "optuna.journal", num_samples=n, budget=budget, **kw
    )


def _result(epoch: int, value: float) -> dict:
    return {"epoch": epoch, "val_auc": value, "training_iteration": epoch}


def test_stopped_trials_are_pruned_and_full_trials_complete_with_their_best(tmp_path) -> None:
    s = _searcher(tmp_path)
    a, b = s.suggest("a"), s.suggest("b")
    assert a["params"]["epoch_s"] == 0.0 and 0.0 <= a["params"]["quality"] <= 1.0
    assert (a["optuna_number"], b["optuna_number"]) == (0, 1)
    s.on_trial_result("a", _result(1, 0.6))
    s.on_trial_complete("a", _result(2, 0.55))  # the scheduler stopped it after epoch 2 of 3
    for e, v in ((1, 0.5), (2, 0.8), (3, 0.7)):
        s.on_trial_result("b", _result(e, v))
    s.on_trial_complete("b", _result(3, 0.7))
    study = open_study(tmp_path / "optuna.journal", "scripted")
    ta, tb = study.trials
    assert ta.state == TrialState.PRUNED and ta.intermediate_values == {1: 0.6, 2: 0.55}
    assert tb.state == TrialState.COMPLETE and tb.value == pytest.approx(0.8)  # best epoch, not last
    assert ta.user_attrs[TUNE_ID_ATTR] == "a"


def test_errored_trials_stay_open_until_the_family_ends(tmp_path) -> None:
    s = _searcher(tmp_path)
    s.suggest("a")
    s.on_trial_result("a", _result(1, 0.6))
    s.on_trial_complete("a", error=True)
    journal = tmp_path / "optuna.journal"
    assert open_study(journal, "scripted").trials[0].state == TrialState.RUNNING
    assert close_unfinished(journal, "scripted") == 1
    assert open_study(journal, "scripted").trials[0].state == TrialState.FAIL


def test_resumed_searcher_reuses_orphans_and_stops_at_num_samples(tmp_path) -> None:
    s = _searcher(tmp_path, n=3)
    first = s.suggest("a")
    snapshot = tmp_path / "state.json"
    s.save(str(snapshot))  # Tune's snapshot knows only trial "a"
    orphan = s.suggest("b")  # asked after the snapshot, then the driver died
    s.on_trial_complete("a", _result(3, 0.9))

    restored = _searcher(tmp_path, n=3)
    restored.restore(str(snapshot))
    again = restored.suggest("c")
    assert again == {"params": orphan["params"], "optuna_number": orphan["optuna_number"]}
    third = restored.suggest("d")
    assert third["optuna_number"] == 2
    assert restored.suggest("e") == Searcher.FINISHED
    study = open_study(tmp_path / "optuna.journal", "scripted")
    assert len(study.trials) == 3
    assert study.trials[orphan["optuna_number"]].user_attrs[TUNE_ID_ATTR] == "c"
    assert first["optuna_number"] == 0
    restored.on_trial_complete("a", _result(3, 0.9))  # told twice (re-run after resume): ignored
    assert open_study(tmp_path / "optuna.journal", "scripted").trials[0].state == TrialState.COMPLETE


def test_searcher_survives_pickling(tmp_path) -> None:
    import pickle

    s = _searcher(tmp_path)
    s.suggest("a")
    clone = pickle.loads(pickle.dumps(s))
    assert clone._owned == {"a": 0}
    assert clone.suggest("b")["optuna_number"] == 1


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stopped_trials_reach_optuna_as_pruned(ray_2_cpus, phantom, tmp_path) -> None:
    from dvt_search.runtime.driver import SearchOptions, run_search

    spaces = write_spaces(tmp_path / "spaces", {"scripted": {**SPACE, "fixed": {"epoch_s": 0.05}}})
    opts = SearchOptions(
        manifest=phantom,
        storage=tmp_path / "runs",
        name="asha",
        families=["scripted"],
        trials=6,
        max_epochs=4,
        size=32,
        space_dir=spaces,
        plugins=[PLUGIN],
        grace_period=1,
        reduction_factor=2,
        max_concurrent=1,
        sampler="random",
        progress_every_s=1e9,
        include_dashboard=False,
    )
    run_search(opts)
    run = RunDir(tmp_path / "runs" / "asha")
    records = {r.optuna_number: r for r in run.trials("scripted")}
    study = optuna.load_study(
        study_name="scripted",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run.path / "optuna.journal"))
        ),
    )
    assert len(study.trials) == 6 and len(records) == 6
    states = {t.number: t.state for t in study.trials}
    assert TrialState.PRUNED in states.values(), "ASHA with reduction factor 2 stopped no trial"
    paper = [r for r in records.values() if r.paper_config]  # the paper trial went through Tune
    assert [r.optuna_number for r in paper] == [0] and paper[0].params["quality"] == 0.5
    assert paper[0].status == "completed" and study.trials[0].user_attrs["paper_config"] is True
    for t in study.trials:
        rec = records[t.number]
        epochs = [row["epoch"] for row in run.read_epochs("scripted", rec.trial_id)]
        assert epochs == list(range(1, rec.epochs + 1))
        if t.state == TrialState.PRUNED:
            assert rec.status == "stopped" and rec.epochs < 4
        else:
            assert t.state == TrialState.COMPLETE and rec.status == "completed" and rec.epochs == 4
            assert t.value == pytest.approx(rec.best["val_auc"])
        assert rec.has_checkpoint
        meta = json.loads((run.checkpoint_dir("scripted", rec.trial_id) / "meta.json").read_text())
        assert meta["epochs_done"] == rec.best_epoch


def test_resumed_searcher_repairs_a_torn_journal(tmp_path) -> None:
    s = _searcher(tmp_path, n=4)
    for tid in ("a", "b"):
        s.suggest(tid)
        s.on_trial_complete(tid, _result(3, 0.7))
    journal = tmp_path / "optuna.journal"
    intact = journal.stat().st_size
    s.suggest("c")  # the head dies while this trial's record is being written
    with journal.open("r+b") as f:
        f.truncate(intact + (journal.stat().st_size - intact) // 2)

    resumed = _searcher(tmp_path, n=4)
    assert resumed.suggest("d")["optuna_number"] == 2  # study.ask() works again
    assert close_unfinished(journal, "scripted") == 1
    study = open_study(journal, "scripted")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert len(list(tmp_path.glob("optuna.journal.torn-*.bak"))) == 1

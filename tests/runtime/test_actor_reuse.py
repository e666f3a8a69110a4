"""Trial processes re-used by a family's next trials (Tune's ``reuse_actors``): which trials may, and that a
re-used process runs each trial as its own (no failure when a stopped trial is slow to end, its own
epochs and checkpoint), one process for the family's trials one after another."""

from __future__ import annotations

import json

import pytest
from dvt_testkit_runtime import PLUGIN, write_spaces

from dvt_search import families
from dvt_search.cli import build_parser
from dvt_search.families.base import TrialNeeds, read_meta
from dvt_search.rundir import RunDir
from dvt_search.runtime.tuning import SessionSettings, reuses_actors


@pytest.mark.parametrize(
    ("family", "trainer", "workers", "reuse"),
    [
        ("vgg16", "direct", 1, True),  # one-worker CNN trials: the engine in the trial's own process
        (
            "vgg16",
            "ray-train",
            2,
            False,
        ),  # a stopped Train run must not be cut inside the next trial's process
        ("sift_bow_svm", "direct", 1, True),
    ],
)
def test_direct_trials_may_share_a_process_ray_train_trials_never(family, trainer, workers, reuse) -> None:
    needs = families.get(family).trial_needs(
        max_epochs=3, cpus=1.0, gpus=0.0, train_workers=workers, trainer=trainer
    )
    assert needs.reuse_actors is reuse
    assert reuses_actors(needs, SessionSettings()) is reuse
    assert reuses_actors(needs, SessionSettings(reuse_actors=False)) is False


def test_no_reuse_actors_flag_reaches_the_session() -> None:
    parser = build_parser()
    base = ["search", "--data", "m.parquet", "--storage", "runs"]
    assert parser.parse_args(base).reuse_actors is True
    assert parser.parse_args([*base, "--no-reuse-actors"]).reuse_actors is False
    assert reuses_actors(TrialNeeds(budget=3), SessionSettings(reuse_actors=False)) is False


def _pids(run: RunDir, family: str) -> dict[str, int]:
    """Trial id -> the pid Tune recorded with its results (Tune's own ``result.json``)."""
    out = {}
    for path in run.tune_dir(family).glob("trial_*/result.json"):
        first = json.loads(path.read_text().splitlines()[0])
        out[path.parent.name.removeprefix("trial_")] = int(first["pid"])
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(
    240
)  # with Ray's 2 s wait the search hangs (the next trial's failed reset is never told)
def test_one_process_runs_the_familys_trials_each_as_its_own(ray_2_cpus, phantom, tmp_path) -> None:
    """Stopped trials unwind for 3 s, longer than Ray's 2 s wait before it gives their process away.

    ASHA stops every trial inside its last report (also at the full budget), so each one unwinds.
    """
    from dvt_search.runtime.driver import SearchOptions, run_search

    spaces = write_spaces(
        tmp_path / "spaces",
        {
            "scripted": {
                "params": {"quality": {"type": "float", "low": 0.0, "high": 1.0}},
                "fixed": {"epoch_s": 0.1, "unwind_s": 3.0},
            }
        },
    )
    opts = SearchOptions(
        manifest=phantom, storage=tmp_path / "runs", name="r", families=["scripted"], trials=4, max_epochs=3,
        grace_period=1, reduction_factor=2.0, sampler="random", paper_trial=False, max_concurrent=1, size=32,
        space_dir=spaces, plugins=[PLUGIN], progress_every_s=1e9, include_dashboard=False,
    )  # fmt: skip
    run_search(opts)
    run = RunDir(tmp_path / "runs" / "r")
    recs = run.trials("scripted")
    assert len(recs) == 4
    assert "stopped" in {r.status for r in recs}, "the seed must give a stopped trial (the case re-use risks)"
    assert all(r.status in ("completed", "stopped") and r.failures == 0 for r in recs), [
        (r.trial_id, r.status, r.failures, r.error) for r in recs
    ]
    for rec in recs:  # each trial trained from its own epoch 1 and kept its own checkpoint
        epochs = [row["epoch"] for row in run.read_epochs("scripted", rec.trial_id)]
        assert epochs == list(range(1, rec.epochs + 1))
        meta = read_meta(run.checkpoint_dir("scripted", rec.trial_id))
        assert meta["params"]["quality"] == rec.params["quality"]
        assert meta["epochs_done"] == rec.best_epoch
    pids = _pids(run, "scripted")
    assert set(pids) == {r.trial_id for r in recs}
    assert len(set(pids.values())) == 1, pids
    # --resume: Tuner.restore brings back the first run's pickled TuneConfig (re-use on); this session's
    # --no-reuse-actors replaces it on the very object Tuner.fit() hands to Tune.
    from ray import tune

    from dvt_search.runtime.tuning import family_trainable, restored_tune_config, set_reuse

    trainable = family_trainable("scripted", TrialNeeds(budget=3))
    tuner = tune.Tuner.restore(str(run.tune_dir("scripted")), trainable=trainable)
    assert restored_tune_config(tuner).reuse_actors is True
    set_reuse(tuner, False)
    assert tuner._local_tuner._tune_config.reuse_actors is False

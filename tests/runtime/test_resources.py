"""What a trial reserves: lean one-worker trials, a Ray Train trial's driver never on a CPU: 0 head."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvt_search.families.base import TrialNeeds
from dvt_search.runtime.options import RunError, SearchOptions, resolve_trainer
from dvt_search.runtime.setup import DRIVER_CPU, train_worker_cpus
from dvt_search.runtime.tuning import trial_resources


def _opts(**kw) -> SearchOptions:
    return SearchOptions(manifest=Path("m.parquet"), storage=Path("runs"), **kw)


@pytest.mark.parametrize(
    ("kw", "trainer"),
    [
        ({}, "direct"),
        ({"gpus_per_trial": 1.0}, "direct"),  # one GPU worker: no TorchTrainer
        ({"gpus_per_trial": 0.25}, "direct"),
        ({"train_workers": 2}, "ray-train"),
        ({"train_workers": 4, "gpus_per_trial": 1.0}, "ray-train"),
        ({"trainer": "ray-train"}, "ray-train"),  # asked for explicitly
    ],
)
def test_auto_uses_ray_train_only_for_several_workers(kw, trainer) -> None:
    assert resolve_trainer(_opts(**kw)) == trainer


def test_direct_with_several_workers_is_refused() -> None:
    with pytest.raises(RunError, match="--train-workers > 1"):
        resolve_trainer(_opts(trainer="direct", train_workers=2))


def test_ray_train_driver_reserves_a_cpu_share_taken_from_its_workers() -> None:
    needs = TrialNeeds(budget=3, trainer="ray-train", workers=2, cpus=1.0, gpus=1.0)
    driver = trial_resources(needs)
    # CPU, not memory: a CPU: 0 head advertises memory, so {"memory": 1} could put the driver there.
    assert set(driver) == {"CPU"} and 0 < driver["CPU"] == DRIVER_CPU
    per_worker = train_worker_cpus(needs)
    assert per_worker < 1.0
    assert driver["CPU"] + needs.workers * per_worker <= needs.total_cpus + 1e-12  # 2 workers fit 2 CPUs
    # the driver fits beside a worker on a node of `cpus` CPUs: two 1-CPU nodes of a CPU: 0 head hold the trial
    assert driver["CPU"] + per_worker <= needs.cpus + 1e-12
    assert needs.cpus - per_worker - driver["CPU"] < 1e-3  # and no more is taken from the workers
    three = TrialNeeds(budget=3, trainer="ray-train", workers=3, cpus=1.0)
    assert DRIVER_CPU + train_worker_cpus(three) <= 1.0
    tiny = TrialNeeds(budget=3, trainer="ray-train", workers=2, cpus=DRIVER_CPU)
    assert trial_resources(tiny) == {"memory": 1.0} and train_worker_cpus(tiny) == DRIVER_CPU


def test_direct_trial_reserves_its_cpus_and_gpus() -> None:
    assert trial_resources(TrialNeeds(budget=3, cpus=2.0, gpus=0.5)) == {"CPU": 2.0, "GPU": 0.5}
    assert trial_resources(TrialNeeds(budget=1, cpus=1.0)) == {"CPU": 1.0}

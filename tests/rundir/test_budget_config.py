"""Per-family budgets in the frozen run config: accessors, run.json round trip, older run.json files."""

from __future__ import annotations

import json
from dataclasses import asdict

from dvt_search.rundir import BudgetConfig, DataConfig, RunConfig, RunDir, RunInfo

BUDGET = BudgetConfig(
    trials_per_family=6,
    max_epochs=4,
    family_trials={"multitask_unet": 9, "vgg16": 2},
    family_epochs={"vgg16": 1},
)


def test_accessors_fall_back_to_the_run_defaults() -> None:
    assert [BUDGET.trials_for(f) for f in ("multitask_unet", "vgg16", "densenet161")] == [9, 2, 6]
    assert [BUDGET.epochs_for(f) for f in ("multitask_unet", "vgg16", "densenet161")] == [4, 1, 4]


def test_per_family_budget_survives_run_json(tmp_path) -> None:
    config = RunConfig(
        families=("vgg16", "multitask_unet"), data=DataConfig(manifest="/m.parquet"), budget=BUDGET
    )
    run = RunDir(tmp_path / "r")
    run.write_info(RunInfo(run_name="r", config=config))
    back = run.read_info().config.budget
    assert back == BUDGET
    assert (back.trials_for("vgg16"), back.epochs_for("vgg16"), back.trials_for("multitask_unet")) == (
        2,
        1,
        9,
    )


def test_a_run_json_from_before_per_family_budgets_loads_with_none(tmp_path) -> None:
    config = RunConfig(families=("vgg16",), data=DataConfig(manifest="/m.parquet"), budget=BudgetConfig(5, 3))
    doc = json.loads(json.dumps(RunInfo(run_name="old", config=config).to_dict()))
    for key in ("family_trials", "family_epochs"):
        del doc["config"]["budget"][key]  # what an older dvt-search wrote
    budget = RunInfo.from_dict(doc).config.budget
    assert (budget.family_trials, budget.family_epochs) == ({}, {})
    assert (budget.trials_for("vgg16"), budget.epochs_for("vgg16")) == (5, 3)
    assert asdict(budget) == asdict(BudgetConfig(5, 3))

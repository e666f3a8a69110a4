"""The run-directory room: the frozen config's round trip, run.json v2 and the 0.1 upgrade, RunDir paths."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, asdict
from pathlib import Path

import pytest

from dvt_search.data.spec import InputSpec
from dvt_search.rundir import (
    BudgetConfig,
    ConfigError,
    DataConfig,
    ResourceConfig,
    RunConfig,
    RunDir,
    RunInfo,
    SchedulerConfig,
    latest_run,
)

CONFIG = RunConfig(
    families=("vgg16", "sift_bow_svm"),
    seed=3,
    data=DataConfig(
        manifest="/data/m.parquet",
        input=InputSpec(64, [[40, 400], [80, 200]]),
        augment={"hflip_p": 0.5, "scale_range": [0.9, 1.1]},
        splits_source="/data/splits.json",
    ),
    budget=BudgetConfig(trials_per_family=7, max_epochs=4),
    scheduler=SchedulerConfig(type="fifo", grace_period=2, reduction_factor=2.0),
    resources=ResourceConfig(cpus_per_trial=2.0, gpus_per_trial=0.25, train_workers=2, trainer="ray-train"),
    plugins=("my_plugin",),
)


def test_config_round_trips_through_json_as_is() -> None:
    doc = json.loads(json.dumps(asdict(CONFIG)))
    again = RunConfig.from_dict(doc)
    assert again == CONFIG
    # nested sections come back as their dataclasses and sequences as tuples (not lists)
    assert isinstance(again.data.input, InputSpec) and again.data.input.windows == (
        (40.0, 400.0),
        (80.0, 200.0),
    )
    assert again.families == ("vgg16", "sift_bow_svm") and again.plugins == ("my_plugin",)
    with pytest.raises(FrozenInstanceError):
        again.seed = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(bogus=1), "bogus"),
        (lambda d: d["budget"].update(trials=3), "budget"),
        (lambda d: d.update(families="vgg16"), "families"),
    ],
)
def test_config_errors_name_the_field(mutate, field: str) -> None:
    doc = json.loads(json.dumps(asdict(CONFIG)))
    mutate(doc)
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_dict(doc)


def test_run_info_written_and_read_back(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    info = RunInfo(run_name="r", config=CONFIG, splits_hash="abc", versions={"ray": "2.60"})
    info.state.finished_families.append("vgg16")
    run.write_info(info)
    back = run.read_info()
    assert back == info
    assert (back.families, back.metric, back.max_epochs, back.trials_per_family) == (
        ["vgg16", "sift_bow_svm"],
        "val_auc",
        4,
        7,
    )
    assert json.loads(run.run_file.read_text())["format"] == "dvt-search-run/2"


V1 = {
    "run_name": "old",
    "families": ["vgg16"],
    "trials_per_family": 5,
    "max_epochs": 3,
    "metric": "val_auc",
    "mode": "max",
    "manifest": "/data/m.parquet",
    "manifest_fingerprint": "fp",
    "splits_hash": "h",
    "seed": 1,
    "image_size": 128,
    "windows": [[40.0, 400.0]],
    "created": "2026-01-01T00:00:00+00:00",
    "config": {
        "scheduler": {"type": "asha", "time_attr": "epoch", "grace_period": 2, "reduction_factor": 3.0},
        "searcher": {"library": "optuna", "sampler": "random", "startup_trials": 4, "seed": 1},
        "resources": {
            "cpus_per_trial": 1.0,
            "gpus_per_trial": 0.5,
            "train_workers": 1,
            "trainer": "direct",
            "loader_workers": 2,
        },  # fmt: skip
        "max_failures": 1,
        "keep_checkpoints": 3,
        "augment": {"hflip_p": 0.5},
        "sift_cache": False,
        "plugins": [],
        "splits_source": None,
        "versions": {"ray": "2.60.0"},
        "finished_families": ["vgg16"],
        "spec": {"image_size": 128, "windows": [[40.0, 400.0]], "pos_fraction": 0.4, "vein_fraction": 0.02},
    },
}


def test_a_run_json_of_version_0_1_is_upgraded(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "old")
    run.path.mkdir()
    run.run_file.write_text(json.dumps(V1))
    info = run.read_info()
    c = info.config
    assert (c.budget.trials_per_family, c.budget.max_epochs, c.seed) == (5, 3, 1)
    assert c.data.input == InputSpec(128, [[40.0, 400.0]]) and c.data.augment == {"hflip_p": 0.5}
    assert (c.scheduler.grace_period, c.searcher.sampler, c.searcher.startup_trials) == (2, "random", 4)
    assert (c.resources.gpus_per_trial, c.resources.loader_workers, c.max_failures) == (0.5, 2, 1)
    assert (c.keep_checkpoints, c.sift_cache) == (3, False)
    assert info.state.finished_families == ["vgg16"] and info.state.spec["pos_fraction"] == 0.4
    assert info.versions == {"ray": "2.60.0"} and info.splits_hash == "h"


def test_unreadable_run_json_names_the_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="not a dvt-search run directory"):
        run.read_info()
    run.path.mkdir()
    run.run_file.write_text("{")
    with pytest.raises(ValueError, match=str(run.run_file)):
        run.read_info()
    run.run_file.write_text(json.dumps({"format": "dvt-search-run/9"}))
    with pytest.raises(ConfigError, match="unknown run format"):
        run.read_info()


def test_paths_are_the_documented_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.trial_file("vgg16", "t1") == tmp_path / "trials" / "vgg16" / "t1" / "trial.json"
    assert run.checkpoint_dir("vgg16", "t1") == tmp_path / "trials" / "vgg16" / "t1" / "checkpoint"
    assert run.space_file("vgg16") == tmp_path / "search_spaces" / "vgg16.yaml"
    assert run.tune_dir("vgg16") == tmp_path / "tune" / "vgg16"
    assert run.train_dir("vgg16") == tmp_path / "train" / "vgg16"
    assert run.predictions_file("test") == tmp_path / "test_predictions.parquet"
    with pytest.raises(ValueError, match="partition"):
        run.predictions_file("train")


def test_missing_documents_say_which_command_writes_them(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no selection \(run `dvt-search select"):
        run.read_doc(run.selection_file)
    with pytest.raises(FileNotFoundError, match="no predictions"):
        run.read_frame(run.predictions_file("val"))


def test_latest_run_is_the_newest_run_json(tmp_path: Path) -> None:
    import os

    assert latest_run(tmp_path) is None
    for i, name in enumerate(("a", "b")):
        run = RunDir(tmp_path / name)
        run.write_info(RunInfo(run_name=name, config=CONFIG))
        os.utime(run.run_file, (1000 + i, 1000 + i))
    (tmp_path / "not-a-run").mkdir()
    assert latest_run(tmp_path) == tmp_path / "b"

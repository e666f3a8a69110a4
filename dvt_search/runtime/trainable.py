"""The Tune function every trial runs: build (or resume) one model and report each epoch to Tune.

Two ways to train a torch family:

* ``direct``: the engine runs inside the Tune trial's own actor. Each epoch the model is saved into a
  temporary directory and reported with ``ray.tune.report(metrics, checkpoint=Checkpoint.from_directory)``.
  On a retry (``FailureConfig``) or a resumed driver, ``ray.tune.get_checkpoint()`` holds the latest
  checkpoint: the model is loaded from it and fitting continues up to the budget.
* ``ray-train``: the Tune trial builds a ``TorchTrainer`` (Train V2: a Tune function launching a trainer
  and forwarding its reports with ``TuneReportCallback``; ``Tuner(trainer)`` is deprecated) whose workers
  run DDP (``gloo`` on CPU, ``nccl`` on GPU) through the engine's ``prepare_model`` /
  ``prepare_loader`` hooks. Rank 0 saves the checkpoint, every rank calls ``ray.train.report`` (Train V2
  only records metrics that come with a checkpoint). The Train run is named after the Tune trial under
  ``<run>/train/<family>/``, so a retried or resumed trial builds a trainer with the same name and Train
  V2 hands the workers the latest checkpoint through ``ray.train.get_checkpoint()``. Rank 0 also reports
  its placement group so the driver can free it when Tune stops the trial mid-run
  (:class:`~.callbacks.TrainGroupReaper`).

Classic families (SIFT-BoW-SVM) always run ``direct`` on CPUs: one "epoch", descriptors read from the
shared cache the driver pre-warmed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray.tune
import ray.util
from ray.tune import Checkpoint

from dvt_search import families
from dvt_search.families.base import DataSpec, EpochReport, FitData, Model

from .callbacks import TrainGroupReaper
from .setup import TrialSetup, datasets, import_plugins

#: Reported with every epoch besides the family's metrics.
EPOCH_KEY = "epoch"


def _limit_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _quiet_checkpoint_logs() -> None:
    """Ray logs one INFO line per persisted checkpoint (every epoch of every trial); keep warnings only."""
    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _build_or_resume(
    family: type, params: Mapping[str, Any], setup: TrialSetup, checkpoint: Checkpoint | None
) -> Model:
    if checkpoint is None:
        values = dict(params)
        if "max_epochs" in family.default_params() and "max_epochs" not in values:
            values["max_epochs"] = setup.budget  # LR-schedule horizon = the search budget
        return family.build(values, DataSpec.from_dict(setup.spec))
    with checkpoint.as_directory() as d:
        return family.load(d)


def _fit_kwargs(setup: TrialSetup) -> dict[str, Any]:
    if setup.kind == "torch":
        return {"device": "cuda" if setup.gpus > 0 else "cpu"}
    return {"n_jobs": max(1, int(setup.cpus)), "use_cache": setup.use_cache}


def _fit_data(setup: TrialSetup) -> FitData:
    data = datasets(setup)
    cache = Path(setup.cache_dir) if setup.cache_dir else None
    return FitData(train=data["train"], val=data["val"], cache_dir=cache, num_workers=setup.loader_workers)


def _checkpointing_callback(report_fn: Callable[[dict[str, float], Checkpoint | None], None], save: bool):
    """An engine epoch callback that saves the model and hands metrics + checkpoint to ``report_fn``."""

    def on_epoch(report: EpochReport, model: Model) -> bool:
        metrics = {**report.metrics, EPOCH_KEY: report.epoch}
        if not save:
            report_fn(metrics, None)
            return False
        with tempfile.TemporaryDirectory(prefix="dvt-ckpt-") as tmp:
            model.save(Path(tmp) / "model")
            report_fn(metrics, Checkpoint.from_directory(str(Path(tmp) / "model")))
        return False

    return on_epoch


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable of every family (``config = {"params", "optuna_number", "run"}``)."""
    setup = TrialSetup.from_dict(config["run"])
    import_plugins(setup.plugins)
    _quiet_checkpoint_logs()
    if setup.kind == "torch" and setup.trainer == "ray-train":
        _run_ray_train(config, setup)
        return
    _limit_threads(setup.cpus)
    family = families.get(setup.family)
    model = _build_or_resume(family, config["params"], setup, ray.tune.get_checkpoint())

    def report(metrics: dict[str, float], checkpoint: Checkpoint | None) -> None:
        ray.tune.report(metrics, checkpoint=checkpoint)

    model.fit(
        _fit_data(setup), setup.budget, _checkpointing_callback(report, save=True), **_fit_kwargs(setup)
    )


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train ``train_loop_per_worker``: DDP training of one trial through the shared engine."""
    import ray.train
    import ray.train.torch

    setup = TrialSetup.from_dict(config["run"])
    import_plugins(setup.plugins)
    _quiet_checkpoint_logs()
    _limit_threads(setup.cpus)
    rank = ray.train.get_context().get_world_rank()
    family = families.get(setup.family)
    model = _build_or_resume(family, config["params"], setup, ray.train.get_checkpoint())

    group = ray.util.get_current_placement_group()
    tag = {TrainGroupReaper.KEY: group.id.hex()} if group is not None else {}

    def report(metrics: dict[str, float], checkpoint: Checkpoint | None) -> None:
        ray.train.report({**metrics, **tag}, checkpoint=checkpoint)

    model.fit(
        _fit_data(setup),
        setup.budget,
        _checkpointing_callback(report, save=rank == 0),
        device=ray.train.torch.get_device(),
        prepare_model=ray.train.torch.prepare_model,
        prepare_loader=ray.train.torch.prepare_data_loader,
        is_main=rank == 0,
    )


def _run_ray_train(config: dict[str, Any], setup: TrialSetup) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    resources = {"CPU": float(setup.cpus)}
    if setup.gpus > 0:
        resources["GPU"] = float(setup.gpus)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run": config["run"], "params": config["params"]},
        torch_config=TorchConfig(backend="nccl" if setup.gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=setup.workers, use_gpu=setup.gpus > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=trial_id,
            storage_path=setup.train_storage,
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(
                num_to_keep=setup.keep_checkpoints,
                checkpoint_score_attribute="val_auc",
                checkpoint_score_order="max",
            ),
            # Retries belong to Tune (FailureConfig of the search); a retried trial resumes this run.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()

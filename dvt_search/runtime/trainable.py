"""The Tune function every trial runs: build (or resume) one model and report each epoch to Tune.

Two ways to train a torch family:

* ``direct``: the engine runs inside the Tune trial's own actor. After each epoch the model is saved into
  the trial's own checkpoint store (:mod:`.checkpoints`, on the shared storage) and the epoch's metrics
  go to ``ray.tune.report`` together with that checkpoint's path. A retried trial (``FailureConfig``) or a
  resumed driver starts the function again and it continues from the store's latest checkpoint up to the
  budget. (Tune's own trial checkpoints are not used: see :mod:`.checkpoints` for the resume gap.)
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

Every trial process first checks it sees the run directory the driver wrote (:mod:`.storage`); a node
that does not ends the trial at once as ``failed`` with a message naming the node and the path.

A trial that runs out of GPU memory (``torch.OutOfMemoryError``, in its own process or in a Ray Train
worker) ends at once as ``failed``, not retried, with a message naming family, batch size, image size, GPU
share and measured need (:mod:`.failures`). Under ``--gpus-per-trial auto`` a trial's share is the one
the driver measured for its batch size (:mod:`.packing`); resident data (``--resident-budget-gb``) is
said in the trial's log.

A ``direct`` trial's process may run the family's next trial too (Tune's actor re-use, see
:mod:`.tuning`): each trial first frees what the one before left (:func:`_fresh_process_state`) and
raises Tune's wait for the previous trial's thread (:data:`REUSE_WAIT_S`).

Tune ends a trial's process by SIGTERM (its placement group removed); a SIGTERM that lands while the
process runs a finalizer ends it without a traceback on the terminal (:mod:`.sigterm`).

A trial that the run's records show as already finished (``completed``/``stopped``) returns at once: a
driver killed before Tune's next experiment snapshot restores it as unfinished.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray.tune
import ray.util
import torch
from ray.tune import Checkpoint

from dvt_search import families
from dvt_search.families.base import EpochReport, FitData, Model

from . import sigterm
from .callbacks import CHECKPOINT_KEY, TrainGroupReaper
from .checkpoints import TrialCheckpoints
from .console import epoch_line, trial_logger
from .failures import OOM_ERROR_KEY, fatal_result, oom_message, oom_text
from .packing import GpuPlan, measured_need
from .setup import TrialContext, datasets, model_spec, train_worker_cpus
from .storage import StorageError, check_marker, failure_result, storage_message

log = logging.getLogger(__name__)

#: Reported with every epoch besides the family's metrics.
EPOCH_KEY = "epoch"

EpochSink = Callable[[dict[str, float], Model], None]

#: Seconds Tune waits for a stopped trial's thread before it gives the process to the next trial
#: (``TUNE_FUNCTION_THREAD_TIMEOUT_S``, read by ``FunctionTrainable.reset_config`` in this process). Ray's
#: default of 2 s is too short for a trial slow to unwind (loader workers ending, a slow disk), and when it
#: runs out Ray 2.60 sets the next trial ERROR without telling the searcher: a ``ConcurrencyLimiter`` at
#: its cap then waits for it forever (found by ``tests/runtime/test_actor_reuse.py``).
REUSE_WAIT_S = 300

#: Seconds between the Train V2 controller's polls of its workers (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``,
#: Ray's default 2 s), set in a ``ray-train`` trial's process unless the user set it; Train propagates it to
#: the controller. The controller notices a finished (or failed) worker group only at its next poll, so the
#: default adds ~1 s on average to every Ray Train trial (measured: ``bench/bench_search.py --parts p``).
TRAIN_POLL_S = 0.5


def _fresh_process_state() -> None:
    """Prepare this process for a trial, also when an earlier trial of the family ran in it (re-use).

    The stopped trial's model and optimizer are unreachable once its thread ended, but may sit in reference
    cycles: collected here, and the CUDA cache they held is handed back to the device (a re-used process
    keeps its GPU share; what the next trial allocates is its own).
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(REUSE_WAIT_S))
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _limit_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def _show_resident_log(trial_log: logging.Logger) -> None:
    """Route the resident-data line (what a trial holds in memory, or why not) into the trial's log."""
    from dvt_search.data.resident import log as resident_log

    resident_log.setLevel(logging.INFO)
    resident_log.propagate = False
    for handler in trial_log.handlers:
        if handler not in resident_log.handlers:
            resident_log.addHandler(handler)


def _quiet_checkpoint_logs() -> None:
    """Ray logs one INFO line per persisted checkpoint (every epoch of every trial); keep warnings only."""
    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _report_blind(message: str, ref: dict[str, Any]) -> None:
    """End the trial at once with the storage failure as its one result (not retried: see :mod:`.storage`)."""
    log.error("%s", message)
    ray.tune.report(failure_result(message, str(ref.get("metric", "val_auc"))))


def _build_or_resume(
    family: type, params: Mapping[str, Any], ctx: TrialContext, checkpoint: Path | None
) -> Model:
    if checkpoint is not None:
        return family.load(checkpoint)
    if ctx.spec is None:
        raise RuntimeError(f"{ctx.run.run_file}: no data spec recorded; the driver computes it before trials")
    values = dict(params)
    if "max_epochs" in family.default_params() and "max_epochs" not in values:
        values["max_epochs"] = ctx.budget  # LR-schedule horizon = the search budget
    return family.build(values, model_spec(ctx, values))


def _fit_data(ctx: TrialContext) -> FitData:
    data = datasets(ctx)
    res = ctx.config.resources
    return FitData(
        train=data["train"],
        val=data["val"],
        cache_dir=ctx.cache_dir,
        num_workers=res.loader_workers,
        resident_budget_gb=res.resident_budget_gb,
        resident_on=res.resident_on,
    )


def trial_gpus(ctx: TrialContext, params: Mapping[str, Any]) -> float:
    """The GPUs (per worker) a trial with ``params`` holds: its measured share under ``auto`` (:mod:`.packing`)."""
    if ctx.config.resources.gpus_auto and ctx.needs.gpus > 0:
        plan = GpuPlan.load(ctx.run, ctx.family, ctx.needs.cpus, ctx.spec)
        if plan is not None:
            return plan.share(params)
    return float(ctx.needs.gpus)


def _oom(ctx: TrialContext, model: Model, gpus: float, exc: BaseException) -> str:
    spec = getattr(model, "spec", None) or ctx.spec  # the model's own input (input_size, context_slices)
    size, channels = (spec.image_size, spec.in_channels) if spec is not None else (0, 0)
    batch = model.params.get("batch_size")
    need = measured_need(ctx.run, ctx.family, batch, size, channels)
    return oom_message(ctx.family, batch, size, gpus, need, exc)


def _report_fatal(key: str, message: str, ref: Mapping[str, Any], epoch: int) -> None:
    """End the trial at once with a not-retried failure as its last result (:mod:`.failures`)."""
    log.error("%s", message)
    ray.tune.report(fatal_result(key, message, str(ref.get("metric", "val_auc")), epoch))


def _epoch_callback(sink: EpochSink):
    """An engine epoch callback handing ``{metrics..., "epoch"}`` and the model to ``sink``."""

    def on_epoch(report: EpochReport, model: Model) -> bool:
        sink({**report.metrics, EPOCH_KEY: report.epoch}, model)
        return False

    return on_epoch


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable of every family (``config = {"params", "optuna_number", "run"}``)."""
    sigterm.install()  # Tune ends this process by SIGTERM: no traceback if it lands in a finalizer
    ref = config["run"]
    try:
        check_marker(ref)  # before anything else of the run is read from the storage
    except StorageError as exc:
        _report_blind(str(exc), ref)
        return
    ctx = TrialContext.load(ref)
    _quiet_checkpoint_logs()
    trial_id = ray.tune.get_context().get_trial_id()
    final = ctx.run.read_trial(ctx.family, trial_id)
    if final is not None and final.final:  # Tune needs a result from every trial: repeat the last epoch
        log.warning(
            "trial %s had already finished before the driver was restarted; not re-running it", trial_id
        )
        ray.tune.report({**final.last, EPOCH_KEY: final.epochs})
        return
    if ctx.ray_train:
        try:
            _run_ray_train(config, ctx, trial_id)
        except Exception as exc:
            message = storage_message(exc)  # a Train worker on a node without the storage
            if message is not None:
                _report_blind(message, ref)
                return
            message = oom_text(exc)  # a Train worker ran out of GPU memory: not retried either
            if message is None:
                raise
            rec = ctx.run.read_trial(ctx.family, trial_id)
            _report_fatal(OOM_ERROR_KEY, message, ref, rec.epochs if rec is not None else 0)
        return
    _fresh_process_state()
    _limit_threads(ctx.needs.cpus)
    epochs = trial_logger()
    _show_resident_log(epochs)
    family = families.get(ctx.family)
    store = TrialCheckpoints(ctx.train_storage / trial_id, keep=ctx.config.keep_checkpoints)
    model = _build_or_resume(family, config["params"], ctx, store.latest())

    def sink(metrics: dict[str, float], model: Model) -> None:
        path = store.save(model, int(metrics[EPOCH_KEY]), metrics)
        epochs.info(epoch_line(ctx.family, trial_id, int(metrics[EPOCH_KEY]), ctx.budget, metrics))
        ray.tune.report({**metrics, CHECKPOINT_KEY: str(path)})

    device = "cuda" if ctx.needs.gpus > 0 else "cpu"
    try:
        model.fit(_fit_data(ctx), ctx.budget, _epoch_callback(sink), **ctx.fit_options(device))
    except torch.OutOfMemoryError as exc:  # the same batch on the same share fails again: no retry
        _report_fatal(
            OOM_ERROR_KEY, _oom(ctx, model, trial_gpus(ctx, config["params"]), exc), ref, model.epochs_done
        )


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train ``train_loop_per_worker``: DDP training of one trial through the shared engine."""
    import ray.train
    import ray.train.torch

    sigterm.install()
    check_marker(config["run"])  # raises StorageError: the trial reports it (run_trial)
    ctx = TrialContext.load(config["run"])
    _quiet_checkpoint_logs()
    _limit_threads(ctx.needs.cpus)
    rank = ray.train.get_context().get_world_rank()
    trial_name = ray.train.get_context().get_experiment_name()  # the Train run is named after the trial
    family = families.get(ctx.family)
    with tempfile.TemporaryDirectory(prefix="dvt-resume-") as tmp:
        checkpoint = ray.train.get_checkpoint()
        model = _build_or_resume(
            family, config["params"], ctx, Path(checkpoint.to_directory(tmp)) if checkpoint else None
        )
    group = ray.util.get_current_placement_group()
    tag = {TrainGroupReaper.KEY: group.id.hex()} if group is not None else {}

    epochs = trial_logger()
    _show_resident_log(epochs)

    def sink(metrics: dict[str, float], model: Model) -> None:
        if rank != 0:
            ray.train.report({**metrics, **tag}, checkpoint=None)
            return
        epochs.info(epoch_line(ctx.family, trial_name, int(metrics[EPOCH_KEY]), ctx.budget, metrics))
        with tempfile.TemporaryDirectory(prefix="dvt-ckpt-") as tmp:
            model.save(Path(tmp) / "model")
            ray.train.report(
                {**metrics, **tag}, checkpoint=Checkpoint.from_directory(str(Path(tmp) / "model"))
            )

    try:
        model.fit(
            _fit_data(ctx),
            ctx.budget,
            _epoch_callback(sink),
            device=ray.train.torch.get_device(),
            prepare_model=ray.train.torch.prepare_model,
            prepare_loader=ray.train.torch.prepare_data_loader,
            is_main=rank == 0,
        )
    except torch.OutOfMemoryError as exc:  # raised tagged: the trial's Tune function reports it (run_trial)
        raise RuntimeError(_oom(ctx, model, trial_gpus(ctx, config["params"]), exc)) from None


def _run_ray_train(config: dict[str, Any], ctx: TrialContext, trial_id: str) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(TRAIN_POLL_S))
    needs = ctx.needs
    resources = {"CPU": train_worker_cpus(needs)}  # the trial's own process holds the rest
    if needs.gpus > 0:
        resources["GPU"] = trial_gpus(ctx, config["params"])
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"run": config["run"], "params": config["params"]},
        torch_config=TorchConfig(backend="nccl" if needs.gpus > 0 else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=needs.workers, use_gpu=needs.gpus > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=trial_id,
            storage_path=str(ctx.train_storage),
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(
                num_to_keep=ctx.config.keep_checkpoints,
                checkpoint_score_attribute="val_auc",
                checkpoint_score_order="max",
            ),
            # Retries belong to Tune (FailureConfig of the search); a retried trial resumes this run.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()

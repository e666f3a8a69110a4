"""One family's Tune experiment: trainable resources, searcher, scheduler, and fresh start or restore.

Scheduler: ``ASHAScheduler(time_attr="epoch", max_t=budget, grace_period, reduction_factor)``. The time
attribute is the *epoch the family reported*, not Tune's ``training_iteration``: a ``ray-train`` trial
that is retried resumes its Train run at epoch ``e`` while Tune's iteration counter starts again at 1.
One-shot families (budget 1, SIFT) run FIFO: there is nothing to stop early.

Actor reuse: one-shot trials re-use their Tune actor (no new process, imports and dataset opening per
trial: seconds each on small CPUs). Epoch-budget trials get a fresh actor each: when Tune stops a trial
mid-epoch its training thread runs on until the next report, Tune gives a re-used actor 2 s to become
free and fails the *next* trial when it is not.

Per-trial resources: ``direct`` trials reserve ``{"CPU": cpus, "GPU": gpus}`` (fractional GPUs pack several
trials on one device); a ``ray-train`` trial's Tune function only waits on its trainer and reserves
no CPU (Ray's default of 1 CPU per trial would leave a 2-worker trial unschedulable on 2 CPUs), while its ``workers`` Train workers reserve ``cpus``/``gpus`` each. Concurrency is capped by a
``ConcurrencyLimiter`` at what the cluster holds, so ``ray-train`` trials never queue for workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from dvt_search.search.space import SearchSpace

from .callbacks import ProgressCallback, RecordsCallback, TrainGroupReaper
from .searcher import OptunaStudySearcher, close_unfinished
from .setup import TrialSetup
from .trainable import run_trial

log = logging.getLogger(__name__)

METRIC, MODE = "val_auc", "max"
JOURNAL_FILE = "optuna.journal"


@dataclass(frozen=True)
class TuneSettings:
    """Search settings shared by every family of a run."""

    trials: int
    max_failures: int = 2
    grace_period: int = 1
    reduction_factor: float = 3.0
    scheduler: str = "asha"
    sampler: str = "tpe"
    startup_trials: int = 10
    seed: int = 0
    max_concurrent: int = 1
    progress_every_s: float = 30.0


def trial_resources(setup: TrialSetup) -> dict[str, float]:
    """What one Tune trial reserves (see the module docstring)."""
    if setup.kind == "torch" and setup.trainer == "ray-train":
        # Tune rejects an all-zero request; one byte of "memory" reserves nothing that matters and
        # leaves every CPU/GPU to the Train workers (Ray's docs use a tiny custom resource instead).
        return {"memory": 1.0}
    res = {"CPU": float(setup.cpus)}
    if setup.gpus > 0:
        res["GPU"] = float(setup.gpus)
    return res


def reserved(setup: TrialSetup) -> tuple[float, float]:
    """CPUs and GPUs a trial holds in total (all its Train workers together)."""
    n = setup.workers if setup.kind == "torch" and setup.trainer == "ray-train" else 1
    return setup.cpus * n, setup.gpus * n


def _scheduler(settings: TuneSettings, budget: int) -> Any:
    if settings.scheduler == "fifo" or budget <= 1:
        return FIFOScheduler()
    if settings.scheduler != "asha":
        raise ValueError(f"unknown scheduler {settings.scheduler!r}; expected asha or fifo")
    return ASHAScheduler(
        time_attr="epoch",
        max_t=budget,
        grace_period=max(1, min(settings.grace_period, budget)),
        reduction_factor=settings.reduction_factor,
    )


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _trainable(setup: TrialSetup) -> Any:
    return tune.with_resources(run_trial, trial_resources(setup))


def run_family(
    run_path: Path, space: SearchSpace, setup: TrialSetup, settings: TuneSettings
) -> tune.ResultGrid:
    """Run (or resume) one family's search until it holds ``settings.trials`` finished trials.

    After Tune returns, Optuna trials still RUNNING (errored trials) are told FAIL.
    """
    family = setup.family
    exp_path = run_path / "tune" / family
    journal = run_path / JOURNAL_FILE
    param_space = {"run": setup.to_dict()}
    if tune.Tuner.can_restore(str(exp_path)):
        log.info("%s: resuming the Tune experiment in %s", family, exp_path)
        tuner = tune.Tuner.restore(
            str(exp_path),
            trainable=_trainable(setup),
            resume_unfinished=True,
            resume_errored=True,
            param_space=param_space,
        )
    else:
        cpus, gpus = reserved(setup)
        searcher = OptunaStudySearcher(
            space,
            journal,
            num_samples=settings.trials,
            budget=setup.budget,
            metric=METRIC,
            mode=MODE,
            seed=settings.seed,
            sampler=settings.sampler,
            startup_trials=settings.startup_trials,
        )
        callbacks = [
            RecordsCallback(
                run_path, family, budget=setup.budget, metric=METRIC, mode=MODE, cpus=cpus, gpus=gpus
            ),
            ProgressCallback(
                family,
                settings.trials,
                budget=setup.budget,
                metric=METRIC,
                mode=MODE,
                every_s=settings.progress_every_s,
            ),
            TrainGroupReaper(),
        ]
        tuner = tune.Tuner(
            _trainable(setup),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=max(1, settings.max_concurrent)),
                scheduler=_scheduler(settings, setup.budget),
                num_samples=settings.trials,
                reuse_actors=setup.kind != "torch",
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=family,
                storage_path=str(run_path / "tune"),
                # Trials keep their own checkpoints (see .checkpoints): none go through Tune.
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    results = tuner.fit()
    closed = close_unfinished(journal, family)
    if closed:
        log.info("%s: %d failed trial(s) marked FAIL in the Optuna study", family, closed)
    return results

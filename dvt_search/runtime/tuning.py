"""One family's Tune experiment: trainable resources, searcher, scheduler, and fresh start or restore.

Scheduler: ``ASHAScheduler(time_attr="epoch", max_t=budget, grace_period, reduction_factor)``. The time
attribute is the *epoch the family reported*, not Tune's ``training_iteration``: a ``ray-train`` trial
that is retried resumes its Train run at epoch ``e`` while Tune's iteration counter starts again at 1.
One-shot families (budget 1, SIFT) run FIFO: there is nothing to stop early. The paper trial (the family's
paper configuration, enqueued first by the searcher) is never stopped early (:class:`PaperExemptASHA`): it
is the comparator of "search vs the paper's hand-tuning", so it always runs its full budget (its results
still enter the rungs, as every trial's do).

Actor reuse (``TrialNeeds.reuse_actors``: every ``direct`` trial; ``--no-reuse-actors`` turns it off for
a session): a trial's process, with its placement group, runs the family's next trial (Tune's
``reuse_actors``) instead of ending, so the next trial needs no new process, no imports (torch and Ray Tune:
seconds each on small CPUs) and no dataset opening, and its GPU never sits idle between the two. Measured
by ``bench/bench_concurrent.py``: a fresh process per trial left each GPU idle for the whole start of the
next one (placement group placed -> process alive), most of the GPU idle of a concurrent search. It is safe
with the trials' own checkpoints: a trial that Tune stops (ASHA) is blocked inside its ``ray.tune.report``
(synchronous reporting), Tune's reset ends that thread at once (``SystemExit`` out of the report) and the
next trial reads its own trial id and checkpoint store. Tune gives the old thread
``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (2 s) and fails the next trial if it is still alive (in Ray 2.60 without
telling the searcher, so a search at its concurrency cap hangs): every trial raises that wait to
:data:`~.trainable.REUSE_WAIT_S` in its process. A failed trial's process is never re-used (Tune
drops it); a retried trial starts from its store's latest checkpoint as before. ``ray-train`` trials get a
fresh process each (a stopped Train run is cut where it stands, see :class:`~.callbacks.TrainGroupReaper`).
A resumed experiment gets this session's setting (:func:`set_reuse`), as it gets its concurrency.
Across families: the GPU families searched at once share one experiment (:mod:`.group`), so the process
passes from one family's trial to another's too.

Per-trial resources: ``direct`` trials reserve ``{"CPU": cpus, "GPU": gpus}`` (fractional GPUs pack several
trials on one device); a ``ray-train`` trial's Tune function only waits on its trainer and reserves
``DRIVER_CPU`` (0.01) CPU, taken out of each of its ``workers`` Train workers' ``cpus`` (they reserve
``gpus`` each too), so the driver fits beside one worker on a node of ``cpus`` CPUs and never lands on a ``CPU: 0`` head
(the Train V2 controller runs on the Tune function's node; Ray's default of 1 CPU per trial would leave a
2-worker trial unschedulable on 2 CPUs). Concurrency is capped by a
concurrency limiter (:class:`~.searcher.ResumableLimiter`: Ray's, whose saved state also keeps its live
trials) at what the cluster holds, so ``ray-train`` trials never queue for workers. A resumed
experiment gets this session's cap (``--max-concurrent`` or the cluster's size now), not the first run's
(:func:`set_concurrency`: ``Tuner.restore`` would otherwise reload the pickled limiter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from dvt_search.families.base import TrialNeeds
from dvt_search.rundir.config import SchedulerConfig
from dvt_search.rundir.status import family_done
from dvt_search.search.space import SearchSpace

from .callbacks import ProgressCallback, RecordsCallback, TrainGroupReaper
from .console import quiet_libraries
from .packing import GpuPlan
from .searcher import OptunaStudySearcher, ResumableLimiter, close_unfinished
from .setup import DRIVER_CPU, TrialContext
from .trainable import run_trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionSettings:
    """What this driver session adds to the run's config for one family's experiment (never saved)."""

    max_concurrent: int = 1
    progress_every_s: float = 30.0
    reuse_actors: bool = True  # False: a fresh process per trial even where the family allows re-use


def trial_resources(needs: TrialNeeds) -> dict[str, float]:
    """What one Tune trial reserves (see the module docstring)."""
    if needs.trainer == "ray-train":
        # The Tune function only waits on its TorchTrainer, whose Train V2 controller Ray pins to this
        # actor's node (num_cpus=0). A CPU share keeps both off a CPU: 0 head (memory, which every node
        # advertises, did not); it comes out of the Train workers' CPUs (setup.train_worker_cpus).
        return {"CPU": DRIVER_CPU} if needs.cpus > DRIVER_CPU else {"memory": 1.0}
    res = {"CPU": float(needs.cpus)}
    if needs.gpus > 0:
        res["GPU"] = float(needs.gpus)
    return res


def scheduler_name(config: SchedulerConfig, budget: int) -> str:
    """The scheduler a family's experiment actually uses (one-shot families run FIFO)."""
    return "fifo" if budget <= 1 else config.type


class PaperExemptASHA(ASHAScheduler):
    """Ray's ASHA, except that a trial whose config holds ``paper_config: true`` is never stopped early.

    Its results are recorded in the rungs like every other trial's (it can stop others); only a STOP
    decision before ``max_t`` is turned into CONTINUE for it.
    """

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        exempt = bool((getattr(trial, "config", None) or {}).get("paper_config"))
        if exempt and action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def _scheduler(config: SchedulerConfig, budget: int) -> Any:
    if config.type == "fifo" or budget <= 1:
        return FIFOScheduler()
    if config.type != "asha":
        raise ValueError(f"unknown scheduler {config.type!r}; expected asha or fifo")
    return PaperExemptASHA(
        time_attr=config.time_attr,
        max_t=budget,
        grace_period=max(1, min(config.grace_period, budget)),
        reduction_factor=config.reduction_factor,
    )


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


#: The trainable name of experiments started before families ran at once (kept for their resume).
LEGACY_TRAINABLE = "run_trial"


def family_trainable(
    family: str, needs: TrialNeeds, name: str | None = None, gpus: GpuPlan | None = None
) -> Any:
    """:func:`run_trial` under the family's own trainable name, with the family's resources.

    Resources: per trial from the measured plan of ``--gpus-per-trial auto`` (``gpus``; ``direct`` trials,
    a ``ray-train`` trial's workers read the plan themselves), else fixed (:func:`trial_resources`).

    Tune registers trainables by name in one registry per Ray job (the GCS key-value store), and every
    process of the job reads them back from there: families searched at once (:mod:`.concurrent`) under
    one name would all schedule their trials with the resources of whichever registered last.
    """

    def trial(config: dict[str, Any]) -> Any:
        return run_trial(config)

    trial.__name__ = trial.__qualname__ = name or f"run_trial_{family}"
    if gpus is not None and needs.trainer != "ray-train":
        return tune.with_resources(trial, gpus)
    return tune.with_resources(trial, trial_resources(needs))


def _restore(
    path: str, family: str, needs: TrialNeeds, param_space: dict[str, Any], gpus: GpuPlan | None
) -> tune.Tuner:
    def restore(name: str | None) -> tune.Tuner:
        return tune.Tuner.restore(
            path,
            trainable=family_trainable(family, needs, name, gpus),
            resume_unfinished=True,
            resume_errored=True,
            param_space=param_space,
        )

    try:
        return restore(None)
    except ValueError as exc:  # an experiment started before trainables had per-family names
        if f"expected '{LEGACY_TRAINABLE}'" not in str(exc):
            raise
        return restore(LEGACY_TRAINABLE)


def restored_tune_config(tuner: tune.Tuner) -> tune.TuneConfig:
    """The ``TuneConfig`` a restored Tuner unpickled from the first run's ``tuner.pkl``.

    Ray 2.60's ``Tuner.restore`` takes no ``TuneConfig``: the search algorithm (with that run's
    ``max_concurrent``) and ``reuse_actors`` come back as pickled at the first start. There is no public
    accessor, so this reaches into the Tuner (``_local_tuner._tune_config``) and fails loudly if a Ray
    upgrade moved it.
    """
    config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    if not isinstance(config, tune.TuneConfig):
        raise RuntimeError(
            "cannot reach the restored Tune experiment's TuneConfig (Tuner internals changed in this Ray "
            f"version, {type(config).__name__} found): resume would keep the first run's settings"
        )
    return config


def restored_limiter(tuner: tune.Tuner) -> ConcurrencyLimiter:
    """The ``ConcurrencyLimiter`` of a restored Tuner (see :func:`restored_tune_config`)."""
    limiter = restored_tune_config(tuner).search_alg
    if not isinstance(limiter, ConcurrencyLimiter):
        raise RuntimeError(
            "cannot reach the restored Tune experiment's ConcurrencyLimiter (Tuner internals changed in "
            f"this Ray version, {type(limiter).__name__} found): resume would keep the first run's concurrency"
        )
    return limiter


def set_concurrency(tuner: tune.Tuner, max_concurrent: int) -> None:
    """Make a restored experiment run ``max_concurrent`` trials at a time (this session's value)."""
    limiter = restored_limiter(tuner)
    before = limiter.max_concurrent
    limiter.set_max_concurrency(max(1, int(max_concurrent)))
    if before != limiter.max_concurrent:
        log.info(
            "concurrency of the resumed experiment: %d (the first run had %d)", limiter.max_concurrent, before
        )


def set_reuse(tuner: tune.Tuner, reuse_actors: bool) -> None:
    """Make a restored experiment re-use (or not) its trials' processes (this session's value)."""
    restored_tune_config(tuner).reuse_actors = bool(reuse_actors)


def reuses_actors(needs: TrialNeeds, session: SessionSettings) -> bool:
    """Whether the family's consecutive trials share a process (the family allows it and the session too)."""
    return bool(needs.reuse_actors and session.reuse_actors)


def family_searcher(space: SearchSpace, ctx: TrialContext) -> OptunaStudySearcher:
    """The family's Optuna searcher over its study in the run's journal."""
    cfg = ctx.config
    return OptunaStudySearcher(
        space,
        ctx.run.journal,
        num_samples=cfg.budget.trials_for(ctx.family),
        budget=ctx.budget,
        metric=cfg.metric,
        mode=cfg.mode,
        seed=cfg.seed,
        sampler=cfg.searcher.sampler,
        startup_trials=cfg.searcher.startup_trials,
        paper_trial=cfg.searcher.paper_trial,
    )


def family_scheduler(ctx: TrialContext) -> Any:
    """The family's trial scheduler (ASHA, or FIFO for one-shot families)."""
    return _scheduler(ctx.config.scheduler, ctx.budget)


def family_callbacks(ctx: TrialContext, session: SessionSettings, gpus: GpuPlan | None) -> list[Any]:
    """The callbacks that keep the family's run-directory records and its progress line."""
    cfg, needs = ctx.config, ctx.needs
    return [
        RecordsCallback(
            ctx.run.path,
            ctx.family,
            budget=ctx.budget,
            metric=cfg.metric,
            mode=cfg.mode,
            cpus=needs.total_cpus,
            gpus=needs.total_gpus,
            gpu_plan=gpus,
            workers=needs.workers,
        ),
        ProgressCallback(
            ctx.family,
            cfg.budget.trials_for(ctx.family),
            budget=ctx.budget,
            metric=cfg.metric,
            mode=cfg.mode,
            every_s=session.progress_every_s,
        ),
    ]


def family_gpu_plan(ctx: TrialContext, gpus: GpuPlan | None = None) -> GpuPlan | None:
    """The measured GPU shares of ``--gpus-per-trial auto`` (read from the run directory when not given)."""
    if gpus is None and ctx.config.resources.gpus_auto and ctx.needs.gpus > 0:
        gpus = GpuPlan.load(ctx.run, ctx.family, ctx.needs.cpus, ctx.spec)
    return gpus


def fit_quietly(tuner: tune.Tuner, run: Any, members: dict[str, int]) -> tune.ResultGrid:
    """``tuner.fit()`` with the libraries quiet; then FAIL in Optuna for each finished family's open trials.

    ``members``: family -> its trials per family (a family is finished once that many records ended).
    Interrupted (Ctrl-C, Tune's stop signal): Tune saved its state and ``--resume`` re-runs the unfinished
    trials, so their Optuna trials stay RUNNING (a FAIL cannot be undone).
    """
    with quiet_libraries():  # Tune's banners and Optuna's INFO lines stay off the terminal (.console)
        results = tuner.fit()
        for family, trials in members.items():
            closed = close_unfinished(run.journal, family) if family_done(run, family, trials) else 0
            if closed:
                log.info("%s: %d failed trial(s) marked FAIL in the Optuna study", family, closed)
    return results


def run_family(
    space: SearchSpace, ctx: TrialContext, session: SessionSettings, gpus: GpuPlan | None = None
) -> tune.ResultGrid:
    """Run (or resume) one family's search until it holds the run's trials per family.

    ``gpus``: the measured per-batch-size GPU shares (``--gpus-per-trial auto``, :mod:`.packing`; read from
    the run directory when not given). After Tune returns with every trial ended, Optuna trials still
    RUNNING (errored trials) are told FAIL.
    """
    family, cfg, needs, run = ctx.family, ctx.config, ctx.needs, ctx.run
    gpus = family_gpu_plan(ctx, gpus)
    exp_path = run.tune_dir(family)
    trials = cfg.budget.trials_for(family)
    param_space = {"run": ctx.ref()}
    if tune.Tuner.can_restore(str(exp_path)):
        log.info("%s: resuming the Tune experiment in %s", family, exp_path)
        tuner = _restore(str(exp_path), family, needs, param_space, gpus)
        set_concurrency(tuner, session.max_concurrent)
        set_reuse(tuner, reuses_actors(needs, session))
    else:
        tuner = tune.Tuner(
            family_trainable(family, needs, gpus=gpus),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=cfg.metric,
                mode=cfg.mode,
                search_alg=ResumableLimiter(
                    family_searcher(space, ctx), max_concurrent=max(1, session.max_concurrent)
                ),
                scheduler=family_scheduler(ctx),
                num_samples=trials,
                reuse_actors=reuses_actors(needs, session),
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=family,
                storage_path=str(run.tune_root),
                # Trials keep their own checkpoints (see .checkpoints): none go through Tune.
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=[*family_callbacks(ctx, session, gpus), TrainGroupReaper()],
                verbose=0,
            ),
        )
    return fit_quietly(tuner, run, {family: trials})

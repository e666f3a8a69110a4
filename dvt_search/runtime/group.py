"""Several families' searches in ONE Tune experiment, so a trial process can pass from one family to another.

Why: a Tune trial process (actor) belongs to one experiment. With one experiment per family, the moment a
GPU passes from one family's last trial to another family's first, a new process has to start (a Ray
worker importing torch and Ray Tune: seconds on every handoff) while the GPU is reserved and idle. That
was most of the GPU idle left in a concurrent search after actor re-use (``bench/bench_concurrent.py``).
In one experiment, Tune's actor re-use hands the process to whichever family's trial is next, as long as
both reserve the same resources (Tune's actor cache is keyed by the resource request).

What stays per family (nothing of a family's search is shared with another):

* its searcher: :class:`GroupSearcher` holds each family's own ``ConcurrencyLimiter`` (its own cap) around
  its own :class:`~.searcher.OptunaStudySearcher` (its own study in the journal) and routes every Tune
  event to the family that suggested the trial;
* its scheduler: :class:`GroupScheduler` holds each family's own ASHA (or FIFO) and routes every trial to
  it, so rungs and stop decisions are computed among one family's trials only;
* its records and progress: each family's ``RecordsCallback`` / ``ProgressCallback`` sees only its own
  trials (:class:`ForFamily`) and writes only ``trials/<family>/``;
* its resources: a trial reserves what its family's trials reserve (the family's fixed resources, or the
  measured share of ``--gpus-per-trial auto`` for its batch size).

Which families share: in a concurrent search, the ``direct`` GPU families whose trials may re-use their
process (:func:`groupable`) and that have no experiment of their own on disk yet (:func:`plan`). CPU-only
families (SIFT) and ``ray-train`` families keep their own experiments: their trials never re-use a GPU
trial's process. ``--no-reuse-actors`` and ``--families-sequential`` form no group. The experiment lives in
``tune/<family>+<family>.../`` (:meth:`~dvt_search.rundir.RunDir.tune_group_dir`): a resumed run finds it
there and restores it whole, with this session's caps and re-use setting, whichever way it is resumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback, PlacementGroupFactory
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from dvt_search.families.base import TrialNeeds
from dvt_search.rundir import RunDir
from dvt_search.search.space import SearchSpace

from .searcher import ResumableLimiter
from .setup import TrialContext
from .trainable import run_trial
from .tuning import (
    SessionSettings,
    family_callbacks,
    family_gpu_plan,
    family_scheduler,
    family_searcher,
    fit_quietly,
    restored_tune_config,
    reuses_actors,
    trial_dirname,
    trial_resources,
)

log = logging.getLogger(__name__)


def trial_family(trial_or_config: Any) -> str | None:
    """The family a trial (or a trial's config) belongs to: ``config["run"]["family"]``."""
    config = getattr(trial_or_config, "config", trial_or_config) or {}
    run = config.get("run") if isinstance(config, Mapping) else None
    return run.get("family") if isinstance(run, Mapping) else None


def groupable(needs: TrialNeeds, session: SessionSettings) -> bool:
    """Whether a family's trials can share processes with other families' (direct GPU trials that re-use)."""
    return needs.trainer == "direct" and needs.gpus > 0 and reuses_actors(needs, session)


def group_name(run: RunDir, members: Sequence[str]) -> str:
    """The shared experiment's name (its directory's, :meth:`~dvt_search.rundir.RunDir.tune_group_dir`)."""
    return run.tune_group_dir(members).name


def plan(
    run: RunDir,
    todo: Sequence[str],
    needs: Mapping[str, TrialNeeds],
    session: SessionSettings,
    *,
    together: bool,
) -> list[tuple[str, ...]]:
    """The experiments that search ``todo``: each a tuple of families (one family: its own experiment).

    An existing group experiment that holds an unfinished family is restored whole (its finished members
    suggest nothing more). New groups form only when ``together`` (families searched at once) from the
    :func:`groupable` families without an experiment of their own, when there are at least two of them.
    """
    left = list(todo)
    out: list[tuple[str, ...]] = []
    for members in run.tune_groups():
        if any(f in left for f in members):
            out.append(members)
            left = [f for f in left if f not in members]
    fresh = [f for f in left if groupable(needs[f], session) and not run.tune_dir(f).exists()]
    if together and len(fresh) >= 2:
        out.append(tuple(fresh))
        left = [f for f in left if f not in fresh]
    return out + [(f,) for f in left]


class GroupSearcher(Searcher):
    """Each member family's own (concurrency-limited) searcher behind one Tune search algorithm.

    ``suggest`` asks the families in turn, starting after the one that suggested last, so no family's
    trials crowd out another's; a trial's events go to the family that suggested it. FINISHED once every
    family's searcher is.
    """

    def __init__(
        self, members: Mapping[str, ResumableLimiter], refs: Mapping[str, dict[str, Any]], **kw: Any
    ):
        super().__init__(**kw)
        self.members = dict(members)
        self.refs = {f: dict(r) for f, r in refs.items()}
        self.owner: dict[str, str] = {}  # Tune trial id -> family
        self._done: set[str] = set()
        self._next = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return all(m.set_search_properties(metric, mode, config, **spec) for m in self.members.values())

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        order = list(self.members)
        for i in range(len(order)):
            fam = order[(self._next + i) % len(order)]
            if fam in self._done:
                continue
            got = self.members[fam].suggest(trial_id)
            if got == Searcher.FINISHED:
                self._done.add(fam)
                continue
            if got is None:
                continue
            self.owner[trial_id] = fam
            self._next = (self._next + i + 1) % len(order)
            return {**got, "run": dict(self.refs[fam])}
        return Searcher.FINISHED if len(self._done) == len(order) else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.members[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.owner:
            self.members[self.owner[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def set_max_concurrent(self, caps: Mapping[str, int]) -> None:
        """This session's cap per family (a restored group keeps the first session's otherwise)."""
        for fam, cap in caps.items():
            if fam in self.members:
                self.members[fam].set_max_concurrency(max(1, int(cap)))

    @property
    def max_pending(self) -> int:
        """Trials Tune may keep PENDING with a placement group requested: every family's cap."""
        return sum(m.max_concurrent for m in self.members.values())

    # --- state (Tune's experiment snapshot; each family's searcher keeps its own) --------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "owner": dict(self.owner),
            "members": {f: m.get_state() for f, m in self.members.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.owner = {str(k): str(v) for k, v in state["owner"].items()}
        for fam, sub in state["members"].items():
            if fam in self.members:
                self.members[fam].set_state(sub)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


class GroupScheduler(FIFOScheduler):
    """Each member family's own scheduler (ASHA or FIFO), every trial routed to its family's.

    Which trial runs next is FIFO over every family's pending trials (what each member would choose too:
    Ray's ASHA chooses as FIFO does); stop decisions are the family's own scheduler's.
    """

    def __init__(self, members: Mapping[str, TrialScheduler]):
        super().__init__()
        self.members = dict(members)

    def _of(self, trial: Any) -> TrialScheduler | None:
        return self.members.get(trial_family(trial) or "")

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        ok = [m.set_search_properties(metric, mode, **spec) for m in self.members.values()]
        return super().set_search_properties(metric, mode, **spec) and all(ok)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if (m := self._of(trial)) is not None:
            m.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if (m := self._of(trial)) is not None:
            m.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        m = self._of(trial)
        return m.on_trial_result(tune_controller, trial, result) if m is not None else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if (m := self._of(trial)) is not None:
            m.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if (m := self._of(trial)) is not None:
            m.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{f}: {m.debug_string()}" for f, m in self.members.items())


class ForFamily(Callback):
    """A callback that sees one family's trials only (the others' events are not passed on)."""

    def __init__(self, family: str, inner: Callback):
        self.family, self.inner = family, inner

    def _mine(self, trials: list) -> list:
        return [t for t in trials if trial_family(t) == self.family]

    def setup(self, **info: Any) -> None:
        self.inner.setup(**info)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.inner.on_step_begin(iteration, self._mine(trials), **info)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.inner.on_step_end(iteration, self._mine(trials), **info)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.inner.on_experiment_end(self._mine(trials), **info)

    def get_state(self) -> dict | None:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)


def _forward(hook: str) -> Any:
    def method(self: ForFamily, iteration: int, trials: list, trial: Any, *args: Any, **info: Any) -> None:
        if trial_family(trial) == self.family:
            getattr(self.inner, hook)(iteration, self._mine(trials), trial, *args, **info)

    method.__name__ = hook
    return method


for _hook in (
    "on_trial_start",
    "on_trial_restore",
    "on_trial_save",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_recover",
    "on_trial_error",
    "on_checkpoint",
):
    setattr(ForFamily, _hook, _forward(_hook))


def group_trainable(name: str, resources: Mapping[str, Any]) -> Any:
    """:func:`~.trainable.run_trial` under the group's trainable name; each trial reserves its family's resources.

    ``resources``: family -> a resource dict, or a callable of the trial config (a :class:`~.packing.GpuPlan`).
    """

    def trial(config: dict[str, Any]) -> Any:
        return run_trial(config)

    trial.__name__ = trial.__qualname__ = f"run_trial_{name}"

    def reserve(config: dict[str, Any]) -> PlacementGroupFactory:
        res = resources[trial_family(config) or ""]
        return res(config) if callable(res) else PlacementGroupFactory([dict(res)])

    return tune.with_resources(trial, reserve)


@contextlib.contextmanager
def _max_pending(n: int) -> Iterator[None]:
    """Let Tune keep ``n`` trials PENDING (it reads ``TUNE_MAX_PENDING_TRIALS_PG`` when its loop starts;
    with a searcher that is not a ``ConcurrencyLimiter`` it would keep only one)."""
    key, before = "TUNE_MAX_PENDING_TRIALS_PG", os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")
    os.environ[key] = str(max(1, int(n)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def run_group(
    spaces: Mapping[str, SearchSpace],
    contexts: Mapping[str, TrialContext],
    caps: Mapping[str, int],
    session: SessionSettings,
) -> tune.ResultGrid:
    """Run (or resume) the group experiment of the families in ``contexts`` until each holds its trials."""
    fams = sorted(contexts)
    first = contexts[fams[0]]
    cfg, run = first.config, first.run
    name = group_name(run, fams)
    plans = {f: family_gpu_plan(contexts[f]) for f in fams}
    resources = {f: plans[f] if plans[f] is not None else trial_resources(contexts[f].needs) for f in fams}
    trainable = group_trainable(name, resources)
    reuse = all(reuses_actors(contexts[f].needs, session) for f in fams)
    path = run.tune_group_dir(fams)
    if tune.Tuner.can_restore(str(path)):
        log.info("%s: resuming the shared Tune experiment in %s", name, path)
        tuner = tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=True, param_space={}
        )
        restored = restored_tune_config(tuner)
        if not isinstance(restored.search_alg, GroupSearcher):
            raise RuntimeError(
                f"{path} is not a shared experiment of families {fams} (its searcher is "
                f"{type(restored.search_alg).__name__})"
            )
        restored.search_alg.set_max_concurrent(caps)
        restored.search_alg.refs = {f: contexts[f].ref() for f in fams}  # this session's (new trials)
        restored.reuse_actors = reuse
        searcher = restored.search_alg
    else:
        searcher = GroupSearcher(
            {
                f: ResumableLimiter(
                    family_searcher(spaces[f], contexts[f]), max_concurrent=max(1, int(caps[f]))
                )
                for f in fams
            },
            {f: contexts[f].ref() for f in fams},
            metric=cfg.metric,
            mode=cfg.mode,
        )
        callbacks = [
            ForFamily(f, cb) for f in fams for cb in family_callbacks(contexts[f], session, plans[f])
        ]
        tuner = tune.Tuner(
            trainable,
            param_space={},
            tune_config=tune.TuneConfig(
                metric=cfg.metric,
                mode=cfg.mode,
                search_alg=searcher,
                scheduler=GroupScheduler({f: family_scheduler(contexts[f]) for f in fams}),
                num_samples=sum(cfg.budget.trials_for(f) for f in fams),
                reuse_actors=reuse,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(run.tune_root),
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    with _max_pending(searcher.max_pending):
        return fit_quietly(tuner, run, {f: cfg.budget.trials_for(f) for f in fams})


__all__ = [
    "ForFamily",
    "GroupScheduler",
    "GroupSearcher",
    "group_name",
    "group_trainable",
    "groupable",
    "plan",
    "run_group",
    "trial_family",
]

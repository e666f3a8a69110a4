"""Every family's Tune experiment at once: one Ray actor per experiment, the driver as the one record keeper.

An experiment is one family's, or one the ``direct`` GPU families share so a trial process can pass from
one family to another (:mod:`.group`, :func:`~.group.plan`); each family keeps its own searcher, ASHA and
records inside it.

Why actors and not threads: Ray Tune keeps process-wide state per experiment. ``tune.with_resources``
sets the trial resources as an attribute of the trainable function object; Tune installs its Ctrl-C
handler only in the main thread, so an experiment in a thread could not be stopped gracefully; and
:func:`~.console.quiet_libraries` sets process-wide switches. Ray itself runs a Tuner remotely this way
for Ray Client (``ray.remote(num_cpus=0)(TunerInternal)`` pinned to the client server's node). Processes
do not separate everything: Tune's trainable registry is one per Ray *job* (the GCS key-value store,
read back by every process), so each family registers its trainable under its own name
(:func:`~.tuning.family_trainable`; under one shared name every family's trials were scheduled with the
resources of the family that registered last: found by ``bench/bench_concurrent.py``, 4 one-GPU trials
running on 2 GPUs). So each experiment
gets a :class:`FamilySearch` actor with ``num_cpus=0`` (it never takes a CPU a trial could use, and fits a
``CPU: 0`` head), pinned to the driver's node (``NodeAffinitySchedulingStrategy``): the actor runs
exactly what the sequential driver runs for one family (its SIFT cache pre-warm, then
:func:`~.tuning.run_family`: its own Tune experiment, concurrency limiter, ASHA and Optuna searcher), or
:func:`~.group.run_group` for a shared experiment.

Records stay correct with several writers:

* trial records: each family's ``RecordsCallback`` runs in its own actor and writes only
  ``trials/<family>/`` (atomic rewrites);
* the Optuna journal: one file, one study per family, appended by several processes under Optuna's own
  journal lock (``JournalFileBackend``); a torn tail is repaired before the actors start;
* ``run.json``: written only by the driver (``note_family`` before the actors start, ``mark_finished``
  as each actor returns, for each of its families whose records all ended): one writer, so no update is
  lost.

Concurrency caps: :meth:`~.capacity.Capacity.concurrent_caps` (GPU families may each fill the cluster so
one family's ASHA tail is filled by the others' trials; CPU-only families get the CPUs that GPU trials leave
free; ``ray-train`` families share the cluster so their waiting drivers cannot starve each other's workers).

Progress: the actors print nothing of their own (``ProgressCallback`` is silent inside an actor); the
driver polls the records on disk and prints one line over every family whenever a count changes (and every
``--progress-every`` seconds).

Interrupts: on Ctrl-C the driver sends each experiment's actor (a process on its own node) ``SIGUSR1``, the
stop signal ``tune.run`` handles like SIGINT: each Tune run saves its experiment state and returns, as a
sequential search does on Ctrl-C, its unfinished trials' Optuna trials stay RUNNING and ``--resume``
re-runs them. (``ray.cancel`` cannot do this: for a running actor task it only sets a flag, and the
caller sees the task as cancelled at once.) An actor still pre-warming simply ends (nothing is lost). A driver that dies without that (SIGKILL, lost head)
takes its actors with it, as it takes its trials: ``--resume`` restores each unfinished family from its
last experiment snapshot, exactly as after a sequential driver's death.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dvt_search import families
from dvt_search.rundir import RunConfig, RunDir
from dvt_search.rundir.journal import repair_journal
from dvt_search.rundir.status import family_done, live_records, progress_line

from .options import RunError
from .setup import TrialContext
from .tuning import SessionSettings

log = logging.getLogger(__name__)

#: Seconds the driver waits for interrupted families to save their Tune state before it exits.
STOP_WAIT_S = 60.0
#: Seconds the driver waits for the GPU experiments to ask for their trials' placement groups before it
#: starts the CPU-only ones anyway (see :func:`_gpu_groups_asked`).
GPU_FIRST_WAIT_S = 120.0


def _gpu_groups_asked() -> int:
    """Placement groups not removed whose bundles hold a GPU: the GPU trials that asked for their resources.

    Why the CPU-only experiments wait for them: a CPU-only trial's placement group can land on a GPU node
    and take the CPUs a GPU trial needs beside its GPU (Ray avoids GPU nodes for CPU-only tasks, not for
    placement groups), and with actor re-use it keeps them for its family's whole search: that GPU then
    idles (``bench/bench_concurrent.py --trials 8``: one GPU of two idle for the first half). Ray places
    pending groups in the order they were asked for, so GPU trials asked first get their node's CPUs.
    """
    from ray.util import placement_group_table

    return sum(
        1
        for pg in placement_group_table().values()
        if pg.get("state") != "REMOVED"
        and any(b.get("GPU", 0) > 0 for b in (pg.get("bundles") or {}).values())
    )


@ray.remote(num_cpus=0, max_restarts=0)
class FamilySearch:
    """One family's search in its own process (see the module docstring)."""

    def pid(self) -> int:
        """The actor's process id (on the driver's node: the driver signals it on Ctrl-C)."""
        return os.getpid()

    def search(
        self,
        refs: Mapping[str, Mapping[str, Any]],
        caps: Mapping[str, int],
        progress_every_s: float,
        warm_cpus: float,
        reuse_actors: bool = True,
    ) -> list[str]:
        """Pre-warm each family's shared cache when it has one, then run the experiment to its end.

        ``refs``: one family (its own experiment) or several (one shared experiment, :mod:`.group`).
        """
        from dvt_search.search.space import load_snapshot

        from .group import run_group
        from .prewarm import prewarm
        from .tuning import run_family

        contexts = {f: TrialContext.load(ref) for f, ref in refs.items()}  # imports plug-ins, reads run.json
        spaces = {f: load_snapshot(c.run.space_file(f), f) for f, c in contexts.items()}
        for fam, ctx in contexts.items():
            if warm_cpus > 0 and families.get(fam).warms_shared_cache:
                prewarm(ctx, spaces[fam], warm_cpus)
        session = SessionSettings(progress_every_s=progress_every_s, reuse_actors=reuse_actors)
        if len(contexts) > 1:
            run_group(spaces, contexts, caps, session)
        else:
            (fam,) = contexts
            run_family(
                spaces[fam], contexts[fam], dataclasses.replace(session, max_concurrent=int(caps[fam]))
            )
        return sorted(contexts)


@dataclass
class _Progress:
    """The driver's one line over every family, printed when a count changes or every ``every_s``."""

    run: RunDir
    fams: list[str]
    config: RunConfig
    every_s: float
    finished: set[str] = field(default_factory=set)
    _key: tuple = ()
    _last: float = 0.0

    def tick(self, force: bool = False) -> None:
        cfg = self.config
        key = tuple(
            (fam, tuple(sorted(r.status for r in live_records(self.run, fam))), fam in self.finished)
            for fam in self.fams
        )
        now = time.monotonic()
        if force or key != self._key or now - self._last >= self.every_s:
            line = progress_line(
                self.run,
                self.fams,
                total={f: cfg.budget.trials_for(f) for f in self.fams},
                metric=cfg.metric,
                mode=cfg.mode,
                finished=self.finished,
            )
            print(line, flush=True)
            self._key, self._last = key, now


def search_concurrently(
    run: RunDir,
    config: RunConfig,
    spec: Mapping[str, Any] | None,
    experiments: list[tuple[str, ...]],
    caps: Mapping[str, int],
    *,
    shown: list[str],
    finished: set[str],
    progress_every_s: float,
    warm_cpus: float,
    reuse_actors: bool = True,
    gpu_first: Collection[tuple[str, ...]] = (),
) -> list[str]:
    """Search the ``experiments`` at once; returns the families whose search ended with every trial ended.

    Args:
        run: the run directory.
        config: the run's frozen configuration.
        spec: the training partition's data spec (already in ``run.json``).
        experiments: the unfinished families to search, by Tune experiment (:func:`.group.plan`): one
            family, or several sharing one experiment.
        caps: each family's concurrency cap.
        shown: every family of the run (for the progress line).
        finished: families finished before this session.
        progress_every_s: at least one progress line this often.
        warm_cpus: threads of a family's shared-cache pre-warm (0: no pre-warm).
        reuse_actors: whether a family's trial processes may run its next trials (:mod:`.tuning`).
        gpu_first: the experiments whose trials use GPUs: started first, the others once these have asked
            for their trials' placement groups (:func:`_gpu_groups_asked`), at most :data:`GPU_FIRST_WAIT_S`
            later.

    Raises:
        RunError: a family's search failed (the others ran to their end), or the driver was interrupted
            (every family's Tune state saved; ``--resume`` continues).
    """
    from .rundir import mark_finished

    if run.journal.is_file():
        repair_journal(run.journal)  # once, before several processes open it
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actors = {exp: FamilySearch.options(scheduling_strategy=here).remote() for exp in experiments}
    pids = dict(zip(experiments, ray.get([actors[exp].pid.remote() for exp in experiments]), strict=True))
    pending = {}

    def launch(exps: list[tuple[str, ...]]) -> None:
        for exp in exps:
            refs = {fam: TrialContext.derive(run, fam, config, spec).ref() for fam in exp}
            task = actors[exp].search.remote(
                refs, {f: int(caps.get(f, 1)) for f in exp}, progress_every_s, warm_cpus, reuse_actors
            )
            pending[task] = exp

    gpu = set(gpu_first)
    first = [e for e in experiments if e in gpu]
    later = [e for e in experiments if e not in gpu]
    launch(first if first else later)
    later = later if first else []
    deadline = time.monotonic() + GPU_FIRST_WAIT_S
    progress = _Progress(run, shown, config, progress_every_s, set(finished))
    done, failed = [], {}
    try:
        while pending or later:
            if later and (
                time.monotonic() > deadline
                or not any(e in first for e in pending.values())
                or _gpu_groups_asked() > 0
            ):
                launch(later)
                later = []
            if not pending:
                continue
            ready, _ = ray.wait(
                list(pending), num_returns=1, timeout=0.5 if later else min(2.0, progress_every_s)
            )
            for ref in ready:
                exp = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - one experiment's failure must not end the others
                    why = str(exc).strip().splitlines()[-1][:500] if str(exc).strip() else repr(exc)
                    for fam in exp:
                        failed[fam] = why
                        print(f"[{fam}] search failed: {why}", flush=True)
                    continue
                for fam in exp:
                    if fam in progress.finished:  # a member of a shared experiment finished before
                        continue
                    if family_done(run, fam, config.budget.trials_for(fam)):
                        mark_finished(run, fam)
                        progress.finished.add(fam)
                        done.append(fam)
                    else:
                        failed[fam] = "the search ended before every trial ended"
                        print(
                            f"[{fam}] search ended with unfinished trials; --resume continues it", flush=True
                        )
            progress.tick()
    except KeyboardInterrupt:
        print("interrupted: every family saves its Tune state (Ctrl-C again to skip)", flush=True)
        for exp in pending.values():  # Tune's own stop signal (what Ctrl-C does to a sequential search)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[exp], signal.SIGUSR1)
        with contextlib.suppress(KeyboardInterrupt):
            ray.wait(list(pending), num_returns=len(pending), timeout=STOP_WAIT_S)
        raise RunError(
            f"interrupted; continue the run with --resume --name {run.path.name} (finished: "
            f"{', '.join(sorted(progress.finished)) or 'none'})"
        ) from None
    finally:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
    progress.tick(force=True)
    if failed:
        what = "; ".join(f"{fam}: {why}" for fam, why in failed.items())
        raise RunError(
            f"{len(failed)} famil{'y' if len(failed) == 1 else 'ies'} did not finish ({what}); the other "
            f"families' results are kept: continue with --resume --name {run.path.name}"
        )
    return done


__all__ = ["FamilySearch", "search_concurrently"]

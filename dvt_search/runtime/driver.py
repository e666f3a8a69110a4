"""The search driver: connect, check every family's trials fit the cluster (what it can become: see
:mod:`.capacity`), prepare (or verify, on ``--resume``) the run directory, then search the families: all at once by default (:mod:`.concurrent`: one Tune experiment per family, or one the
GPU families share (:mod:`.group`), each in its own Ray actor), or one after another in this process (``--families-sequential``, and always for a
single family).

A resume searches the snapshotted spaces (a later edit of ``search_spaces/`` cannot mix into a running
study), skips families already finished and restores the others with their Optuna studies. See
:mod:`.rundir` for the files a run writes and the checks a resume makes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from dvt_search import families
from dvt_search.rundir import RunDir
from dvt_search.rundir.status import family_done
from dvt_search.search.space import load_snapshot

from .capacity import discover
from .cluster import check_shared_storage, connect
from .group import plan as plan_experiments
from .group import run_group
from .options import RunError, SearchOptions, resolve_families, run_config
from .packing import check_auto, plan_gpus
from .rundir import (
    best_trials,
    check_resume,
    mark_finished,
    note_family,
    prepare_fresh,
    refuse_existing,
    run_path,
)
from .setup import TrialContext, datasets, import_plugins, trial_needs
from .tuning import SessionSettings, run_family, scheduler_name

__all__ = ["RunError", "SearchOptions", "run_search"]

log = logging.getLogger(__name__)


def run_search(opts: SearchOptions) -> dict[str, Any]:
    """Run (or resume) a search; returns the best trial record per family."""
    from dvt_search.data.dataset import spec_for
    from dvt_search.data.schema import read_manifest

    import_plugins(opts.plugins)
    rd = RunDir(run_path(opts))
    df = read_manifest(opts.manifest)
    if opts.resume:
        info = check_resume(rd, opts, df)
        import_plugins(info.config.plugins)
        config = info.config
    else:
        refuse_existing(rd)
        config = run_config(opts, resolve_families(opts.families))
    ray_info = connect(
        opts.address,
        dashboard_host=opts.dashboard_host,
        include_dashboard=opts.include_dashboard,
    )
    # Feasibility before anything is written: a trial no node type can hold fails here, not mid-run.
    capacity = discover(opts.autoscaling_config, joined=opts.address is not None)
    check_auto(config, capacity)
    for fam in config.families:
        capacity.check(fam, trial_needs(families.get(fam), config))
    if capacity.autoscaling:
        print(f"cluster capacity from {capacity.source}", flush=True)
    if opts.resume:
        print(f"resuming run {rd.path}", flush=True)
    else:
        info = prepare_fresh(rd, opts, df, list(config.families))
        print(f"run directory {rd.path}", flush=True)
    cfg = info.config
    fams = list(cfg.families)
    rd.ensure_storage_marker()  # every trial checks it reads this token before it trains (.storage)
    spaces = {f: load_snapshot(rd.space_file(f), f) for f in fams}
    if ray_info.dashboard_url:
        print(
            f"Ray dashboard: {ray_info.dashboard_url} (auth: {ray_info.auth}; `ray get-auth-token` prints the token)"
        )
    print(f"Optuna dashboard: optuna-dashboard {rd.journal}", flush=True)
    if ray_info.nodes > 1:
        check_shared_storage(rd.storage_probe())
    if not info.state.spec:  # computed once per run (pos/vein fractions of the training partition)
        train = datasets(TrialContext.derive(rd, fams[0], cfg, None))["train"]
        info.state.spec = spec_for(train, seed=cfg.seed).to_dict()
        rd.write_info(info)
    spec = info.state.spec
    finished = set(info.state.finished_families)
    for fam in fams:
        if fam in finished:
            print(f"[{fam}] already finished; skipped", flush=True)
    todo = [f for f in fams if f not in finished]
    needs = {f: TrialContext.derive(rd, f, cfg, spec).needs for f in todo}
    # --gpus-per-trial auto: GPU memory measured once per run; caps count the smallest measured share
    packed = {}
    for f in todo:
        plan = plan_gpus(TrialContext.derive(rd, f, cfg, spec), spaces[f], capacity)
        packed[f] = dataclasses.replace(needs[f], gpus=plan.smallest) if plan is not None else needs[f]
    together = len(todo) > 1 and not opts.families_sequential
    if opts.max_concurrent:
        caps = {f: int(opts.max_concurrent) for f in todo}
    elif together:
        caps = capacity.concurrent_caps(packed)
    else:
        caps = {f: capacity.max_concurrent(n) for f, n in packed.items()}
    for fam in todo:
        note_family(rd, fam, needs[fam], caps[fam], scheduler_name(cfg.scheduler, needs[fam].budget))
        print(
            f"[{fam}] searching {cfg.budget.trials_for(fam)} trials, up to {needs[fam].budget} epoch(s) each, "
            f"{caps[fam]} at a time ({needs[fam].trainer})",
            flush=True,
        )
    warm_cpus = capacity.largest("CPU") if cfg.sift_cache else 0.0
    if together and cfg.sift_cache:  # the pre-warm runs beside GPU trials: only on CPUs they leave free
        warm_cpus = capacity.beside_gpu_trials(packed).largest("CPU") or warm_cpus
    session = SessionSettings(progress_every_s=opts.progress_every_s, reuse_actors=opts.reuse_actors)
    experiments = plan_experiments(rd, todo, needs, session, together=together)
    for exp in experiments:
        if len(exp) > 1:
            print(
                f"[{'+'.join(exp)}] one Tune experiment: a trial's process runs the next trial of any of these "
                "families",
                flush=True,
            )
    if together:
        from .concurrent import search_concurrently

        print(f"searching {len(todo)} families at once: {', '.join(todo)}", flush=True)
        search_concurrently(
            rd, cfg, spec, experiments, caps, shown=fams, finished=finished,
            progress_every_s=opts.progress_every_s, warm_cpus=warm_cpus, reuse_actors=opts.reuse_actors,
            gpu_first=[e for e in experiments if any(packed[f].gpus > 0 for f in e if f in packed)],
        )  # fmt: skip
    else:
        _search_in_turn(rd, cfg, spec, experiments, caps, spaces, session, warm_cpus)
    best = best_trials(rd, fams, cfg.metric)
    for fam, rec in best.items():
        if rec is None:
            print(f"best {fam}: no trial finished with a {cfg.metric}")
        else:
            print(
                f"best {fam}: trial {rec.trial_id} {cfg.metric} {rec.best[cfg.metric]:.4f} at epoch {rec.best_epoch} "
                f"({rec.status}) params {rec.params}"
            )
    return best


def _search_in_turn(
    rd: RunDir,
    cfg: Any,
    spec: dict[str, Any] | None,
    experiments: list[tuple[str, ...]],
    caps: dict[str, int],
    spaces: dict[str, Any],
    session: SessionSettings,
    warm_cpus: float,
) -> None:
    """The experiments one after another, each in this process (``--families-sequential``, or one family).

    Families searched in turn form no shared experiment; one left by an interrupted concurrent session is
    resumed whole (:func:`.group.plan`).
    """
    if warm_cpus > 0:  # families that share a cache between their trials fill it once, up front
        from .prewarm import prewarm

        for fam in (f for exp in experiments for f in exp):
            if families.get(fam).warms_shared_cache:
                prewarm(TrialContext.derive(rd, fam, cfg, spec), spaces[fam], warm_cpus)
    for exp in experiments:
        contexts = {fam: TrialContext.derive(rd, fam, cfg, spec) for fam in exp}
        if len(exp) > 1:
            run_group({f: spaces[f] for f in exp}, contexts, caps, session)
        else:
            (fam,) = exp
            run_family(spaces[fam], contexts[fam], dataclasses.replace(session, max_concurrent=caps[fam]))
        finished = set(rd.read_info().state.finished_families)  # once per experiment, not per family
        for fam in (f for f in exp if f not in finished):
            if family_done(rd, fam, cfg.budget.trials_for(fam)):
                mark_finished(rd, fam)
            else:  # Ctrl-C: Tune saved its state and returned early
                raise RunError(
                    f"[{fam}] interrupted before every trial ended; continue with --resume --name {rd.path.name}"
                )

"""The search driver: connect, check every family's trials fit the cluster (what it can become: see
:mod:`.capacity`), prepare (or verify, on ``--resume``) the run directory, then search each family in turn.

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
from dvt_search.search.space import load_snapshot

from .capacity import discover
from .cluster import check_shared_storage, connect
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
    if cfg.sift_cache:  # families that share a cache between their trials fill it once, up front
        from .prewarm import prewarm

        for fam in fams:
            if fam not in finished and families.get(fam).warms_shared_cache:
                prewarm(TrialContext.derive(rd, fam, cfg, spec), spaces[fam], capacity.largest("CPU"))
    for fam in fams:
        if fam in finished:
            print(f"[{fam}] already finished; skipped", flush=True)
            continue
        ctx = TrialContext.derive(rd, fam, cfg, spec)
        needs = ctx.needs
        gpus = plan_gpus(ctx, spaces[fam], capacity)  # --gpus-per-trial auto: measured once per run
        packed = dataclasses.replace(needs, gpus=gpus.smallest) if gpus is not None else needs
        session = SessionSettings(
            max_concurrent=opts.max_concurrent or capacity.max_concurrent(packed),
            progress_every_s=opts.progress_every_s,
        )
        note_family(rd, fam, needs, session.max_concurrent, scheduler_name(cfg.scheduler, needs.budget))
        print(
            f"[{fam}] searching {cfg.budget.trials_for(fam)} trials, up to {needs.budget} epoch(s) each, "
            f"{session.max_concurrent} at a time ({needs.trainer})",
            flush=True,
        )
        run_family(spaces[fam], ctx, session, gpus)
        mark_finished(rd, fam)
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

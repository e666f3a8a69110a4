"""The search driver: prepare (or verify, on ``--resume``) the run directory, then search each family in turn.

A resume searches the snapshotted spaces (a later edit of ``search_spaces/`` cannot mix into a running
study), skips families already finished and restores the others with their Optuna studies. See
:mod:`.rundir` for the files a run writes and the checks a resume makes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from dvt_search import families
from dvt_search.rundir.layout import RunDir
from dvt_search.search.space import load_snapshot

from .cluster import check_shared_storage, connect, max_concurrent
from .options import RunError, SearchOptions, resolve_families, resolve_trainer
from .rundir import (
    SPLITS_FILE,
    best_trials,
    check_resume,
    mark_finished,
    note_family,
    options_of,
    prepare_fresh,
    run_path,
)
from .setup import TrialSetup, datasets, import_plugins
from .tuning import JOURNAL_FILE, METRIC, TuneSettings, reserved, run_family

__all__ = ["RunError", "SearchOptions", "run_search"]

log = logging.getLogger(__name__)


def _setup(opts: SearchOptions, fam: str, run_dir: Path, spec: dict[str, Any]) -> TrialSetup:
    family = families.get(fam)
    return TrialSetup(
        family=fam,
        kind=family.kind,
        manifest=str(Path(opts.manifest).resolve()),
        splits=str(run_dir / SPLITS_FILE),
        size=opts.size,
        windows=[list(map(float, w)) for w in opts.windows],
        seed=opts.seed,
        budget=opts.max_epochs if family.kind == "torch" else 1,
        spec=spec,
        augment=dict(opts.augment),
        cache_dir=str(run_dir / "cache"),
        use_cache=opts.sift_cache,
        trainer=resolve_trainer(opts) if family.kind == "torch" else "direct",
        workers=opts.train_workers if family.kind == "torch" else 1,
        cpus=opts.cpus_per_trial,
        gpus=opts.gpus_per_trial if family.kind == "torch" else 0.0,
        loader_workers=opts.loader_workers,
        train_storage=str(run_dir / "train" / fam),
        keep_checkpoints=opts.keep_checkpoints,
        plugins=list(opts.plugins),
        run_dir=str(run_dir),
    )


def run_search(opts: SearchOptions) -> dict[str, Any]:
    """Run (or resume) a search; returns the best trial record per family."""
    from dvt_search.data.dataset import spec_for
    from dvt_search.data.schema import read_manifest

    import_plugins(opts.plugins)
    rd = RunDir(run_path(opts))
    df = read_manifest(opts.manifest)
    if opts.resume:
        info = check_resume(rd, opts, df)
        import_plugins(list(info.config.get("plugins", [])))
        opts = options_of(info, opts)
        print(f"resuming run {rd.path}", flush=True)
    else:
        opts = replace(opts, trials=opts.trials or 10, max_epochs=opts.max_epochs or 10)
        info = prepare_fresh(rd, opts, df, resolve_families(opts.families))
        print(f"run directory {rd.path}", flush=True)
    fams = list(info.families)
    spaces = {f: load_snapshot(rd.path, f) for f in fams}
    ray_info = connect(
        opts.address,
        dashboard_host=opts.dashboard_host,
        include_dashboard=opts.include_dashboard,
    )
    if ray_info.dashboard_url:
        print(
            f"Ray dashboard: {ray_info.dashboard_url} (auth: {ray_info.auth}; `ray get-auth-token` prints the token)"
        )
    print(f"Optuna dashboard: optuna-dashboard {rd.path / JOURNAL_FILE}", flush=True)
    if ray_info.nodes > 1:
        check_shared_storage(rd.path)
    spec = info.config.get("spec")
    if not spec:  # computed once per run (pos/vein fractions of the training partition)
        spec = spec_for(datasets(_setup(opts, fams[0], rd.path, {}))["train"], seed=opts.seed).to_dict()
        info.config["spec"] = spec
        rd.write_info(info)
    finished = set(info.config.get("finished_families", []))
    if "sift_bow_svm" in fams and "sift_bow_svm" not in finished and opts.sift_cache:
        from .prewarm import prewarm_sift

        prewarm_sift(_setup(opts, "sift_bow_svm", rd.path, spec), spaces["sift_bow_svm"], ray_info.cpus)
    for fam in fams:
        if fam in finished:
            print(f"[{fam}] already finished; skipped", flush=True)
            continue
        setup = _setup(opts, fam, rd.path, spec)
        cpus, gpus = reserved(setup)
        settings = TuneSettings(
            trials=opts.trials,
            max_failures=opts.max_failures,
            grace_period=opts.grace_period,
            reduction_factor=opts.reduction_factor,
            scheduler=opts.scheduler,
            sampler=opts.sampler,
            startup_trials=opts.startup_trials,
            seed=opts.seed,
            max_concurrent=opts.max_concurrent or max_concurrent(ray_info, cpus=cpus, gpus=gpus),
            progress_every_s=opts.progress_every_s,
        )
        note_family(rd, fam, setup, settings)
        print(
            f"[{fam}] searching {opts.trials} trials, up to {setup.budget} epoch(s) each, "
            f"{settings.max_concurrent} at a time ({setup.trainer})",
            flush=True,
        )
        run_family(rd.path, spaces[fam], setup, settings)
        mark_finished(rd, fam)
    best = best_trials(rd, fams)
    for fam, rec in best.items():
        if rec is None:
            print(f"best {fam}: no trial finished with a {METRIC}")
        else:
            print(
                f"best {fam}: trial {rec.trial_id} {METRIC} {rec.best[METRIC]:.4f} at epoch {rec.best_epoch} "
                f"({rec.status}) params {rec.params}"
            )
    return best

"""The run directory's lifecycle: a fresh run's files, resume checks, per-family bookkeeping, best trials.

A fresh run writes, before any trial starts: ``run.json`` (the resolved configuration, with library
versions), ``splits.json`` (a copy of the given splits, or new seeded splits when none were given) and a
snapshot of every family's search space. A resume is refused when the manifest or the splits changed
since the run began, or when ``--trials`` / ``--max-epochs`` contradict the run; otherwise the run's own
settings replace the command line's search-defining flags.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvt_search.rundir.layout import RunDir, RunInfo
from dvt_search.search.space import load_family_space, write_snapshot

from .options import RunError, SearchOptions, resolve_trainer
from .setup import TrialSetup
from .tuning import JOURNAL_FILE, METRIC, MODE, TuneSettings

SPLITS_FILE = "splits.json"


def versions() -> dict[str, str]:
    import optuna
    import ray
    import torch

    from dvt_search import __version__

    return {
        "dvt_search": __version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "torch": torch.__version__,
    }


def run_path(opts: SearchOptions) -> Path:
    storage = Path(opts.storage).expanduser().resolve()
    if opts.name:
        return storage / opts.name
    if opts.resume:
        runs = sorted((p for p in storage.glob("*/run.json")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RunError(f"--resume: no run directory (with run.json) under {storage}; pass --name")
        return runs[-1].parent
    return storage / datetime.now().strftime("search-%Y%m%d-%H%M%S")


def prepare_fresh(rd: RunDir, opts: SearchOptions, df: Any, fams: list[str]) -> RunInfo:
    from dvt_search.data.splits import load_splits, make_splits, manifest_fingerprint

    if (rd.path / "run.json").exists():
        raise RunError(f"{rd.path} already holds a run; use --resume to continue it or pick another --name")
    trainer = resolve_trainer(opts)
    spaces = {f: load_family_space(opts.space_dir, f) for f in fams}  # validate everything before starting
    rd.path.mkdir(parents=True, exist_ok=True)
    target = rd.path / SPLITS_FILE
    if opts.splits is None:
        splits = make_splits(df, seed=opts.seed)
        splits.save(target)
        print(f"no --splits given: created seeded splits (seed {opts.seed}) at {target}", flush=True)
    else:
        splits = load_splits(opts.splits, manifest_df=df)
        shutil.copyfile(opts.splits, target)
    for space in spaces.values():
        write_snapshot(space, rd.path)
    info = RunInfo(
        run_name=rd.path.name,
        families=fams,
        trials_per_family=opts.trials,
        max_epochs=opts.max_epochs,
        metric=METRIC,
        mode=MODE,
        manifest=str(Path(opts.manifest).resolve()),
        manifest_fingerprint=manifest_fingerprint(df),
        splits_hash=splits.hash,
        seed=opts.seed,
        image_size=opts.size,
        windows=[list(map(float, w)) for w in opts.windows],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config={
            "scheduler": {
                "type": opts.scheduler,
                "time_attr": "epoch",
                "grace_period": opts.grace_period,
                "reduction_factor": opts.reduction_factor,
            },
            "searcher": {
                "library": "optuna",
                "sampler": opts.sampler,
                "startup_trials": opts.startup_trials,
                "multivariate": True,
                "seed": opts.seed,
                "journal": JOURNAL_FILE,
                "scheduler_stopped_trials": "PRUNED",
            },
            "resources": {
                "cpus_per_trial": opts.cpus_per_trial,
                "gpus_per_trial": opts.gpus_per_trial,
                "train_workers": opts.train_workers,
                "trainer": trainer,
                "loader_workers": opts.loader_workers,
            },
            "max_failures": opts.max_failures,
            "keep_checkpoints": opts.keep_checkpoints,
            "augment": opts.augment,
            "sift_cache": opts.sift_cache,
            "plugins": opts.plugins,
            "splits_created": opts.splits is None,
            "splits_source": str(opts.splits) if opts.splits else None,
            "versions": versions(),
            "finished_families": [],
        },
    )
    rd.write_info(info)
    return info


def check_resume(rd: RunDir, opts: SearchOptions, df: Any) -> RunInfo:
    from dvt_search.data.splits import SplitsError, load_splits, manifest_fingerprint

    info = rd.read_info()
    if manifest_fingerprint(df) != info.manifest_fingerprint:
        raise RunError(
            f"refusing to resume {rd.path}: manifest {opts.manifest} differs from the one the run started with "
            f"({info.manifest}); start a new run"
        )
    try:
        splits = load_splits(rd.path / SPLITS_FILE, manifest_df=df)
    except SplitsError as exc:
        raise RunError(f"refusing to resume {rd.path}: {exc}") from None
    if splits.hash != info.splits_hash:
        raise RunError(f"refusing to resume {rd.path}: {SPLITS_FILE} changed since the run started")
    if opts.splits is not None and load_splits(opts.splits).hash != info.splits_hash:
        raise RunError(f"refusing to resume {rd.path}: --splits {opts.splits} is not the run's splits")
    for flag, asked, have in (
        ("--trials", opts.trials, info.trials_per_family),
        ("--max-epochs", opts.max_epochs, info.max_epochs),
    ):
        if asked is not None and asked != have:
            raise RunError(f"refusing to resume {rd.path}: {flag} {asked} differs from the run's {have}")
    return info


def options_of(info: RunInfo, opts: SearchOptions) -> SearchOptions:
    """On resume: the run's own settings win over the command line's search-defining flags."""
    c = info.config
    res = c["resources"]
    return replace(
        opts,
        families=list(info.families),
        trials=info.trials_per_family,
        max_epochs=info.max_epochs,
        seed=info.seed,
        size=info.image_size,
        windows=info.windows,
        augment=c.get("augment", {}),
        cpus_per_trial=res["cpus_per_trial"],
        gpus_per_trial=res["gpus_per_trial"],
        train_workers=res["train_workers"],
        trainer=res["trainer"],
        loader_workers=res.get("loader_workers", 0),
        grace_period=c["scheduler"]["grace_period"],
        reduction_factor=c["scheduler"]["reduction_factor"],
        scheduler=c["scheduler"]["type"],
        sampler=c["searcher"]["sampler"],
        startup_trials=c["searcher"].get("startup_trials", 10),
        max_failures=c["max_failures"],
        keep_checkpoints=c["keep_checkpoints"],
        sift_cache=c.get("sift_cache", True),
        plugins=list(c.get("plugins", [])),
    )


def note_family(rd: RunDir, fam: str, setup: TrialSetup, settings: TuneSettings) -> None:
    """Record in ``run.json`` how the family's trials were run (budget, trainer, concurrency)."""
    info = rd.read_info()
    info.config.setdefault("family_runs", {})[fam] = {
        "budget_epochs": setup.budget,
        "trainer": setup.trainer,
        "workers": setup.workers,
        "max_concurrent": settings.max_concurrent,
        "scheduler": "fifo" if setup.budget <= 1 else settings.scheduler,
    }
    rd.write_info(info)


def mark_finished(rd: RunDir, fam: str) -> None:
    info = rd.read_info()
    done = info.config.setdefault("finished_families", [])
    if fam not in done:
        done.append(fam)
    rd.write_info(info)


def best_trials(rd: RunDir, fams: list[str]) -> dict[str, Any]:
    """The best finished trial per family by the run metric (``None`` where no trial has a value)."""
    out: dict[str, Any] = {}
    for fam in fams:
        ranked = [r for r in rd.trials(fam) if r.status in ("completed", "stopped") and METRIC in r.best]
        out[fam] = max(ranked, key=lambda r: (r.status == "completed", r.best[METRIC]), default=None)
    return out

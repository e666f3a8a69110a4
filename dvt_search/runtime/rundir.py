"""The run directory's lifecycle: a fresh run's files, resume checks, per-family bookkeeping, best trials.

A fresh run writes, before any trial starts: ``run.json`` (identity, the frozen
:class:`~dvt_search.rundir.config.RunConfig`, library versions), ``splits.json`` (a copy of the given
splits, or new seeded splits when none were given) and a snapshot of every family's search space. A resume
is refused when the manifest or the splits changed since the run began, or when ``--trials`` /
``--max-epochs`` / ``--budget`` contradict the run; otherwise the run's own saved config is used as it is (the command
line's search-defining flags are not read). Every path comes from :class:`~dvt_search.rundir.RunDir`.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvt_search.families.base import TrialNeeds
from dvt_search.rundir import RunDir, RunInfo, latest_run
from dvt_search.search.space import load_family_space, write_snapshot

from .options import RunError, SearchOptions, merge_budgets, run_config


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
        newest = latest_run(storage)
        if newest is None:
            raise RunError(f"--resume: no run directory (with run.json) under {storage}; pass --name")
        return newest
    return storage / datetime.now().strftime("search-%Y%m%d-%H%M%S")


def refuse_existing(rd: RunDir) -> None:
    """A fresh run never writes into an existing run's directory."""
    if rd.exists():
        raise RunError(f"{rd.path} already holds a run; use --resume to continue it or pick another --name")


def prepare_fresh(rd: RunDir, opts: SearchOptions, df: Any, fams: list[str]) -> RunInfo:
    from dvt_search.data.splits import load_splits, make_splits, manifest_fingerprint

    refuse_existing(rd)
    config = run_config(opts, fams)  # validates the trainer choice
    spaces = {f: load_family_space(opts.space_dir, f) for f in fams}  # validate everything before starting
    rd.path.mkdir(parents=True, exist_ok=True)
    target = rd.splits_file
    if opts.splits is None:
        splits = make_splits(df, seed=opts.seed)
        splits.save(target)
        print(f"no --splits given: created seeded splits (seed {opts.seed}) at {target}", flush=True)
    else:
        splits = load_splits(opts.splits, manifest_df=df)
        shutil.copyfile(opts.splits, target)
    for space in spaces.values():
        write_snapshot(space, rd.space_file(space.family))
    info = RunInfo(
        run_name=rd.path.name,
        config=config,
        manifest_fingerprint=manifest_fingerprint(df),
        splits_hash=splits.hash,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
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
        splits = load_splits(rd.splits_file, manifest_df=df)
    except SplitsError as exc:
        raise RunError(f"refusing to resume {rd.path}: {exc}") from None
    if splits.hash != info.splits_hash:
        raise RunError(f"refusing to resume {rd.path}: {rd.splits_file.name} changed since the run started")
    if opts.splits is not None and load_splits(opts.splits).hash != info.splits_hash:
        raise RunError(f"refusing to resume {rd.path}: --splits {opts.splits} is not the run's splits")
    for flag, asked, have in (
        ("--trials", opts.trials, info.trials_per_family),
        ("--max-epochs", opts.max_epochs, info.max_epochs),
    ):
        if asked is not None and asked != have:
            raise RunError(f"refusing to resume {rd.path}: {flag} {asked} differs from the run's {have}")
    check_resume_budget(rd, opts, info)
    return info


def check_resume_budget(rd: RunDir, opts: SearchOptions, info: RunInfo) -> None:
    """Refuse a ``--budget`` on ``--resume`` that contradicts the run's per-family trials or epochs."""
    budget = info.config.budget
    for fam, (trials, epochs) in merge_budgets(opts.budget).items():
        if fam not in info.config.families:
            raise RunError(
                f"refusing to resume {rd.path}: --budget names {fam!r}, which the run does not search"
            )
        for what, asked, have in (
            ("trials", trials, budget.trials_for(fam)),
            ("epochs", epochs, budget.epochs_for(fam)),
        ):
            if asked is not None and asked != have:
                raise RunError(
                    f"refusing to resume {rd.path}: --budget {fam} {what} {asked} differs from the run's {have}"
                )


def note_family(rd: RunDir, fam: str, needs: TrialNeeds, max_concurrent: int, scheduler: str) -> None:
    """Record in ``run.json`` how the family's trials were run (budget, trainer, concurrency)."""
    info = rd.read_info()
    info.state.family_runs[fam] = {
        "budget_epochs": needs.budget,
        "trainer": needs.trainer,
        "workers": needs.workers,
        "max_concurrent": max_concurrent,
        "scheduler": scheduler,
    }
    rd.write_info(info)


def mark_finished(rd: RunDir, fam: str) -> None:
    """Record ``fam`` as finished; the list keeps the run's family order, whatever order they finished in."""
    info = rd.read_info()
    done = set(info.state.finished_families) | {fam}
    order = list(info.config.families)
    info.state.finished_families = [f for f in order if f in done] + sorted(done - set(order))
    rd.write_info(info)


def best_trials(rd: RunDir, fams: list[str], metric: str) -> dict[str, Any]:
    """The best finished trial per family by the run metric (``None`` where no trial has a value)."""
    out: dict[str, Any] = {}
    for fam in fams:
        ranked = [r for r in rd.trials(fam) if r.final and metric in r.best]
        out[fam] = max(ranked, key=lambda r: (r.status == "completed", r.best[metric]), default=None)
    return out

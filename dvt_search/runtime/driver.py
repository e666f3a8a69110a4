"""The search driver: prepare (or verify, on ``--resume``) a run directory, then search each family in turn.

A fresh run writes, before any trial starts: ``run.json`` (the resolved configuration, with library
versions), ``splits.json`` (a copy of the given splits, or new seeded splits when none were given) and a
snapshot of every family's search space. The splits are checked against the manifest (fingerprint) and a
resume is refused when the manifest or the splits changed since the run began. A resume searches the
snapshotted spaces (a later edit of ``search_spaces/`` cannot mix into a running study), skips families
already finished and restores the others with their Optuna studies.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dvt_search import families
from dvt_search.search.records import RunDir, RunInfo
from dvt_search.search.space import load_family_space, load_snapshot, write_snapshot

from .cluster import check_shared_storage, connect, max_concurrent
from .setup import TRAINERS, TrialSetup, datasets, import_plugins
from .tuning import JOURNAL_FILE, METRIC, MODE, TuneSettings, reserved, run_family

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"


class RunError(RuntimeError):
    """The run cannot start or resume (the message says why and what to do)."""


@dataclass
class SearchOptions:
    """Everything ``dvt-search search`` takes (see ``dvt-search search --help``)."""

    manifest: Path
    storage: Path
    families: list[str] = field(default_factory=lambda: ["all"])
    trials: int | None = None  # None: 10 for a new run, the run's own on --resume
    max_epochs: int | None = None
    splits: Path | None = None
    name: str | None = None
    resume: bool = False
    address: str | None = None
    size: int = 512
    windows: list[list[float]] = field(default_factory=lambda: [[40.0, 400.0]])
    augment: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    train_workers: int = 1
    trainer: str = "auto"
    loader_workers: int = 0
    grace_period: int = 1
    reduction_factor: float = 3.0
    scheduler: str = "asha"
    sampler: str = "tpe"
    startup_trials: int = 10
    max_failures: int = 2
    keep_checkpoints: int = 2
    max_concurrent: int | None = None
    seed: int = 0
    space_dir: Path = Path("search_spaces")
    sift_cache: bool = True
    plugins: list[str] = field(default_factory=list)
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = True
    progress_every_s: float = 30.0


def resolve_families(spec: list[str]) -> list[str]:
    """``["all"]`` or names (comma lists allowed) → registered family names, in registry order."""
    names = [n.strip() for item in spec for n in item.split(",") if n.strip()]
    if not names or names == ["all"]:
        return families.names()
    for n in names:
        families.get(n)  # raises KeyError listing the known names
    return list(dict.fromkeys(names))


def resolve_trainer(opts: SearchOptions) -> str:
    """``auto`` → ``ray-train`` with several workers or GPUs, else ``direct``."""
    if opts.trainer not in TRAINERS:
        raise RunError(f"--trainer must be one of {TRAINERS}, got {opts.trainer!r}")
    if opts.trainer == "direct" and opts.train_workers > 1:
        raise RunError(
            "--trainer direct runs one process per trial; use --trainer ray-train for --train-workers > 1"
        )
    if opts.trainer != "auto":
        return opts.trainer
    return "ray-train" if opts.train_workers > 1 or opts.gpus_per_trial > 0 else "direct"


def _versions() -> dict[str, str]:
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


def _run_path(opts: SearchOptions) -> Path:
    storage = Path(opts.storage).expanduser().resolve()
    if opts.name:
        return storage / opts.name
    if opts.resume:
        runs = sorted((p for p in storage.glob("*/run.json")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RunError(f"--resume: no run directory (with run.json) under {storage}; pass --name")
        return runs[-1].parent
    return storage / datetime.now().strftime("search-%Y%m%d-%H%M%S")


def _prepare_fresh(rd: RunDir, opts: SearchOptions, df: Any, fams: list[str]) -> RunInfo:
    from dvt_search.data.splits import load_splits, make_splits, manifest_fingerprint

    if (rd.path / "run.json").exists():
        raise RunError(f"{rd.path} already holds a run; use --resume to continue it or pick another --name")
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
    trainer = resolve_trainer(opts)
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
            "versions": _versions(),
            "finished_families": [],
        },
    )
    rd.write_info(info)
    return info


def _check_resume(rd: RunDir, opts: SearchOptions, df: Any) -> RunInfo:
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


def _options_of(info: RunInfo, opts: SearchOptions) -> SearchOptions:
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


def _setup(opts: SearchOptions, fam: str, run_path: Path, spec: dict[str, Any]) -> TrialSetup:
    family = families.get(fam)
    return TrialSetup(
        family=fam,
        kind=family.kind,
        manifest=str(Path(opts.manifest).resolve()),
        splits=str(run_path / SPLITS_FILE),
        size=opts.size,
        windows=[list(map(float, w)) for w in opts.windows],
        seed=opts.seed,
        budget=opts.max_epochs if family.kind == "torch" else 1,
        spec=spec,
        augment=dict(opts.augment),
        cache_dir=str(run_path / "cache"),
        use_cache=opts.sift_cache,
        trainer=resolve_trainer(opts) if family.kind == "torch" else "direct",
        workers=opts.train_workers if family.kind == "torch" else 1,
        cpus=opts.cpus_per_trial,
        gpus=opts.gpus_per_trial if family.kind == "torch" else 0.0,
        loader_workers=opts.loader_workers,
        train_storage=str(run_path / "train" / fam),
        keep_checkpoints=opts.keep_checkpoints,
        plugins=list(opts.plugins),
    )


def _note_family(rd: RunDir, fam: str, setup: TrialSetup, settings: TuneSettings) -> None:
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


def _mark_finished(rd: RunDir, fam: str) -> None:
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


def run_search(opts: SearchOptions) -> dict[str, Any]:
    """Run (or resume) a search; returns the best trial record per family."""
    from dvt_search.data.dataset import spec_for
    from dvt_search.data.schema import read_manifest

    import_plugins(opts.plugins)
    rd = RunDir(_run_path(opts))
    df = read_manifest(opts.manifest)
    if opts.resume:
        info = _check_resume(rd, opts, df)
        import_plugins(list(info.config.get("plugins", [])))
        opts = _options_of(info, opts)
        print(f"resuming run {rd.path}", flush=True)
    else:
        opts = replace(opts, trials=opts.trials or 10, max_epochs=opts.max_epochs or 10)
        info = _prepare_fresh(rd, opts, df, resolve_families(opts.families))
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
            keep_checkpoints=opts.keep_checkpoints,
            grace_period=opts.grace_period,
            reduction_factor=opts.reduction_factor,
            scheduler=opts.scheduler,
            sampler=opts.sampler,
            startup_trials=opts.startup_trials,
            seed=opts.seed,
            max_concurrent=opts.max_concurrent or max_concurrent(ray_info, cpus=cpus, gpus=gpus),
            progress_every_s=opts.progress_every_s,
        )
        _note_family(rd, fam, setup, settings)
        print(
            f"[{fam}] searching {opts.trials} trials, up to {setup.budget} epoch(s) each, "
            f"{settings.max_concurrent} at a time ({setup.trainer})",
            flush=True,
        )
        run_family(rd.path, spaces[fam], setup, settings)
        _mark_finished(rd, fam)
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

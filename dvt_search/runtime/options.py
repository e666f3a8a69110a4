"""The options of ``dvt-search search`` and their resolution into the run's config (plain data, no Ray).

:class:`SearchOptions` is what one invocation asked for: its field names are the command line's
destinations, so the CLI fills it in one step. A fresh run turns it into the frozen
:class:`~dvt_search.rundir.config.RunConfig` once (:func:`run_config`); a resumed run never does: it
reloads the config from ``run.json`` and uses the options only for what belongs to this session (where to
connect, the dashboard, progress lines, a concurrency cap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvt_search import families
from dvt_search.data.spec import InputSpec
from dvt_search.rundir.config import (
    BudgetConfig,
    DataConfig,
    ResourceConfig,
    RunConfig,
    SchedulerConfig,
    SearcherConfig,
)

TRAINERS = ("auto", "direct", "ray-train")
DEFAULT_TRIALS = 10
DEFAULT_MAX_EPOCHS = 10


class RunError(RuntimeError):
    """The run cannot start or resume (the message says why and what to do)."""


#: One family's ``--budget`` entry: (trials, epochs), ``None`` where the entry leaves the run's default.
FamilyBudget = tuple[int | None, int | None]

_BUDGET_ENTRY = re.compile(r"^(?P<family>[A-Za-z0-9_.-]+)=(?P<trials>[0-9]*)(?:x(?P<epochs>[0-9]+))?$")


def parse_budget(text: str) -> dict[str, FamilyBudget]:
    """``vgg16=2x1,multitask_unet=4,densenet161=x1`` -> ``{family: (trials, epochs)}``.

    Each entry is ``FAMILY=TRIALS``, ``FAMILY=TRIALSxEPOCHS`` or ``FAMILY=xEPOCHS``; counts are >= 1.

    Raises:
        ValueError: a malformed entry, a count below 1, or a family given twice (the message quotes it).
    """
    out: dict[str, FamilyBudget] = {}
    for item in (s.strip() for s in text.split(",")):
        m = _BUDGET_ENTRY.match(item)
        if not m or not (m["trials"] or m["epochs"]):
            raise ValueError(
                f"--budget entry {item!r}: expected FAMILY=TRIALS, FAMILY=TRIALSxEPOCHS or FAMILY=xEPOCHS"
            )
        trials = int(m["trials"]) if m["trials"] else None
        epochs = int(m["epochs"]) if m["epochs"] else None
        if (trials is not None and trials < 1) or (epochs is not None and epochs < 1):
            raise ValueError(f"--budget entry {item!r}: trials and epochs must be >= 1")
        if m["family"] in out:
            raise ValueError(f"--budget entry {item!r}: family {m['family']!r} is given twice")
        out[m["family"]] = (trials, epochs)
    return out


def merge_budgets(entries: list[dict[str, FamilyBudget]]) -> dict[str, FamilyBudget]:
    """The ``--budget`` flags of one command line as one map (a family given in two flags is an error)."""
    merged: dict[str, FamilyBudget] = {}
    for entry in entries:
        for fam, value in entry.items():
            if fam in merged:
                raise RunError(f"--budget: family {fam!r} is given twice")
            merged[fam] = value
    return merged


def budget_config(opts: SearchOptions, fams: list[str]) -> BudgetConfig:
    """The run's budget: ``--trials``/``--max-epochs`` defaults plus ``--budget`` overrides.

    Raises:
        RunError: a ``--budget`` entry names a family that is not searched (or not registered).
    """
    merged = merge_budgets(opts.budget)
    stray = [f for f in merged if f not in fams]
    if stray:
        raise RunError(
            f"--budget names {', '.join(repr(f) for f in stray)}, not among the searched families "
            f"({', '.join(fams)})"
        )
    return BudgetConfig(
        trials_per_family=int(opts.trials or DEFAULT_TRIALS),
        max_epochs=int(opts.max_epochs or DEFAULT_MAX_EPOCHS),
        family_trials={f: t for f, (t, _) in merged.items() if t is not None},
        family_epochs={f: e for f, (_, e) in merged.items() if e is not None},
    )


@dataclass
class SearchOptions:
    """Everything ``dvt-search search`` takes (see ``dvt-search search --help``).

    Run-defining fields (saved in ``run.json`` through :func:`run_config`): families, trials, max_epochs,
    budget (per-family overrides, :func:`parse_budget`), splits, size, windows, augment, resources,
    scheduler, sampler, failures, checkpoints, seed, sift_cache, plugins. Session fields (never saved): storage, name, resume, address, max_concurrent,
    space_dir (read once, then snapshotted), dashboard_host, include_dashboard, progress_every_s,
    autoscaling_config, families_sequential, reuse_actors.
    """

    manifest: Path
    storage: Path
    families: list[str] = field(default_factory=lambda: ["all"])
    trials: int | None = None  # None: 10 for a new run, the run's own on --resume
    max_epochs: int | None = None
    budget: list[dict[str, FamilyBudget]] = field(default_factory=list)  # one dict per --budget flag
    splits: Path | None = None
    name: str | None = None
    resume: bool = False
    address: str | None = None
    size: int = 512
    windows: list[list[float]] = field(default_factory=lambda: [[40.0, 400.0]])
    augment: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0  # a number, or "auto" (see runtime/packing.py)
    train_workers: int = 1
    trainer: str = "auto"
    loader_workers: int | None = None  # None: auto (see resolve_loader_workers)
    resident_budget_gb: float = 0.0
    resident_on: str = "host"
    grace_period: int = 1
    reduction_factor: float = 3.0
    scheduler: str = "asha"
    sampler: str = "tpe"
    startup_trials: int = 10
    paper_trial: bool = True
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
    autoscaling_config: Path | None = None
    families_sequential: bool = False
    reuse_actors: bool = True


def resolve_families(spec: list[str]) -> list[str]:
    """``["all"]`` or names (comma lists allowed) → registered family names, in registry order."""
    names = [n.strip() for item in spec for n in item.split(",") if n.strip()]
    if not names or names == ["all"]:
        return families.names()
    for n in names:
        families.get(n)  # raises KeyError listing the known names
    return list(dict.fromkeys(names))


def resolve_trainer(opts: SearchOptions) -> str:
    """``auto`` → ``ray-train`` only for ``--train-workers > 1``, else ``direct`` (CPU or one GPU).

    A ``TorchTrainer`` costs a fixed ~15-40 s per trial (a controller, a worker group, polling; see
    ``bench/bench_search.py --parts a``), more than an ASHA-stopped trial's training: a one-worker trial
    gains nothing from it.
    """
    if opts.trainer not in TRAINERS:
        raise RunError(f"--trainer must be one of {TRAINERS}, got {opts.trainer!r}")
    if opts.trainer == "direct" and opts.train_workers > 1:
        raise RunError(
            "--trainer direct runs one process per trial; use --trainer ray-train for --train-workers > 1"
        )
    if opts.trainer != "auto":
        return opts.trainer
    return "ray-train" if opts.train_workers > 1 else "direct"


def resolve_loader_workers(opts: SearchOptions) -> int:
    """``--loader-workers``, or ``auto`` (``None``): the trial's CPUs less the one its training process uses.

    ``auto`` = ``max(0, floor(cpus_per_trial) - 1)``: with 1 CPU per trial (the default) the trial loads in
    its own process, as before; with 4 CPUs it gets 3 loader workers.
    """
    if opts.loader_workers is None:
        return max(0, int(opts.cpus_per_trial) - 1)
    if opts.loader_workers < 0:
        raise RunError(f"--loader-workers must be >= 0 or auto, got {opts.loader_workers}")
    return int(opts.loader_workers)


def resolve_gpus(opts: SearchOptions) -> tuple[float, bool]:
    """``(gpus_per_trial, auto)``: ``auto`` holds 1 GPU for the memory probe, then packs by measured need."""
    if isinstance(opts.gpus_per_trial, str) and opts.gpus_per_trial.strip().lower() == "auto":
        return 1.0, True
    try:
        gpus = float(opts.gpus_per_trial)
    except (TypeError, ValueError):
        raise RunError(
            f"--gpus-per-trial must be a number >= 0 or auto, got {opts.gpus_per_trial!r}"
        ) from None
    if gpus < 0:
        raise RunError(f"--gpus-per-trial must be a number >= 0 or auto, got {opts.gpus_per_trial!r}")
    return gpus, False


def resolve_resident(opts: SearchOptions) -> tuple[float, str]:
    """``(--resident-budget-gb, --resident-on)`` checked."""
    if opts.resident_budget_gb < 0:
        raise RunError(f"--resident-budget-gb must be >= 0 (0: off), got {opts.resident_budget_gb}")
    if opts.resident_on not in ("host", "device"):
        raise RunError(f"--resident-on must be host or device, got {opts.resident_on!r}")
    return float(opts.resident_budget_gb), opts.resident_on


def run_config(opts: SearchOptions, fams: list[str]) -> RunConfig:
    """The frozen configuration of a fresh run started with ``opts`` over the families ``fams``."""
    gpus, gpus_auto = resolve_gpus(opts)
    resident_gb, resident_on = resolve_resident(opts)
    return RunConfig(
        families=tuple(fams),
        seed=int(opts.seed),
        data=DataConfig(
            manifest=str(Path(opts.manifest).resolve()),
            input=InputSpec(int(opts.size), opts.windows),
            augment=dict(opts.augment),
            splits_source=str(opts.splits) if opts.splits else None,
        ),
        budget=budget_config(opts, fams),
        scheduler=SchedulerConfig(
            type=opts.scheduler,
            grace_period=int(opts.grace_period),
            reduction_factor=float(opts.reduction_factor),
        ),
        searcher=SearcherConfig(
            sampler=opts.sampler,
            startup_trials=int(opts.startup_trials),
            paper_trial=bool(opts.paper_trial),
        ),
        resources=ResourceConfig(
            cpus_per_trial=float(opts.cpus_per_trial),
            gpus_per_trial=gpus,
            train_workers=int(opts.train_workers),
            trainer=resolve_trainer(opts),
            loader_workers=resolve_loader_workers(opts),
            gpus_auto=gpus_auto,
            resident_budget_gb=resident_gb,
            resident_on=resident_on,
        ),
        max_failures=int(opts.max_failures),
        keep_checkpoints=int(opts.keep_checkpoints),
        sift_cache=bool(opts.sift_cache),
        plugins=tuple(opts.plugins),
    )

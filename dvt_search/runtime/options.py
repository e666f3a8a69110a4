"""The options of ``dvt-search search`` and their resolution (plain data, no Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvt_search import families

from .setup import TRAINERS


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

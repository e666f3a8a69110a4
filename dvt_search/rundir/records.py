"""The records of a run directory: ``run.json`` (:class:`RunInfo`) and ``trial.json`` (:class:`TrialRecord`).

``run.json`` (format ``dvt-search-run/2``) holds three things, kept apart on purpose:

* the run's identity, fixed at its start: name, creation time, the manifest fingerprint and splits hash
  every later stage checks, library versions;
* ``config``: the frozen :class:`~dvt_search.rundir.config.RunConfig` (``asdict``), reloaded as-is on
  ``--resume``;
* ``state``: what the search has done so far (the training partition's data spec once computed, how each
  family's trials were run, which families finished).

A ``run.json`` written by dvt-search 0.1 (flat, format 1) is read by upgrading it to this form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dvt_search.data.spec import InputSpec

from .config import (
    BudgetConfig,
    ConfigError,
    DataConfig,
    ResourceConfig,
    RunConfig,
    SchedulerConfig,
    SearcherConfig,
    from_plain,
)

RUN_FORMAT = "dvt-search-run/2"

#: How a trial ended. ``stopped`` = stopped early by the scheduler (fewer epochs than budgeted).
STATUSES = ("pending", "running", "completed", "stopped", "failed")
#: Statuses of a trial that ended with a usable result (what selection considers).
FINAL = ("completed", "stopped")


def to_json(obj: Any) -> str:
    """Indented, key-sorted JSON of records (numpy scalars and paths allowed)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=json_default)


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and paths."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@dataclass
class RunState:
    """What the search has done so far (rewritten as families start and finish).

    Attributes:
        spec: the :class:`~dvt_search.data.spec.DataSpec` of the training partition (computed once).
        family_runs: per family, how its trials were run (budget, trainer, workers, concurrency, scheduler).
        finished_families: families whose search is complete (a resume skips them).
    """

    spec: dict[str, Any] | None = None
    family_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished_families: list[str] = field(default_factory=list)


@dataclass
class RunInfo:
    """``run.json``: identity, frozen configuration and progress of one search run."""

    run_name: str
    config: RunConfig
    manifest_fingerprint: str = ""
    splits_hash: str = ""
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    state: RunState = field(default_factory=RunState)
    format: str = RUN_FORMAT

    # --- what later stages read, named as they think of it ----------------------------------------------------
    @property
    def families(self) -> list[str]:
        return list(self.config.families)

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def manifest(self) -> str:
        return self.config.data.manifest

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def input(self) -> InputSpec:
        return self.config.data.input

    @property
    def trials_per_family(self) -> int:
        return self.config.budget.trials_per_family

    @property
    def max_epochs(self) -> int:
        return self.config.budget.max_epochs

    # --- file form ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "run.json") -> RunInfo:
        """Read a ``run.json`` document (format 2, or 0.1's flat format 1, upgraded)."""
        if doc.get("format") != RUN_FORMAT:
            doc = upgrade_v1(doc, where)
        return from_plain(cls, doc, where)


def upgrade_v1(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A 0.1 ``run.json`` (flat fields + a free-form ``config`` dict) in the format-2 shape."""
    if "format" in doc:
        raise ConfigError(f"{where}: unknown run format {doc['format']!r}; expected {RUN_FORMAT!r}")
    try:
        c = dict(doc.get("config", {}))
        sched, srch, res = c.get("scheduler", {}), c.get("searcher", {}), c.get("resources", {})
        config = RunConfig(
            families=tuple(doc["families"]),
            data=DataConfig(
                manifest=str(doc.get("manifest", "")),
                input=InputSpec(int(doc.get("image_size", 512)), doc.get("windows", [[40.0, 400.0]])),
                augment=dict(c.get("augment", {})),
                splits_source=c.get("splits_source"),
            ),
            seed=int(doc.get("seed", 0)),
            budget=BudgetConfig(int(doc["trials_per_family"]), int(doc["max_epochs"])),
            scheduler=SchedulerConfig(
                type=sched.get("type", "asha"),
                grace_period=int(sched.get("grace_period", 1)),
                reduction_factor=float(sched.get("reduction_factor", 3.0)),
            ),
            searcher=SearcherConfig(
                sampler=srch.get("sampler", "tpe"), startup_trials=int(srch.get("startup_trials", 10))
            ),
            resources=ResourceConfig(
                **{k: v for k, v in res.items() if k in ResourceConfig.__dataclass_fields__}
            ),
            metric=doc.get("metric", "val_auc"),
            mode=doc.get("mode", "max"),
            max_failures=int(c.get("max_failures", 2)),
            keep_checkpoints=int(c.get("keep_checkpoints", 2)),
            sift_cache=bool(c.get("sift_cache", True)),
            plugins=tuple(c.get("plugins", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a dvt-search run record ({exc})") from None
    return {
        "format": RUN_FORMAT,
        "run_name": doc.get("run_name", ""),
        "config": config.to_dict(),
        "manifest_fingerprint": doc.get("manifest_fingerprint", ""),
        "splits_hash": doc.get("splits_hash", ""),
        "created": doc.get("created", ""),
        "versions": dict(c.get("versions", {})),
        "state": {
            "spec": c.get("spec"),
            "family_runs": dict(c.get("family_runs", {})),
            "finished_families": list(c.get("finished_families", [])),
        },
    }


@dataclass
class TrialRecord:
    """One trial of one family (``trials/<family>/<trial_id>/trial.json``)."""

    trial_id: str
    family: str
    params: dict[str, Any]
    status: str = "pending"
    epochs: int = 0
    max_epochs: int = 0
    best_epoch: int | None = None
    best: dict[str, float] = field(default_factory=dict)  # metrics of the best epoch (by the run metric)
    last: dict[str, float] = field(default_factory=dict)  # metrics of the last epoch
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    optuna_number: int | None = None
    error: str | None = None
    has_checkpoint: bool = False
    failures: int = 0  # failed attempts (retried from the last checkpoint, or final for status failed)
    paper_config: bool = False  # the trial runs the family's paper configuration (its default_params())
    paper_outside_space: list[str] = field(default_factory=list)  # its params the space cannot represent
    started_at: float | None = None  # UNIX time the trial first started running (its first attempt)
    ended_at: float | None = None  # UNIX time it ended (completed, stopped or failed)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial {self.trial_id}: status {self.status!r} not in {STATUSES}")

    @property
    def final(self) -> bool:
        """Whether the trial ended with a result (``completed`` or ``stopped``)."""
        return self.status in FINAL

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

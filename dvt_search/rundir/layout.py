"""The run directory: what a search leaves behind, in plain files any later stage can read without Ray.

Layout (``<storage>/<run_name>/``)::

    run.json                      RunInfo: resolved configuration of the search
    splits.json                   copy of the splits the run used (hash checked by every later stage)
    search_spaces/<family>.yaml   snapshot of each searched space
    optuna.journal                Optuna journal storage; one study per family, named after the family
    tune/<family>/...             the Ray Tune experiment (what ``--resume`` restores)
    trials/<family>/<trial_id>/
        trial.json                TrialRecord (rewritten atomically on every change)
        metrics.jsonl             one JSON object per finished epoch
        checkpoint/               the trial's best checkpoint (``Model.save`` layout), when it has one

The runtime's driver writes these through :class:`RunDir`; the selector only reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_text

RUN_FILE = "run.json"
TRIAL_FILE = "trial.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"

#: How a trial ended. ``stopped`` = stopped early by the scheduler (fewer epochs than budgeted).
STATUSES = ("pending", "running", "completed", "stopped", "failed")


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_default)


def _default(o: Any) -> Any:
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
class RunInfo:
    """Resolved configuration of a search run (``run.json``)."""

    run_name: str
    families: list[str]
    trials_per_family: int
    max_epochs: int
    metric: str = "val_auc"
    mode: str = "max"
    manifest: str = ""
    manifest_fingerprint: str = ""
    splits_hash: str = ""
    seed: int = 0
    image_size: int = 512
    windows: list[list[float]] = field(default_factory=lambda: [[40.0, 400.0]])
    created: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # scheduler, searcher, resources, versions...

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial {self.trial_id}: status {self.status!r} not in {STATUSES}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class RunDir:
    """Reads and writes one run directory (local path or a mounted shared filesystem)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # --- run -------------------------------------------------------------------------------------------
    def write_info(self, info: RunInfo) -> None:
        atomic_write_text(self.path / RUN_FILE, _json(asdict(info)))

    def read_info(self) -> RunInfo:
        f = self.path / RUN_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{self.path}: not a dvt-search run directory (no {RUN_FILE})")
        return RunInfo.from_dict(json.loads(f.read_text()))

    # --- trials ----------------------------------------------------------------------------------------
    def trial_dir(self, family: str, trial_id: str) -> Path:
        return self.path / "trials" / family / trial_id

    def write_trial(self, rec: TrialRecord) -> None:
        atomic_write_text(self.trial_dir(rec.family, rec.trial_id) / TRIAL_FILE, _json(asdict(rec)))

    def append_epoch(self, family: str, trial_id: str, metrics: Mapping[str, Any]) -> None:
        """Append one epoch's metrics (must hold ``epoch``); a re-reported epoch replaces the old line."""
        f = self.trial_dir(family, trial_id) / METRICS_FILE
        rows = [r for r in self.read_epochs(family, trial_id) if r.get("epoch") != metrics.get("epoch")]
        rows.append(dict(metrics))
        rows.sort(key=lambda r: r.get("epoch", 0))
        atomic_write_text(f, "".join(json.dumps(r, sort_keys=True, default=_default) + "\n" for r in rows))

    def read_epochs(self, family: str, trial_id: str) -> list[dict[str, Any]]:
        f = self.trial_dir(family, trial_id) / METRICS_FILE
        if not f.is_file():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def checkpoint_dir(self, family: str, trial_id: str) -> Path:
        return self.trial_dir(family, trial_id) / CHECKPOINT_DIR

    def iter_trials(self, family: str | None = None) -> Iterator[TrialRecord]:
        root = self.path / "trials"
        fams = (
            [family]
            if family
            else sorted(p.name for p in root.iterdir() if p.is_dir())
            if root.is_dir()
            else []
        )
        for fam in fams:
            for f in sorted((root / fam).glob(f"*/{TRIAL_FILE}")):
                yield TrialRecord.from_dict(json.loads(f.read_text()))

    def trials(self, family: str | None = None) -> list[TrialRecord]:
        return list(self.iter_trials(family))

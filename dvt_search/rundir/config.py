"""The settings of a search run: one frozen, nested dataclass, saved in ``run.json`` and reloaded as-is.

:class:`RunConfig` is built once, from the command line of a fresh run (``dvt-search search``), and is
never rebuilt from flags again: ``--resume`` reloads it from ``run.json`` (``RunConfig.from_dict``), and
every per-family trial setting (budget, trainer, workers, resources) is *derived* from it by asking the
family (:meth:`dvt_search.families.base.Family.trial_needs`), not copied into another record.

Round trip: ``RunConfig.from_dict(dataclasses.asdict(cfg)) == cfg`` (tuples come back as tuples, nested
sections as their dataclasses); an unknown or missing field names itself and ``run.json``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dvt_search.data.spec import InputSpec

#: The searcher and the selector optimise this metric of every family (val AUC, higher is better).
METRIC, MODE = "val_auc", "max"


class ConfigError(ValueError):
    """A stored run configuration cannot be read (the message names the field)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and what a network sees of it.

    Attributes:
        manifest: absolute path of the manifest the run was started on.
        input: network input size and HU windows.
        augment: :class:`~dvt_search.data.augment.Augment` fields for the training set (``{}``: none).
        splits_source: the ``--splits`` file given at the start (``None``: seeded splits were created).
    """

    manifest: str
    input: InputSpec = field(default_factory=InputSpec)
    augment: dict[str, Any] = field(default_factory=dict)
    splits_source: str | None = None

    @property
    def splits_created(self) -> bool:
        return self.splits_source is None


@dataclass(frozen=True)
class BudgetConfig:
    """How much is searched: trials per family and the epoch budget of a full trial.

    ``trials_per_family`` and ``max_epochs`` are the run's defaults; ``family_trials`` and
    ``family_epochs`` override them for single families (``--budget vgg16=2x1``: heavy families get fewer
    trials or epochs). Read them through :meth:`trials_for` and :meth:`epochs_for`, never the fields.
    A ``run.json`` written before per-family budgets existed has neither map and loads with both empty.
    """

    trials_per_family: int = 10
    max_epochs: int = 10
    family_trials: dict[str, int] = field(default_factory=dict)
    family_epochs: dict[str, int] = field(default_factory=dict)

    def trials_for(self, family: str) -> int:
        """Trials searched for ``family`` (its override, else the run's ``trials_per_family``)."""
        return int(self.family_trials.get(family, self.trials_per_family))

    def epochs_for(self, family: str) -> int:
        """Epoch budget of a full trial of ``family`` (its override, else the run's ``max_epochs``)."""
        return int(self.family_epochs.get(family, self.max_epochs))


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping: ASHA on the reported epoch (``fifo``: none)."""

    type: str = "asha"
    time_attr: str = "epoch"
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SearcherConfig:
    """The Optuna study behind every family's search (see :mod:`dvt_search.runtime.searcher`)."""

    library: str = "optuna"
    sampler: str = "tpe"
    startup_trials: int = 10
    multivariate: bool = True
    scheduler_stopped_trials: str = "PRUNED"
    paper_trial: bool = True


@dataclass(frozen=True)
class ResourceConfig:
    """What each trial may use (per training process), as asked on the command line.

    ``trainer`` is the resolved choice (``direct`` or ``ray-train``; ``auto`` is resolved before saving).
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    train_workers: int = 1
    trainer: str = "direct"
    loader_workers: int = 0
    #: ``--gpus-per-trial auto``: ``gpus_per_trial`` is then 1 (what the memory probe holds) and each
    #: trial reserves the share measured for its batch size (``runtime/packing.py``)
    gpus_auto: bool = False
    #: hold the compact training/validation slices in memory up to this many GiB per trial (0: off)
    resident_budget_gb: float = 0.0
    #: where resident slices live: ``host`` (pinned on a GPU trial) or ``device`` (the trial's GPU)
    resident_on: str = "host"


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a search run (``run.json``'s ``config``).

    Attributes:
        families: the searched families, in search order.
        seed: seed of splits, samplers and data order.
        data: manifest, input, augmentation, splits source.
        budget: trials per family and epochs per trial (per-family overrides: ``budget.trials_for``).
        scheduler: early stopping.
        searcher: the Optuna sampler.
        resources: CPUs/GPUs/workers per trial.
        metric: the metric every study optimises.
        mode: ``max`` or ``min``.
        max_failures: retries of a failing trial (from its last checkpoint).
        keep_checkpoints: best checkpoints a trial keeps besides its latest.
        sift_cache: whether the SIFT descriptor cache is shared between trials.
        plugins: modules imported first on every process (they register extra families).
    """

    families: tuple[str, ...]
    data: DataConfig
    seed: int = 0
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    searcher: SearcherConfig = field(default_factory=SearcherConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    metric: str = METRIC
    mode: str = MODE
    max_failures: int = 2
    keep_checkpoints: int = 2
    sift_cache: bool = True
    plugins: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` (the form saved in ``run.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "run.json config") -> RunConfig:
        """Rebuild a config saved by :meth:`to_dict` (``ConfigError`` naming a bad field)."""
        return from_plain(cls, doc, where)


def from_plain(cls: type, doc: Any, where: str) -> Any:
    """Rebuild dataclass ``cls`` from its ``asdict`` form: nested dataclasses and tuples restored."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}")
    values: dict[str, Any] = {}
    for name in fields:
        if name in doc:
            values[name] = _restore(hints[name], doc[name], f"{where}.{name}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _restore(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _restore(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_restore(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    return value

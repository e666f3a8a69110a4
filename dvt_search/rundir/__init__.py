"""The run directory (no Ray here): the one owner of every path and file format under ``<storage>/<run>/``.

:mod:`.layout` (:class:`RunDir`: paths, readers, writers), :mod:`.records` (``run.json`` and
``trial.json``), :mod:`.config` (the run's frozen, nested settings).
"""

from .config import (
    BudgetConfig,
    ConfigError,
    DataConfig,
    ResourceConfig,
    RunConfig,
    SchedulerConfig,
    SearcherConfig,
)
from .layout import RunDir, latest_run
from .records import FINAL, STATUSES, RunInfo, RunState, TrialRecord

__all__ = [
    "FINAL",
    "STATUSES",
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "ResourceConfig",
    "RunConfig",
    "RunDir",
    "RunInfo",
    "RunState",
    "SchedulerConfig",
    "SearcherConfig",
    "TrialRecord",
    "latest_run",
]

"""The run directory (no Ray here): the one owner of every path and file format under ``<storage>/<run>/``."""

from .layout import RunDir, RunInfo, TrialRecord

__all__ = ["RunDir", "RunInfo", "TrialRecord"]

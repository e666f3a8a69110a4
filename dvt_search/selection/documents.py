"""The documents ``dvt-search select`` leaves in a run directory: ``selection.json``, ``comparison.json`` and
the test-evaluation log.

Paths and the JSON form come from :class:`~dvt_search.rundir.RunDir`; what they hold is written by
:func:`dvt_search.selection.run.select_run` (the choice on validation and the comparison of
:func:`dvt_search.stats.compare.compare` on test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dvt_search.rundir import RunDir


def read_selection(run_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored ``selection.json`` of a run (``FileNotFoundError`` telling to run ``select``)."""
    run = RunDir(run_path)
    return run.read_doc(run.selection_file)


def write_selection(run_path: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write the selection document atomically."""
    run = RunDir(run_path)
    return run.write_doc(run.selection_file, doc)


def read_comparison(run_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored comparison of a run (``FileNotFoundError`` telling to run ``select`` when absent)."""
    run = RunDir(run_path)
    return run.read_doc(run.comparison_file)


def write_comparison(run_path: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write the comparison document atomically."""
    run = RunDir(run_path)
    return run.write_doc(run.comparison_file, doc)


def read_test_log(run_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recorded evaluation of the run's test set (reconstructed for a run from before the log)."""
    from dvt_search.selection.test_log import previous

    return previous(RunDir(run_path))

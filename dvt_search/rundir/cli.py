"""``dvt-search status RUN_DIR``: the per-family table of a run's trials (reads the run directory only)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``status`` command."""
    p = subparsers.add_parser(
        "status",
        help="table of a run's trials per family (running / finished, params, epochs, best value)",
        description="Print one table per family of the run's trials: trial id, state, epochs done of the "
        "budget, best value of the run's metric (and its epoch), hyperparameters, and the error of failed "
        "trials. Reads only the run directory, so it works during a search, from any machine that mounts "
        "the storage.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory (<storage>/<name>)")
    p.add_argument("--family", help="only this family")
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from dvt_search.cli_util import fail

    from .layout import RunDir
    from .status import status_lines

    try:
        lines = status_lines(RunDir(args.run_dir), args.family)
    except (FileNotFoundError, ValueError) as exc:
        return fail(exc, "dvt-search status")
    print("\n".join(lines))
    return 0

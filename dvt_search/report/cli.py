"""``dvt-search report``: the HTML + Markdown comparison report of a selected run.

Only argument parsing lives here; heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from dvt_search.cli_util import fail as _fail

log = logging.getLogger(__name__)


def _report(args: argparse.Namespace) -> int:
    from dvt_search.report.build import write_report

    try:
        html, md = write_report(args.run, args.out, manifest=args.manifest, cam_per_family=args.cam)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(exc)
    print(f"wrote {html} and {md}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``report`` command(s)."""
    p = subparsers.add_parser("report", help="HTML + Markdown comparison report of a selected run")
    p.add_argument("run", type=Path, help="run directory (after `dvt-search select`)")
    p.add_argument("--out", type=Path, help="output directory (default: reports/<run name>)")
    p.add_argument("--manifest", help="manifest path for the CAM overlays when it moved")
    p.add_argument("--cam", type=int, default=4, help="mis-classified slices shown per CNN model (default 4)")
    p.set_defaults(func=_report)

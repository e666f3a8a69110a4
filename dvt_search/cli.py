"""``dvt-search``: the command-line entry point. Thin: each room registers its own subcommands.

Every room with commands has a ``cli`` module exposing ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and
returns the process exit code. Heavy imports (torch, Ray) happen inside handlers, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from . import __version__

#: Rooms whose ``cli.register`` is called, in the order their commands appear in ``--help``.
ROOM_CLIS = (
    "dvt_search.data.cli",
    "dvt_search.families.cli",
    "dvt_search.runtime.cli",
    "dvt_search.rundir.cli",
    "dvt_search.selection.cli",
    "dvt_search.report.cli",
    "dvt_search.deploy.cli",
    "dvt_search.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvt-search",
        description="Distributed hyperparameter search and model selection for DVT detection on CT slices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ROOM_CLIS:
        if importlib.util.find_spec(name) is None:  # a room that has no commands yet
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

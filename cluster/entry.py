"""Entry script for ``ray submit`` / ``ray job submit``: runs ``dvt-search search`` on a running Ray cluster.

Usage (from the repository root, after ``ray up``)::

    ray submit cluster/cluster.yaml cluster/entry.py -- \\
        --data /mnt/efs/dvt/manifest.parquet --family all --trials 50 --storage /mnt/efs/dvt-runs

or, as a Ray job that outlives the SSH session (logs in the dashboard's Jobs page; ``ray dashboard
cluster/cluster.yaml`` forwards port 8265)::

    RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir cluster -- \\
        python entry.py --data /mnt/efs/dvt/manifest.parquet --family all --storage /mnt/efs/dvt-runs

``ray submit`` copies this one file to ``~/entry.py`` on the head and runs it there with the head's
``python`` from the SSH user's home directory, so it imports only the installed ``dvt_search`` package
(the cluster YAMLs install it) and relative paths would resolve against that home: pass absolute ones.
Every argument after ``--`` goes to ``dvt-search search``, with two defaults added when absent:
``--address auto`` (join the cluster this script runs on) and ``--space-dir`` = the ``search_spaces/``
of the checkout the package is installed from. ``ray submit`` joins the arguments with spaces and the
head's shell splits them again, so quote a value containing spaces twice: ``--name "'a b'"``. A failing
search makes ``ray submit`` exit non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _has_flag(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def search_argv(args: list[str], space_dir: Path | None) -> list[str]:
    """Return the ``dvt-search`` argument list for a search with ``args`` on the running cluster.

    Args:
        args: Arguments given after ``--`` to ``ray submit``.
        space_dir: Search-space directory to use unless ``args`` names one (``None``: add nothing).

    Returns:
        ``["search", "--address", "auto", "--space-dir", space_dir, *args]``, leaving out each default
        that ``args`` already sets.
    """
    defaults: list[str] = []
    if not _has_flag(args, "--address"):
        defaults += ["--address", "auto"]
    if space_dir is not None and not _has_flag(args, "--space-dir"):
        defaults += ["--space-dir", str(space_dir)]
    return ["search", *defaults, *args]


def installed_space_dir() -> Path | None:
    """``search_spaces/`` next to the installed ``dvt_search`` package (an editable install), if present."""
    import dvt_search

    candidate = Path(dvt_search.__file__).resolve().parents[1] / "search_spaces"
    return candidate if candidate.is_dir() else None


def main(argv: list[str] | None = None) -> int:
    """Run the search; returns its exit code."""
    from dvt_search.cli import main as cli_main

    args = sys.argv[1:] if argv is None else argv
    return cli_main(search_argv(args, installed_space_dir()))


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Fill the ``${DVT_*}`` placeholders of a cluster YAML template and write a file ``ray up`` can use.

The templates in ``cluster/`` keep everything machine- or account-specific (AMI, IPs, SSH key, ports,
the Python environment on the nodes) in placeholders, so the committed files hold no one's paths::

    ${DVT_NAME}             required: the render fails, naming it, when it has no value
    ${DVT_NAME:-default}    optional: ``default`` (possibly empty) when it has no value

Values come from ``--set NAME=VALUE`` first, then the environment. Only names starting with ``DVT_`` are
placeholders, so shell variables in the commands (``$HOME``, ``$RAY_HEAD_IP``, ``${PATH}``) pass through
untouched to the nodes. Values are inserted verbatim: the templates quote where a value could need it.

Usage (from the repository root)::

    export DVT_AWS_AMI=ami-0123456789abcdef0
    python cluster/render.py cluster/cluster.yaml            # -> cluster/_rendered/cluster.yaml
    python cluster/render.py cluster/local.yaml --set DVT_SSH_PORT=2222 --out /tmp/local.yaml

Standard library plus PyYAML only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

#: ``${DVT_NAME}`` or ``${DVT_NAME:-default}``; the default runs to the first ``}``.
PLACEHOLDER = re.compile(r"\$\{(DVT_[A-Z0-9_]+)(?::-([^}]*))?\}")

#: Where rendered files go by default, next to the templates (git-ignored by ``cluster/.gitignore``).
RENDERED_DIR = "_rendered"


class RenderError(ValueError):
    """A template could not be rendered (unset placeholders, or the result is not valid YAML)."""


def placeholders(text: str) -> dict[str, str | None]:
    """Return every placeholder name in ``text`` with its default (``None`` when it has none)."""
    found: dict[str, str | None] = {}
    for match in PLACEHOLDER.finditer(text):
        name, default = match.group(1), match.group(2)
        if found.get(name) is None:
            found[name] = default
    return found


def render_text(text: str, values: Mapping[str, str], source: str = "<template>") -> str:
    """Substitute the placeholders of ``text``.

    Args:
        text: Template text.
        values: Placeholder values by name (``DVT_*``); a name missing here falls back to its default.
        source: Name of the template, for error messages.

    Returns:
        The rendered text.

    Raises:
        RenderError: When a placeholder without a default has no value (all such names are listed).
    """
    missing = sorted(
        name for name, default in placeholders(text).items() if name not in values and default is None
    )
    if missing:
        raise RenderError(
            f"{source}: no value for {', '.join(missing)} "
            "(export them or pass --set NAME=VALUE; see the comments at the top of the template)"
        )

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        return values.get(name, default or "")

    return PLACEHOLDER.sub(substitute, text)


def render_file(
    template: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Render ``template`` to ``out`` (atomically) and return the written path.

    Args:
        template: Path of a cluster YAML template.
        out: Output path; default ``<template dir>/_rendered/<template name>``.
        overrides: Values that take precedence over ``environ``.
        environ: Where other values come from; default ``os.environ``.

    Raises:
        RenderError: Unset required placeholders, or a result that does not parse as a YAML mapping.
    """
    template = Path(template)
    env = os.environ if environ is None else environ
    values = {k: v for k, v in env.items() if k.startswith("DVT_")}
    values.update(overrides or {})
    text = render_text(template.read_text(), values, source=str(template))
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"{template}: rendered text is not valid YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise RenderError(f"{template}: rendered text is not a YAML mapping")

    target = Path(out) if out is not None else template.parent / RENDERED_DIR / template.name
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _parse_set(items: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("${" + name + "}"):
            raise RenderError(f"--set {item!r}: expected DVT_NAME=VALUE")
        result[name] = value
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", help="cluster YAML template, e.g. cluster/cluster.yaml")
    parser.add_argument("--out", help="output path (default: <template dir>/_rendered/<name>)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="DVT_NAME=VALUE", help="repeatable"
    )
    parser.add_argument("--list", action="store_true", help="list the template's placeholders and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for name, default in placeholders(Path(args.template).read_text()).items():
                print(name if default is None else f"{name} (default: {default!r})")
            return 0
        print(render_file(args.template, args.out, _parse_set(args.sets)))
    except (RenderError, OSError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Phantom datasets for the tests: generated once per argument set and shared by the whole session.

The root ``conftest.py`` exposes :class:`PhantomCache` as the session fixture ``phantom_data``; the
per-room fixtures (``phantom`` of the family and runtime tests, ``selected_run``) are thin adapters over
it. Arguments are exactly :func:`dvt_search.data.phantom.generate`'s content arguments (its defaults
apply to those left out), so a test gets the same bytes as from calling ``generate`` itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dvt_search.data.phantom import generate
from dvt_search.data.schema import read_manifest
from dvt_search.data.splits import Splits, make_splits

#: ``generate`` arguments that change the dataset's content (``workers``/``overwrite`` do not).
CONTENT_ARGS = ("patients", "seed", "size", "slices_per_scan", "preset", "iliac_fraction")


@dataclass(frozen=True, eq=False)
class PhantomData:
    """One generated phantom dataset (shared: never write into ``root`` or mutate ``frame`` in place).

    Attributes:
        root: the dataset directory (``manifest.parquet`` + ``volumes/``).
        manifest: path of ``manifest.parquet``.
        frame: the manifest as read by :func:`~dvt_search.data.schema.read_manifest`.
        args: every ``generate`` content argument it was made with (defaults filled in).
    """

    root: Path
    manifest: Path
    frame: pd.DataFrame
    args: dict[str, Any]

    def splits(self, **kwargs: Any) -> Splits:
        """:func:`~dvt_search.data.splits.make_splits` of this dataset (same keyword arguments)."""
        return make_splits(self.frame, **kwargs)


def _content_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``generate``'s defaults filled in; refuses arguments that are not content."""
    unknown = sorted(set(kwargs) - set(CONTENT_ARGS))
    if unknown:
        raise TypeError(f"phantom_data() takes only {', '.join(CONTENT_ARGS)}; got {', '.join(unknown)}")
    params = inspect.signature(generate).parameters
    return {name: kwargs.get(name, params[name].default) for name in CONTENT_ARGS}


class PhantomCache:
    """Callable ``(**generate content args) -> PhantomData``, generating each argument set once.

    Args:
        mkdir: makes a fresh empty directory per dataset (``tmp_path_factory.mktemp`` in the fixture).
    """

    def __init__(self, mkdir: Callable[[str], Path]) -> None:
        self._mkdir = mkdir
        self._made: dict[tuple[tuple[str, Any], ...], PhantomData] = {}

    def __call__(self, **kwargs: Any) -> PhantomData:
        args = _content_args(kwargs)
        key = tuple(args.items())
        if key not in self._made:
            manifest = generate(self._mkdir("phantom") / "data", **args)
            self._made[key] = PhantomData(manifest.parent, manifest, read_manifest(manifest), args)
        return self._made[key]

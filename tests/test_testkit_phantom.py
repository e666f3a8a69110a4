"""The suite's shared phantom factory (``phantom_data``): one dataset per argument set, ``generate``'s bytes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dvt_search.data.phantom import generate
from dvt_search.data.schema import read_manifest

MICRO = {"patients": 1, "size": 32, "slices_per_scan": 2, "preset": "easy"}


def _volumes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("volumes/*/*.npy"))}


def test_same_arguments_share_one_dataset_and_other_arguments_do_not(phantom_data) -> None:
    first = phantom_data(**MICRO)
    assert phantom_data(**MICRO, seed=0, iliac_fraction=0.5) is first  # generate's defaults, spelled out
    other = phantom_data(**{**MICRO, "seed": 3})
    assert other.root != first.root and other.args["seed"] == 3
    assert _volumes(other.root) != _volumes(first.root)


def test_dataset_is_what_generate_writes(phantom_data, tmp_path: Path) -> None:
    data = phantom_data(**MICRO)
    direct = generate(tmp_path / "direct", **MICRO)
    assert data.manifest == data.root / direct.name and data.manifest.is_file()
    assert _volumes(data.root) == _volumes(direct.parent)
    pd.testing.assert_frame_equal(data.frame, read_manifest(direct))


def test_arguments_that_do_not_change_the_content_are_refused(phantom_data) -> None:
    with pytest.raises(TypeError, match="workers"):
        phantom_data(**MICRO, workers=2)

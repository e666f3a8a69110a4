"""Shared tiny data for the family tests: one small EASY phantom, generated once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dvt_search.data.dataset import SliceDataset, spec_for
from dvt_search.data.splits import make_splits
from dvt_search.families.base import DataSpec

#: Network input side for the conformance tests (multiple of 32, and big enough that every BatchNorm
#: of ResNet/DenseNet sees more than one value per channel).
SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Two cores are shared with other test processes: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantom(phantom_data) -> tuple[Path, pd.DataFrame]:
    """An easy femoral phantom at 64^2: 8 patients, ~550 slices (2 s to generate); (manifest, frame)."""
    data = phantom_data(patients=8, seed=0, size=SIZE, slices_per_scan=12, preset="easy", iliac_fraction=0.0)
    return data.manifest, data.frame


def _pick(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows, half positive and half negative, in a seeded random order."""
    rng = np.random.default_rng(seed)
    parts = []
    for label, k in ((1, n // 2), (0, n - n // 2)):
        pool = rows.index[rows["label"] == label].to_numpy()
        parts.append(rng.choice(pool, size=k, replace=False))
    return rows.loc[rng.permutation(np.concatenate(parts))]


@pytest.fixture(scope="session")
def splits(phantom: tuple[Path, pd.DataFrame]):
    return make_splits(phantom[1], seed=0)


@pytest.fixture(scope="session")
def tiny(phantom: tuple[Path, pd.DataFrame], splits) -> tuple[SliceDataset, SliceDataset, DataSpec]:
    """16 training and 8 validation slices (both balanced), patient-disjoint, at 64^2."""
    manifest, df = phantom
    train = SliceDataset(_pick(splits.select(df, "train"), 16, 0), manifest.parent, size=SIZE)
    val = SliceDataset(_pick(splits.select(df, "val"), 8, 1), manifest.parent, size=SIZE)
    return train, val, spec_for(train)

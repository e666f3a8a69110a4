"""Slice context (2.5D) in the data pipeline: what a sample with ``context_slices = k`` really holds.

The phantom manifest is read with its rows **shuffled**, so the row before or after a row in the frame is
usually another scan's slice: an implementation taking neighbours by row position, or one that wraps or
crosses scans at an edge, reads the wrong pixels. Expected neighbours are derived here from the frame
alone (sort a scan's slices, step by rank, clamp at the ends) and their pixels read straight from the
store, never through the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from dvt_search.data.augment import Augment, augment_rng
from dvt_search.data.compact import CompactSlices, to_int16_hu
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.io import load_slice
from dvt_search.data.schema import resolve
from dvt_search.data.transform import prepare_hu, resize_mask, to_channels

SIDE = 64
WINDOWS = ((40.0, 400.0), (80.0, 200.0))
K = 2
AUG = Augment(
    hflip_p=0.5,
    rotation_deg=15,
    scale_range=(0.9, 1.1),
    translate_frac=0.05,
    intensity_jitter_hu=20,
    noise_sd_hu=10,
)


@pytest.fixture(scope="module")
def store(phantom_data) -> tuple[pd.DataFrame, Path]:
    """Two patients' scans (5 slices each) with the manifest rows in a seeded random order."""
    data = phantom_data(patients=2, seed=3, size=SIDE, slices_per_scan=4, preset="easy", iliac_fraction=0.0)
    df = data.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert df["scan_id"].nunique() >= 2
    return df, data.root


def expected_rows(df: pd.DataFrame, i: int, k: int) -> list[int]:
    """Rows of row ``i``'s context slices from the frame alone: rank within the scan, clamped."""
    scan = df[df["scan_id"] == df.at[i, "scan_id"]].sort_values("slice_index")
    order = list(scan.index)
    rank = order.index(i)
    return [order[min(max(rank + o, 0), len(order) - 1)] for o in range(-k, k + 1)]


def raw_hu(df: pd.DataFrame, root: Path, j: int) -> np.ndarray:
    return load_slice(str(resolve(root, df.at[j, "image_path"])), int(df.at[j, "image_index"]))


def test_context_channels_are_the_scan_neighbours_edges_repeated(store) -> None:
    """Each channel group equals the neighbour slice read straight from the store.

    Catches: neighbours taken by frame row (the frame is shuffled, so row i +- 1 is mostly another
    scan's slice), an edge that wraps or reads the next scan instead of repeating the edge slice, a
    window-major channel order, a centre that is not channel group k, and a mask that is not the centre's.
    """
    df, root = store
    ds = SliceDataset(df, root, size=32, windows=WINDOWS, context_slices=K)
    w = len(WINDOWS)
    edges = 0
    for i in range(len(df)):
        item = ds[i]
        assert item["image"].shape == ((2 * K + 1) * w, 32, 32)
        rows = expected_rows(df, i, K)
        assert {df.at[j, "scan_id"] for j in rows} == {df.at[i, "scan_id"]}
        for d, j in enumerate(rows):
            want = to_channels(prepare_hu(raw_hu(df, root, j), 32), WINDOWS)
            np.testing.assert_array_equal(item["image"][d * w : (d + 1) * w].numpy(), want)
        mask = load_slice(str(resolve(root, df.at[i, "mask_path"])), int(df.at[i, "mask_index"]))
        np.testing.assert_array_equal(item["mask"][0].numpy(), resize_mask(mask, 32))
        if rows[0] == i:  # first slice of its scan: the slices before it repeat it
            edges += 1
            np.testing.assert_array_equal(item["image"][:w], item["image"][K * w : (K + 1) * w])
    assert edges == df["scan_id"].nunique()


def test_one_augmentation_draw_for_every_context_slice(store) -> None:
    """The augmented stack equals each neighbour augmented alone with the centre row's draw.

    Catches: a fresh draw per context slice (e.g. seeded by the neighbour's row), noise or offset added to
    the centre only, or a mask warped differently from the image.
    """
    df, root = store
    ds = SliceDataset(df, root, size=SIDE, windows=WINDOWS, context_slices=K, augment=AUG, seed=11)
    ds.set_epoch(3)
    w = len(WINDOWS)
    for i in (0, 5, len(df) - 1):
        item = ds[i]
        mask = load_slice(str(resolve(root, df.at[i, "mask_path"])), int(df.at[i, "mask_index"]))
        for d, j in enumerate(expected_rows(df, i, K)):
            hu, m = AUG(prepare_hu(raw_hu(df, root, j), SIDE), resize_mask(mask, SIDE), augment_rng(11, 3, i))
            np.testing.assert_allclose(
                item["image"][d * w : (d + 1) * w].numpy(), to_channels(hu, WINDOWS), atol=1e-6
            )
            np.testing.assert_array_equal(item["mask"][0].numpy(), m)


def test_compact_items_ship_the_neighbours_as_int16(store) -> None:
    """The compact item's ``hu`` rows are the neighbours' stored HU (int16), centre in the middle.

    Catches: a compact path that ships only the centre slice or reads neighbours by frame row.
    """
    df, root = store
    compact = CompactSlices(SliceDataset(df, root, size=32, context_slices=K), with_mask=True, pack=False)
    for i in range(0, len(df), 3):
        hu = compact[i]["hu"].numpy()
        assert hu.shape == (2 * K + 1, SIDE, SIDE) and hu.dtype == np.int16
        for d, j in enumerate(expected_rows(df, i, K)):
            np.testing.assert_array_equal(hu[d], to_int16_hu(raw_hu(df, root, j)))


@pytest.mark.parametrize("size, augment", [(SIDE, None), (32, None), (32, AUG)])
def test_device_path_matches_the_cpu_reference_with_context(
    store, size: int, augment: Augment | None
) -> None:
    """Compact batches finished by ``DeviceTransform`` equal the reference items, channel for channel.

    Tolerances as in ``data/device_transform.py``: windowing and integer shrinking exact (1e-5), the
    augmented warp within 0.01 mean absolute difference per channel. Catches: a window-major channel
    order on the device (the reference is slice-major), an augmentation applied to one context slice only,
    or a per-slice draw on one path and not the other.
    """
    df, root = store
    ref = SliceDataset(df, root, size=size, windows=WINDOWS, augment=augment, seed=7, context_slices=K)
    compact = CompactSlices(
        SliceDataset(df, root, size=size, windows=WINDOWS, augment=augment, seed=7, context_slices=K),
        with_mask=True,
        patches=True,
    )
    ref.set_epoch(1)
    compact.set_epoch(1)
    n = len(ref)
    want = default_collate([ref[i] for i in range(n)])
    got = compact.batch_transform(default_collate([compact[i] for i in range(n)]))
    assert got["image"].shape == want["image"].shape == (n, (2 * K + 1) * len(WINDOWS), size, size)
    diff = (got["image"] - want["image"]).abs()
    if augment is None:
        assert float(diff.max()) <= 1e-5
        assert torch.equal(got["mask"], want["mask"]) and torch.equal(got["patches"], want["patches"])
    else:
        per_channel = diff.mean(dim=(0, 2, 3))
        assert float(per_channel.max()) <= 0.01, per_channel
        assert float((got["mask"] == want["mask"]).float().mean()) >= 0.99


def test_with_input_changes_only_the_input(store) -> None:
    """``with_input`` keeps rows, augmentation, seed and epoch; the cache key follows size and context.

    Catches: a view that drops augmentation or the epoch (a model at its own size would train on other
    draws than the reference), or a cache key that ignores context (a cache of k = 0 read for k = 2).
    """
    df, root = store
    ds = SliceDataset(df, root, size=SIDE, augment=AUG, seed=5)
    ds.set_epoch(2)
    assert ds.with_input(size=SIDE, context_slices=0) is ds
    other = ds.with_input(size=32, context_slices=1)
    assert (other.size, other.context_slices, other.seed, other.epoch, other.augment) == (32, 1, 5, 2, AUG)
    assert other.frame.equals(ds.frame)
    keys = {ds.cache_key, other.cache_key, ds.with_input(context_slices=1).cache_key}
    assert len(keys) == 3
    with pytest.raises(ValueError, match="context_slices"):
        SliceDataset(df, root, context_slices=-1)

"""Resident slices with context (``context_slices`` k > 0) hold each slice once and build the stacks by
index (``data/resident.py``): batches equal the store's (HU exactly; the finished batches exactly), and the
memory is one slice per row, not 2k + 1. Catches: stacks gathered from the wrong rows (another scan's or a
frame-order neighbour), a lost centre, or memory still holding every stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.phantom import generate
from dvt_search.data.resident import ResidentSlices, item_bytes
from dvt_search.data.schema import manifest_root, read_manifest
from dvt_search.engine.device import make_loader

SIDE = 32
K = 2
AUG = Augment(hflip_p=0.5, rotation_deg=10, intensity_jitter_hu=20, noise_sd_hu=10)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("resident-ctx") / "ph"
    manifest = generate(out, patients=2, seed=6, size=SIDE, slices_per_scan=5, preset="easy")
    df = read_manifest(manifest)
    return df.sample(frac=1.0, random_state=1), manifest_root(manifest)  # frame order != slice order


def _view(store, pack: bool) -> CompactSlices:
    df, root = store
    ds = SliceDataset(df, root, size=SIDE, augment=AUG, seed=4, context_slices=K)
    return CompactSlices(ds, with_mask=True, patches=True, pack=pack)


def _batches(dataset, epoch: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(9)
    dataset.set_epoch(epoch)
    return [dict(b) for b in make_loader(dataset, 4, shuffle=True, generator=gen)]


@pytest.mark.parametrize("pack", [False, True])
def test_resident_context_batches_equal_the_store_batches(store, pack: bool) -> None:
    view = _view(store, pack)
    resident = ResidentSlices(_view(store, pack))
    key = "packed" if pack else "hu"
    assert resident.tensors[key].shape == (len(view), 1, SIDE, SIDE)  # one slice per row
    assert resident.nbytes == len(view) * item_bytes(view)
    assert item_bytes(view) < 2 * SIDE * SIDE * 2  # not the 2k + 1 = 5 slices of a stack
    expected, got = _batches(view), _batches(resident)
    assert len(expected) == len(got) > 2
    finish = view.batch_transform
    for e, g in zip(expected, got, strict=True):
        assert g[key].shape == e[key].shape == (len(e["label"]), 2 * K + 1, SIDE, SIDE)
        if pack:  # HU bits equal; neighbours' own mask bits are never read
            assert torch.equal(e[key] & 0x0FFF, g[key] & 0x0FFF)
            assert torch.equal(e[key][:, K], g[key][:, K])
        else:
            assert torch.equal(e[key], g[key])
        fe, fg = finish(e), finish(g)
        for k in fe:
            assert torch.equal(fe[k], fg[k]), k
    for i in (0, 3, len(view) - 1):
        a, b = view[i], resident[i]
        assert torch.equal(a[key] & 0x0FFF, b[key] & 0x0FFF) and torch.equal(a[key][K], b[key][K])

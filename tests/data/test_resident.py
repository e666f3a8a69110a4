"""A resident dataset yields exactly the store loader's batches, and is made resident only when it fits.

The store path is the engine's loader over :class:`CompactSlices` (items read from a phantom store,
collated by torch); the resident path is the same loader over :class:`ResidentSlices` (one gather per
key from memory). Same sampler seed, so both must give bit-identical batches, every key, several epochs,
with augmentation and masks (the case where per-epoch draws could go stale or be mis-indexed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.phantom import generate
from dvt_search.data.resident import GIB, ResidentSlices, item_bytes, plan_resident, resident_bytes, size_text
from dvt_search.data.schema import manifest_root, read_manifest
from dvt_search.engine.device import make_loader

SIDE = 32
AUG = Augment(hflip_p=0.5, rotation_deg=10, intensity_jitter_hu=20, noise_sd_hu=10)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("resident") / "ph"
    manifest = generate(out, patients=2, seed=3, size=SIDE, slices_per_scan=5, preset="easy")
    return read_manifest(manifest), manifest_root(manifest)


def _view(store, *, mask: bool, augment: Augment | None = AUG) -> CompactSlices:
    df, root = store
    return CompactSlices(
        SliceDataset(df, root, size=SIDE, augment=augment, seed=4), with_mask=mask, patches=mask
    )


def _epochs(dataset, epochs: int = 3, workers: int = 0) -> list[list[dict[str, torch.Tensor]]]:
    gen = torch.Generator()
    loader = make_loader(dataset, 3, shuffle=True, generator=gen, num_workers=workers, persistent=True)
    out = []
    for epoch in range(epochs):
        gen.manual_seed(100 + epoch)
        dataset.set_epoch(epoch)
        out.append([dict(b) for b in loader])
    return out


@pytest.mark.parametrize("mask", [True, False])
def test_resident_batches_equal_the_store_batches(store, mask: bool) -> None:
    store_view = _view(store, mask=mask)
    resident = ResidentSlices(_view(store, mask=mask))
    expected, got = _epochs(store_view, workers=1), _epochs(resident)
    assert len(expected) == len(got) == 3
    for e_epoch, g_epoch in zip(expected, got, strict=True):
        assert len(e_epoch) == len(g_epoch) == -(-len(resident) // 3) > 2
        for e, g in zip(e_epoch, g_epoch, strict=True):
            assert sorted(e) == sorted(g) and ("packed" in g) == mask and "aug" in g
            for key in e:
                assert e[key].dtype == g[key].dtype and torch.equal(e[key], g[key]), key
    # the augmentation draws change with the epoch (they are not frozen at load time)
    assert not torch.equal(got[0][0]["aug"], got[1][0]["aug"])
    # the finished batches are the same too (the device transform sees identical inputs)
    finish = resident.batch_transform
    assert torch.equal(finish(expected[2][1])["image"], finish(got[2][1])["image"])


def test_resident_items_and_memory(store) -> None:
    view = _view(store, mask=True, augment=None)
    resident = ResidentSlices(view)
    assert item_bytes(view) == SIDE * SIDE * 2 + 4 + 8  # packed int16 HU+mask, float32 label, int64 index
    assert resident.nbytes == resident_bytes(view) == len(view) * item_bytes(view)
    for i in (0, 7, -1):
        a, b = view[i], resident[i]
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resident.tensors["packed"].dtype == torch.int16 and "mask" not in resident.tensors
    with pytest.raises(IndexError):
        resident[len(view)]


def test_plan_keeps_what_fits_and_says_so(store) -> None:
    train, val = _view(store, mask=True), _view(store, mask=True, augment=None)
    need = resident_bytes(train)
    both = plan_resident({"train": train, "val": val}, budget_bytes=2 * need)
    assert both.resident == (True, True) and both.nbytes == 2 * need
    assert all(isinstance(v, ResidentSlices) for v in both.views)
    n = len(train)
    assert f"train {n} slices + val {n} slices" in both.message and "host memory" in both.message

    train_only = plan_resident({"train": train, "val": val}, budget_bytes=need + need // 2)
    assert train_only.resident == (True, False) and train_only.views[1] is val
    assert "from the store: val needs" in train_only.message

    off = plan_resident({"train": train, "val": val}, budget_bytes=need - 1)
    assert off.resident == (False, False) and off.views == (train, val) and off.nbytes == 0
    assert off.message.startswith("resident data off") and f"train needs {size_text(need)}" in off.message
    with pytest.raises(ValueError, match="host"):
        plan_resident({"train": train}, budget_bytes=GIB, where="ram")


@pytest.mark.gpu
def test_gpu_resident_and_pinned_batches_equal_the_store_batches(store) -> None:
    """On a GPU: batches gathered on the device, or into pinned host buffers, equal the store's."""
    expected = _epochs(_view(store, mask=True), epochs=2)
    for resident in (ResidentSlices(_view(store, mask=True), device="cuda"),
                     ResidentSlices(_view(store, mask=True), pin=True)):  # fmt: skip
        got = _epochs(resident, epochs=2)
        for e_epoch, g_epoch in zip(expected, got, strict=True):
            for e, g in zip(e_epoch, g_epoch, strict=True):
                assert all(torch.equal(e[k], g[k].cpu()) for k in e)
        assert resident.device.type == "cuda" or got[0][0]["packed"].is_pinned()

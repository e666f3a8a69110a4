"""Whole batches through the shared-memory ring (``data/ring.py``) equal the DataLoader's batches.

The compact view of a phantom store is loaded both ways with the same shuffling generator for several
epochs (persistent workers, a short last batch): the ring's batches must be the default-collated batches
of the same rows in the same order, with the epoch's augmentation draws. Catches: a slot overwritten
before the trial read it, rows of another batch, a lost epoch, a wrong last-batch length.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.phantom import generate
from dvt_search.data.ring import BatchRing, RingLoader
from dvt_search.data.schema import manifest_root, read_manifest
from dvt_search.engine.device import make_loader

SIDE = 32
AUG = Augment(hflip_p=0.5, rotation_deg=10, intensity_jitter_hu=20, noise_sd_hu=10)


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> CompactSlices:
    out = tmp_path_factory.mktemp("ring") / "ph"
    manifest = generate(out, patients=2, seed=4, size=SIDE, slices_per_scan=5, preset="easy")
    ds = SliceDataset(read_manifest(manifest), manifest_root(manifest), size=SIDE, augment=AUG, seed=2)
    return CompactSlices(ds, with_mask=True, patches=True)


def _epochs(
    loader, view: CompactSlices, gen: torch.Generator, epochs: int, lag: float = 0.0
) -> list[list[dict]]:
    """Every batch of ``epochs`` epochs, each copied only after the next batch was fetched and ``lag``
    seconds later (as the loop, whose device copy of a batch may still run when it fetches the next)."""
    out = []
    for epoch in range(epochs):
        gen.manual_seed(50 + epoch)
        view.set_epoch(epoch)
        batches, held = [], None
        for b in loader:
            if held is not None:
                time.sleep(lag)  # workers meanwhile fill the slots they are allowed to
                batches.append({k: v.clone() for k, v in held.items()})
            held = b
        batches.append({k: v.clone() for k, v in held.items()})
        out.append(batches)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_ring_batches_equal_the_dataloader_batches(view: CompactSlices, workers: int) -> None:
    batch = 4
    assert len(view) % batch != 0  # the last batch is short
    gen_r, gen_d = torch.Generator(), torch.Generator()
    ring = make_loader(
        view, batch, shuffle=True, generator=gen_r, num_workers=workers, persistent=True, ring=True
    )
    assert isinstance(ring, RingLoader) and len(ring) == -(-len(view) // batch)
    plain = DataLoader(view, batch_size=batch, sampler=RandomSampler(view, generator=gen_d), num_workers=0)
    got, expected = (
        _epochs(ring, view, gen_r, 3, lag=0.03 if workers else 0.0),
        _epochs(plain, view, gen_d, 3),
    )
    for g_epoch, e_epoch in zip(got, expected, strict=True):
        assert len(g_epoch) == len(e_epoch) == len(ring)
        for g, e in zip(g_epoch, e_epoch, strict=True):
            assert sorted(g) == sorted(e)
            for key in e:
                assert g[key].dtype == e[key].dtype and torch.equal(g[key], e[key]), key
    assert not torch.equal(got[0][0]["aug"], got[1][0]["aug"])  # each epoch's own draws
    assert got[0][-1]["packed"].shape[0] == len(view) % batch


def test_small_tensors_are_copies_and_pixels_are_views(view: CompactSlices) -> None:
    loader = make_loader(view, 4, shuffle=False, num_workers=1, ring=True)
    first = next(iter(loader))
    ring = loader.ring
    pixels = ring.tensors["packed"]
    assert first["packed"].data_ptr() == pixels[0].data_ptr()  # no copy of the pixels
    assert first["label"].data_ptr() != ring.tensors["label"][0].data_ptr()  # the label is kept safely
    assert pixels.is_shared() and ring.nbytes >= pixels.numel() * 2


def test_ring_checks_its_items() -> None:
    ring = BatchRing({"x": torch.zeros(2), "y": torch.zeros(1)}, batch_size=2, slots=2, pin=False)
    with pytest.raises(KeyError, match="lacks \\['y'\\]"):
        ring.fill(0, [{"x": torch.ones(2)}])
    with pytest.raises(ValueError, match="more than 2 items"):
        ring.fill(0, [{"x": torch.ones(2), "y": torch.ones(1)}] * 3)
    assert ring.fill(1, [{"x": torch.ones(2), "y": torch.full((1,), 5.0)}]) == 1
    assert ring.batch(1, 1)["y"].tolist() == [[5.0]]


def test_datasets_without_the_flag_keep_the_dataloader(view: CompactSlices) -> None:
    assert isinstance(make_loader(view.base, 4, shuffle=False, ring=True), DataLoader)
    assert isinstance(make_loader(view, 4, shuffle=False), DataLoader)  # holding batches stays safe


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_ring_feeds_the_gpu(view: CompactSlices) -> None:
    loader = make_loader(view, 3, shuffle=False, num_workers=1, pin_memory=True, persistent=True, ring=True)
    assert loader.ring.pinned and loader.ring.tensors["packed"].is_pinned()
    plain = DataLoader(view, batch_size=3, num_workers=0)
    for _ in range(2):
        for b, e in zip(loader, plain, strict=True):
            dev = {k: v.to("cuda", non_blocking=True) for k, v in b.items()}
            assert all(torch.equal(dev[k].cpu(), e[k]) for k in e)


def test_too_little_shared_memory_falls_back_to_the_dataloader(
    view: CompactSlices, monkeypatch, caplog
) -> None:
    import dvt_search.data.ring as ring_mod

    monkeypatch.setattr(ring_mod, "shm_free_bytes", lambda: 1024)
    with caplog.at_level("WARNING"):
        loader = make_loader(view, 4, shuffle=False, num_workers=1, ring=True)
    assert isinstance(loader, DataLoader) and "shared memory needed" in caplog.text
    assert sorted(next(iter(loader))) == sorted(view[0])
    # without workers the ring lives in ordinary memory: no shared memory is needed
    assert isinstance(make_loader(view, 4, shuffle=False, num_workers=0, ring=True), RingLoader)

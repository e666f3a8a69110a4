"""Compact batches finished on the device match the CPU reference items of ``SliceDataset``.

A phantom store (64^2 slices, real vessel edges and noise) is read both ways: the reference items
(``SliceDataset[i]``: resize, augment, window, patch targets on the CPU with OpenCV) and compact items
(``CompactSlices``: int16 HU + uint8 mask + augmentation draws) collated and finished by
``DeviceTransform`` on CPU tensors. Tolerances are the ones stated in ``data/device_transform.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices, to_int16_hu
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.phantom import generate
from dvt_search.data.schema import manifest_root, read_manifest

SIDE = 64
WINDOWS = ((40.0, 400.0), (80.0, 200.0))
FULL = Augment(
    hflip_p=0.5,
    rotation_deg=15,
    scale_range=(0.9, 1.1),
    translate_frac=0.05,
    intensity_jitter_hu=20,
    noise_sd_hu=10,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("devtf") / "ph"
    manifest = generate(out, patients=2, seed=5, size=SIDE, slices_per_scan=4, preset="easy")
    return read_manifest(manifest), manifest_root(manifest)


def both(store, size: int, augment: Augment | None, epoch: int = 0, patches: bool = True):
    df, root = store
    ref = SliceDataset(df, root, size=size, windows=WINDOWS, augment=augment, seed=7)
    compact = CompactSlices(
        SliceDataset(df, root, size=size, windows=WINDOWS, augment=augment, seed=7),
        with_mask=True,
        patches=patches,
    )
    ref.set_epoch(epoch)
    compact.set_epoch(epoch)
    n = len(ref)
    expected = default_collate([ref[i] for i in range(n)])
    got = compact.batch_transform(default_collate([compact[i] for i in range(n)]))
    return expected, got


@pytest.mark.parametrize("size", [SIDE, 32])
def test_windowing_and_integer_shrink_are_exact(store, size: int) -> None:
    expected, got = both(store, size, None)
    assert got["image"].shape == expected["image"].shape == (len(expected["label"]), 2, size, size)
    assert got["image"].dtype == torch.float32
    tol = 0.0 if size == SIDE else 1e-5  # area averages summed in another order
    torch.testing.assert_close(got["image"], expected["image"], atol=tol, rtol=0)
    torch.testing.assert_close(got["mask"], expected["mask"], atol=0, rtol=0)
    torch.testing.assert_close(got["patches"], expected["patches"], atol=0, rtol=0)
    torch.testing.assert_close(got["label"], expected["label"])
    assert "hu" not in got and "aug" not in got


@pytest.mark.parametrize("size", [48, 96])
def test_other_resizes_within_tolerance_and_masks_exact(store, size: int) -> None:
    expected, got = both(store, size, None)
    diff = (got["image"] - expected["image"]).abs()
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 0.05
    assert torch.equal(got["mask"], expected["mask"])
    assert torch.equal(got["patches"], expected["patches"])


@pytest.mark.parametrize("epoch", [0, 3])
def test_augmentation_matches_the_reference_draws(store, epoch: int) -> None:
    expected, got = both(store, SIDE, FULL, epoch=epoch)
    diff = (got["image"] - expected["image"]).abs()
    assert float(diff.mean()) < 0.01, float(diff.mean())
    agree = float((got["mask"] == expected["mask"]).float().mean())
    assert agree >= 0.99, agree
    # a wrong draw (other epoch) is far off: the tolerance separates right from wrong
    _, other = both(store, SIDE, FULL, epoch=epoch + 1)
    assert float((other["image"] - expected["image"]).abs().mean()) > 5 * float(diff.mean())


def test_jitter_and_noise_alone_are_exact(store) -> None:
    expected, got = both(store, SIDE, Augment(intensity_jitter_hu=30, noise_sd_hu=12), epoch=2)
    torch.testing.assert_close(got["image"], expected["image"], atol=1e-6, rtol=0)
    assert torch.equal(got["mask"], expected["mask"])


def test_items_are_compact_and_masks_only_when_asked(store) -> None:
    df, root = store
    base = SliceDataset(df, root, size=SIDE, windows=WINDOWS, augment=FULL)
    lean = CompactSlices(base, with_mask=False)
    item = lean[0]
    assert set(item) == {"hu", "label", "index", "aug"}
    assert item["hu"].dtype == torch.int16 and item["hu"].shape == (1, SIDE, SIDE)
    batch = lean.batch_transform(default_collate([lean[0], lean[1]]))
    assert set(batch) == {"image", "label", "index"}
    full = CompactSlices(base, with_mask=True, pack=False)
    assert full[0]["mask"].dtype == torch.uint8
    with pytest.raises(ValueError, match="needs with_mask"):
        CompactSlices(base, with_mask=False, patches=True)


def test_int16_conversion_clips_and_fills_non_finite() -> None:
    hu = np.array([[np.nan, np.inf, -np.inf, 1e6], [-1e6, 12.4, 12.6, -0.5]], np.float32)
    assert to_int16_hu(hu).tolist() == [[-1000, 3071, -1024, 32767], [-32768, 12, 13, 0]]


def test_persistent_workers_augment_each_epoch_like_fresh_ones(store) -> None:
    """Epoch e through persistent workers equals epoch e through workers started for it alone."""
    df, root = store
    compact = CompactSlices(SliceDataset(df, root, size=SIDE, augment=FULL, seed=1), with_mask=True)

    def loader(persistent: bool) -> DataLoader:
        return DataLoader(compact, batch_size=4, num_workers=1, persistent_workers=persistent)

    persistent = loader(True)
    firsts = []
    for epoch in range(3):
        compact.set_epoch(epoch)
        kept = [b["aug"] for b in persistent]
        fresh = [b["aug"] for b in loader(False)]
        assert all(torch.equal(a, b) for a, b in zip(kept, fresh, strict=True))
        firsts.append(kept[0])
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])

"""HU and mask packed in one 16-bit word (``data/compact.py``), unpacked on the device (``DeviceTransform``).

Stated agreement: a packed batch finishes to exactly the batch of the unpacked ``hu`` + ``mask`` form when
the stored HU lie in [-1024, 3071] (every step after the unpack is the same code on the same values); with
HU outside that range, un-interpolated pixels (stored size, no warp) still window exactly as the CPU
reference, since every window of a packable run lies inside the range.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from dvt_search.data.augment import Augment
from dvt_search.data.compact import MASK_BIT, PACK_HU_RANGE, CompactSlices, pack, packable
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.device_transform import unpack
from dvt_search.data.phantom import generate
from dvt_search.data.schema import manifest_root, read_manifest, resolve

SIDE = 32
WINDOWS = ((40.0, 400.0), (400.0, 1800.0))
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
    out = tmp_path_factory.mktemp("pack") / "ph"
    manifest = generate(out, patients=2, seed=9, size=SIDE, slices_per_scan=4, preset="easy")
    return read_manifest(manifest), manifest_root(manifest)


@pytest.fixture(scope="module")
def wide_store(store, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """The phantom with HU outside the 12-bit range: -3024 padding in a corner, 4000 HU metal."""
    df, root = store
    out = tmp_path_factory.mktemp("pack-wide") / "ph"
    shutil.copytree(root, out)
    for rel in sorted(set(df["image_path"])):
        path = resolve(out, rel)
        vol = np.load(path)
        vol[:, :6, :6] = -3024
        vol[:, 20:23, 10:13] = 4000
        np.save(path, vol)
    return df, out


def finished(store, *, packed: bool, augment: Augment | None, size: int = SIDE, k: int = 0, epoch: int = 0):
    df, root = store
    ds = SliceDataset(df, root, size=size, windows=WINDOWS, augment=augment, seed=3, context_slices=k)
    view = CompactSlices(ds, with_mask=True, patches=True, pack=packed)
    view.set_epoch(epoch)
    raw = default_collate([view[i] for i in range(len(view))])
    return raw, view.batch_transform(raw)


def test_pack_unpack_round_trip_and_clip() -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3072, size=(3, 8, 8)).astype(np.int16)
    hu[0, 0, :4] = [-3024, -1025, 3072, 32767]
    mask = rng.integers(0, 2, size=(1, 8, 8)).astype(np.uint8)
    word = pack(hu, mask, centre=1)
    assert word.dtype == np.int16 and word.shape == hu.shape
    got_hu, got_mask = unpack(torch.from_numpy(word)[None], centre=1)
    lo, hi = PACK_HU_RANGE
    np.testing.assert_array_equal(got_hu[0].numpy(), np.clip(hu, lo, hi).astype(np.float32))
    np.testing.assert_array_equal(got_mask[0].numpy(), mask.astype(np.float32))
    # the mask bit sits in the centre slice only
    assert not (word[[0, 2]] & MASK_BIT).any() and ((word[1] & MASK_BIT) > 0).sum() == mask.sum()


@pytest.mark.parametrize("augment, epoch", [(None, 0), (FULL, 0), (FULL, 2)])
def test_packed_batches_finish_exactly_as_unpacked_ones(store, augment: Augment | None, epoch: int) -> None:
    raw_p, got = finished(store, packed=True, augment=augment, epoch=epoch)
    raw_u, expected = finished(store, packed=False, augment=augment, epoch=epoch)
    assert set(raw_p) >= {"packed", "label", "index"} and "hu" not in raw_p and "mask" not in raw_p
    assert raw_p["packed"].dtype == torch.int16
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert float(expected["mask"].sum()) > 0  # the phantom has veins: the mask bit is exercised


@pytest.mark.parametrize("size", [SIDE, 16])
def test_packed_context_batches_finish_exactly_as_unpacked_ones(store, size: int) -> None:
    _, got = finished(store, packed=True, augment=FULL, size=size, k=1, epoch=1)
    _, expected = finished(store, packed=False, augment=FULL, size=size, k=1, epoch=1)
    assert got["image"].shape[1] == 3 * len(WINDOWS)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_out_of_range_hu_is_clipped_without_changing_a_windowed_pixel(wide_store) -> None:
    df, root = wide_store
    ref = SliceDataset(df, root, size=SIDE, windows=WINDOWS)
    expected = default_collate([ref[i] for i in range(len(ref))])
    raw, got = finished(wide_store, packed=True, augment=None)
    assert int(raw["packed"].min()) == 0  # -3024 was clipped to -1024 (0 in the word)
    torch.testing.assert_close(got["image"], expected["image"], atol=0, rtol=0)
    torch.testing.assert_close(got["mask"], expected["mask"], atol=0, rtol=0)


def test_windows_outside_the_range_ship_unpacked_and_say_why(store) -> None:
    df, root = store
    wide = SliceDataset(df, root, size=SIDE, windows=((2900.0, 400.0),))
    view = CompactSlices(wide, with_mask=True)
    assert not view.packed and "2700..3100 HU" in view.pack_note
    assert {"hu", "mask"} <= set(view[0]) and "packed" not in view[0]
    with pytest.raises(ValueError, match="cannot pack"):
        CompactSlices(wide, with_mask=True, pack=True)
    # the augmentation's intensity reach counts: inside the range alone, outside with jitter
    assert packable(((2900.0, 200.0),), None, SIDE)[0]
    ok, why = packable(((2900.0, 200.0),), Augment(intensity_jitter_hu=100), SIDE)
    assert not ok and "augmentation" in why
    # a family without a mask ships plain int16 HU (2 bytes per pixel already)
    lean = CompactSlices(SliceDataset(df, root, size=SIDE), with_mask=False)
    assert not lean.packed and set(lean[0]) == {"hu", "label", "index"}


def test_packed_item_is_two_bytes_per_pixel(store) -> None:
    df, root = store
    view = CompactSlices(SliceDataset(df, root, size=SIDE), with_mask=True, patches=True)
    item = view[0]
    assert view.packed
    pixels = sum(v.numel() * v.element_size() for k, v in item.items() if k not in ("label", "index"))
    assert pixels == 2 * SIDE * SIDE

"""SliceDataset, HU windowing and augmentation on tiny .npy volume stores built in tmp_path."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from dvt_search.data.augment import Augment, augment_rng
from dvt_search.data.dataset import SliceDataset, build_datasets, resize_mask, spec_for
from dvt_search.data.io import SliceReadError, clear_cache
from dvt_search.data.schema import patches_from_mask, read_manifest, write_manifest
from dvt_search.data.splits import SplitsError, make_splits
from dvt_search.data.windowing import PRESETS, multi_window, parse_windows, window

BG_HU, SQUARE_HU = -200, 300  # window (50, 500) maps these to exactly 0 and 1
EDGE = (50.0, 500.0)


def make_store(tmp_path, *, patients=6, slices=4, side=64, float_volumes=False, seed=0):
    """A dataset dir: one scan per patient, each slice a bright square exactly where the mask is."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        scan = f"scan{p}"
        vol = np.full((slices, side, side), BG_HU, np.float32 if float_volumes else np.int16)
        mask = np.zeros((slices, side, side), np.uint8)
        for z in range(slices):
            r, c = rng.integers(4, side // 2, size=2)
            h, w = rng.integers(side // 5, side // 3, size=2)
            mask[z, r : r + h, c : c + w] = 1
            vol[z][mask[z] == 1] = SQUARE_HU
        d = tmp_path / "volumes" / scan
        d.mkdir(parents=True)
        np.save(d / "image.npy", vol)
        np.save(d / "mask.npy", mask)
        for z in range(slices):
            patches = patches_from_mask(mask[z])
            rows.append(
                {
                    "patient_id": f"P{p}",
                    "study_id": f"P{p}-st",
                    "scan_id": scan,
                    "slice_index": z,
                    "image_path": f"volumes/{scan}/image.npy",
                    "image_index": z,
                    "mask_path": f"volumes/{scan}/mask.npy",
                    "mask_index": z,
                    "label": int((p + z) % 3 == 0),
                    "anatomy": "femoral",
                    "spacing_row_mm": 0.8,
                    "spacing_col_mm": 0.8,
                    "slice_thickness_mm": 2.5,
                    "height": side,
                    "width": side,
                    "patch_rows": patches.shape[0],
                    "patch_cols": patches.shape[1],
                    "patches": patches.ravel(),
                    "source": "npy",
                }
            )
    clear_cache()
    return write_manifest(pd.DataFrame(rows), tmp_path / "manifest.parquet")


@pytest.fixture
def store(tmp_path):
    path = make_store(tmp_path)
    return path, read_manifest(path)


def raw(root, df, i):
    row = df.iloc[i]
    return (
        np.load(root / row["image_path"])[row["image_index"]],
        np.load(root / row["mask_path"])[row["mask_index"]],
    )


def test_window_math_by_hand():
    hu = np.array([-1000, -160, -60, 40, 140, 240, 3000], dtype=np.int16)
    assert np.allclose(window(hu, 40, 400), [0, 0, 0.25, 0.5, 0.75, 1, 1])
    assert window(hu, 40, 400).dtype == np.float32
    assert np.allclose(
        window(np.array([30.0, 90.0, np.nan, -np.inf, np.inf]), *PRESETS["venous"]), [0.25, 0.55, 0, 0, 1]
    )
    stacked = multi_window(hu.reshape(1, -1), [(40, 400), (80, 200)])
    assert stacked.shape == (2, 1, 7) and np.allclose(stacked[1, 0, 2:5], [0, 0.3, 0.8])
    assert parse_windows(["soft_tissue", (80, 200)]) == ((40.0, 400.0), (80.0, 200.0))
    for bad in (["lung?"], [(40, 0)], [(1, 2, 3)], []):
        with pytest.raises(ValueError):
            parse_windows(bad)


def test_item_shapes_dtypes_ranges(store):
    path, df = store
    ds = SliceDataset(df, path.parent, size=64, windows=((40, 400), (80, 200)))
    item = ds[3]
    assert item["image"].shape == (2, 64, 64) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, 64, 64) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["patches"].shape == (1, 2, 2) and item["patches"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].item() == df.loc[3, "label"]
    assert item["index"].dtype == torch.int64 and item["index"].item() == 3
    hu, mask = raw(path.parent, df, 3)
    assert np.allclose(item["image"].numpy(), multi_window(hu, ((40, 400), (80, 200))))
    assert np.array_equal(item["mask"][0].numpy(), mask)
    assert np.array_equal(item["patches"][0].numpy(), np.asarray(df.loc[3, "patches"]).reshape(2, 2))
    assert len(ds) == len(df) and ds[-1]["index"].item() == len(df) - 1
    with pytest.raises(IndexError):
        ds[len(df)]
    assert list(ds.labels) == list(df["label"]) and ds.scan_ids[0] == "scan0" and ds.patient_ids[0] == "P0"


def test_downsizing_keeps_thin_veins_and_patches(store):
    path, df = store
    thin = np.zeros((64, 64), np.uint8)
    thin[10:50, 37] = 1  # one pixel wide
    small = resize_mask(thin, 16)
    assert small[3:12, 9].all() and small.sum() == np.count_nonzero(small[:, 9])
    ds = SliceDataset(df, path.parent, size=32)
    item = ds[0]
    assert item["image"].shape == (1, 32, 32)
    assert np.array_equal(item["patches"][0].numpy(), patches_from_mask(item["mask"][0].numpy()))
    _, mask = raw(path.parent, df, 0)
    assert item["mask"].sum() >= mask.sum() / 4  # any-coverage never loses area


def test_nan_pixels_are_guarded(tmp_path):
    path = make_store(tmp_path, patients=3, slices=2, float_volumes=True)
    vol = np.load(tmp_path / "volumes/scan0/image.npy")
    vol[0, :5, :5] = np.nan
    vol[0, 5, 5] = np.inf
    np.save(tmp_path / "volumes/scan0/image.npy", vol)
    clear_cache()
    ds = SliceDataset(read_manifest(path), tmp_path, size=32, augment=Augment(rotation_deg=20))
    img = ds[0]["image"]
    assert torch.isfinite(img).all() and img[0, :2, :2].eq(0).all()


AUGMENTS = {
    "hflip": Augment(hflip_p=1.0),
    "rotate": Augment(rotation_deg=40),
    "scale": Augment(scale_range=(0.7, 1.3)),
    "translate": Augment(translate_frac=0.15),
    "all": Augment(
        hflip_p=0.5,
        rotation_deg=30,
        scale_range=(0.8, 1.2),
        translate_frac=0.1,
        intensity_jitter_hu=20,
        noise_sd_hu=10,
    ),
}


@pytest.mark.parametrize("name", list(AUGMENTS))
def test_augmentation_keeps_image_mask_patches_aligned(store, name):
    path, df = store
    ds = SliceDataset(df, path.parent, size=64, windows=(EDGE,), augment=AUGMENTS[name], seed=7)
    changed = 0
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        for i in range(0, len(ds), 3):
            item = ds[i]
            bright = item["image"][0].numpy() > 0.5
            mask = item["mask"][0].numpy() > 0.5
            iou = (bright & mask).sum() / max((bright | mask).sum(), 1)
            assert iou > 0.9, f"{name} epoch {epoch} item {i}: IoU {iou:.3f}"
            assert np.array_equal(item["patches"][0].numpy(), patches_from_mask(mask))
            changed += not np.array_equal(mask, raw(path.parent, df, i)[1])
    assert changed > 0  # the transform really moved the masks


def test_hflip_is_an_exact_mirror(store):
    path, df = store
    plain = SliceDataset(df, path.parent, size=64)[2]
    flipped = SliceDataset(df, path.parent, size=64, augment=Augment(hflip_p=1.0))[2]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))


def test_augmentation_deterministic_per_seed_epoch_index(store):
    path, df = store
    aug = AUGMENTS["all"]
    a = SliceDataset(df, path.parent, size=64, augment=aug, seed=3)
    b = SliceDataset(df, path.parent, size=64, augment=aug, seed=3)
    c = SliceDataset(df, path.parent, size=64, augment=aug, seed=4)
    for ds in (a, b, c):
        ds.set_epoch(5)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    assert not all(torch.equal(a[i]["image"], c[i]["image"]) for i in range(len(a)))
    before = [a[i]["image"] for i in range(len(a))]
    a.set_epoch(6)
    assert not any(torch.equal(before[i], a[i]["image"]) for i in range(len(a)))
    a.set_epoch(5)
    assert all(torch.equal(before[i], a[i]["image"]) for i in range(len(a)))
    m1, m2 = aug.matrix(augment_rng(1, 2, 3), 64, 64), aug.matrix(augment_rng(1, 2, 3), 64, 64)
    assert np.array_equal(m1, m2)


def test_intensity_jitter_and_noise_statistics():
    hu = np.full((64, 64), 40.0, np.float32)
    mask = np.zeros((64, 64), np.uint8)
    jit = [Augment(intensity_jitter_hu=25)(hu, mask, augment_rng(0, 0, i))[0] for i in range(20)]
    shifts = np.array([j[0, 0] - 40.0 for j in jit])
    assert all(np.ptp(j) == 0 for j in jit) and np.abs(shifts).max() <= 25 and shifts.std() > 5
    noisy = [Augment(noise_sd_hu=10)(hu, mask, augment_rng(0, 0, i))[0] for i in range(4)]
    for n in noisy:
        assert abs(n.mean() - 40.0) < 1.0 and 9.0 < n.std() < 11.0
    assert abs(np.corrcoef(noisy[0].ravel(), noisy[1].ravel())[0, 1]) < 0.2
    assert np.array_equal(hu, np.full((64, 64), 40.0, np.float32))  # input untouched


def test_identity_augment_is_no_augment(store):
    path, df = store
    assert Augment().is_identity and not Augment(noise_sd_hu=1).is_identity
    ds = SliceDataset(df, path.parent, size=64, augment=Augment())
    assert ds.augment is None
    ds.set_epoch(9)
    assert torch.equal(ds[1]["image"], SliceDataset(df, path.parent, size=64)[1]["image"])
    with pytest.raises(ValueError, match="scale_range"):
        Augment(scale_range=(1.2, 0.9))
    with pytest.raises(KeyError, match="vflip"):
        Augment.from_dict({"vflip": 0.5})
    assert Augment.from_dict(AUGMENTS["all"].to_dict()) == AUGMENTS["all"]


def test_dataloader_workers_match_single_process(store):
    path, df = store
    ds = SliceDataset(
        df, path.parent, size=32, windows=("soft_tissue", "venous"), augment=AUGMENTS["all"], seed=1
    )
    ds.set_epoch(2)
    pickle.loads(pickle.dumps(ds))  # picklable, no open handles
    batches0 = list(DataLoader(ds, batch_size=4, num_workers=0))
    batches2 = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(batches0) == len(batches2) == 6
    for x, y in zip(batches0, batches2):
        for key in ("image", "mask", "patches", "label", "index"):
            assert torch.equal(x[key], y[key]), key


def test_window_u8_cache_key_and_spec(store):
    path, df = store
    ds = SliceDataset(df, path.parent, size=64, windows=((40, 400), (80, 200)), augment=Augment(hflip_p=1.0))
    u8 = ds.window_u8(1)
    hu, mask = raw(path.parent, df, 1)
    assert u8.dtype == np.uint8 and u8.shape == (64, 64)
    assert np.array_equal(u8, np.rint(window(hu, 40, 400) * 255).astype(np.uint8))  # never augmented
    same = SliceDataset(df.copy(), path.parent, size=64, windows=((40, 400), (80, 200)))
    assert ds.cache_key == same.cache_key
    assert ds.cache_key != SliceDataset(df, path.parent, size=32, windows=((40, 400), (80, 200))).cache_key
    assert ds.cache_key != SliceDataset(df, path.parent, size=64).cache_key
    assert ds.cache_key != SliceDataset(df.iloc[1:], path.parent, size=64, windows=ds.windows).cache_key
    spec = spec_for(ds, max_masks=1000)
    masks = np.stack([raw(path.parent, df, i)[1] for i in range(len(df))])
    assert spec.pos_fraction == pytest.approx(df["label"].mean())
    assert spec.vein_fraction == pytest.approx(masks.mean())
    assert spec.image_size == 64 and spec.in_channels == 2
    assert 0 < spec_for(ds, max_masks=3).vein_fraction < 1


def test_build_datasets_from_manifest_and_splits(tmp_path):
    path = make_store(tmp_path, patients=8, slices=3)
    df = read_manifest(path)
    splits_path = make_splits(df, seed=0).save(tmp_path / "splits.json")
    aug = Augment(rotation_deg=10)
    sets = build_datasets(path, splits_path, size=32, windows=((40, 400),), augment=aug, seed=2)
    assert set(sets) == {"train", "val", "test"}
    assert sum(len(d) for d in sets.values()) == len(df)
    assert sets["train"].augment == aug and sets["val"].augment is None and sets["test"].augment is None
    patients = [set(d.patient_ids) for d in sets.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert sets["val"][0]["image"].shape == (1, 32, 32)
    cv = make_splits(df, seed=0, kfold=3)
    f1 = build_datasets(path, cv.save(tmp_path / "cv.json"), size=32, fold=1)
    assert set(f1["val"].scan_ids) == set(cv.folds[1]) and set(f1["train"].scan_ids) == set(cv.fold(1)[0])
    other = df.copy()
    other.loc[0, "label"] = 1 - other.loc[0, "label"]
    other_path = write_manifest(other, tmp_path / "other.parquet")
    with pytest.raises(SplitsError, match="fingerprint"):
        build_datasets(other_path, splits_path, size=32)


def test_shape_mismatch_names_the_row(tmp_path):
    path = make_store(tmp_path, patients=3, slices=2)
    np.save(tmp_path / "volumes/scan1/mask.npy", np.zeros((2, 32, 32), np.uint8))
    clear_cache()
    ds = SliceDataset(read_manifest(path), tmp_path, size=32)
    with pytest.raises(SliceReadError, match="row 2 .*scan1"):
        ds[2]

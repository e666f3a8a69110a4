"""Splits: patient-disjoint paper percentile rule, persistence with hashes, k-fold, anatomy filter."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dvt_search.data.schema import read_manifest, write_manifest
from dvt_search.data.splits import (
    SPLITS_FORMAT,
    SplitsError,
    format_summary,
    load_splits,
    make_splits,
    manifest_fingerprint,
    summarize,
)


def scans_frame(slices: dict[tuple[str, str], int], anatomy: dict[str, str] | None = None, seed: int = 0):
    """Minimal manifest frame from {(patient, scan): slice count}; labels random, anatomy femoral unless given."""
    rng = np.random.default_rng(seed)
    keys = list(slices)
    counts = np.array([slices[k] for k in keys])
    pids = np.repeat([p for p, _ in keys], counts)
    sids = np.repeat([s for _, s in keys], counts)
    return pd.DataFrame(
        {
            "patient_id": pids,
            "study_id": np.char.add(pids.astype(str), "-st"),
            "scan_id": sids,
            "slice_index": np.concatenate([np.arange(n, dtype=np.int32) for n in counts]),
            "label": (rng.random(counts.sum()) < 0.2).astype(np.int8),
            "anatomy": [(anatomy or {}).get(s, "femoral") for s in sids],
        }
    )


def paper_like(seed: int) -> pd.DataFrame:
    """~76 patients, ~460 scans, right-skewed slice counts (~64 mean) correlated within a patient."""
    rng = np.random.default_rng(seed)
    slices = {}
    for p in range(76):
        effect = rng.normal(0.0, 0.75)
        for s in range(1 + rng.poisson(5.05)):
            n = np.exp(np.log(28.0) + effect + rng.normal(0.0, 1.1))
            slices[(f"P{p:03d}", f"P{p:03d}-C{s:02d}")] = int(np.clip(n, 5, 2000))
    return scans_frame(slices, seed=seed)


def band_scans(df: pd.DataFrame, q=(1 / 3, 2 / 3)) -> set[str]:
    """Band of distinct slice counts computed independently of the module (no ties to break)."""
    counts = df.groupby("scan_id").size().sort_values()
    assert counts.is_unique
    n = len(counts)
    return set(counts.index[round(q[0] * n) : round(q[1] * n)])


def patients_of(df: pd.DataFrame, scan_ids) -> set[str]:
    return set(df.loc[df["scan_id"].isin(set(scan_ids)), "patient_id"])


def assert_patient_disjoint(df, splits):
    sets = [patients_of(df, splits.partitions[p]) for p in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_like_partitions_are_patient_disjoint_with_paper_fractions(seed):
    df = paper_like(seed)
    splits = make_splits(df, seed=seed)
    assert_patient_disjoint(df, splits)
    all_ids = [s for p in ("train", "val", "test") for s in splits.partitions[p]]
    assert sorted(all_ids) == sorted(df["scan_id"].unique())
    frame = summarize(df, splits)
    print(f"\nseed {seed}: {df['scan_id'].nunique()} scans, {len(df)} slices\n{format_summary(frame)}")
    fr = frame["slice_fraction"]
    assert 0.76 <= fr["train"] <= 0.88
    assert 0.05 <= fr["val"] <= 0.12 and 0.05 <= fr["test"] <= 0.12
    assert abs(fr["val"] - fr["test"]) < 0.02
    # val/test lean on the percentile band far more than training does
    band_share = frame["band_scans"] / frame["scans"]
    assert min(band_share["val"], band_share["test"]) > 1.4 * band_share["train"]


def test_one_scan_per_patient_val_test_are_exactly_the_band():
    rng = np.random.default_rng(3)
    counts = rng.permutation(np.arange(20, 80))  # 60 single-scan patients, distinct slice counts
    df = scans_frame({(f"P{i}", f"S{i}"): int(n) for i, n in enumerate(counts)})
    splits = make_splits(df, seed=5)
    held = set(splits.partitions["val"]) | set(splits.partitions["test"])
    assert held == band_scans(df)
    assert splits.partitions["val"] and splits.partitions["test"]


def test_whole_patients_move_together():
    # patient A has a band scan and two far-out scans: all three land in the same partition
    slices = {(f"P{i}", f"S{i}"): 40 + i for i in range(30)}
    slices.update({("A", "A-band"): 55, ("A", "A-small"): 3, ("A", "A-huge"): 900})
    df = scans_frame(slices)
    for seed in range(5):
        splits = make_splits(df, seed=seed)
        assert len({splits.partition_of(s) for s in ("A-band", "A-small", "A-huge")}) == 1
        assert_patient_disjoint(df, splits)


def test_same_seed_same_split_and_hash_other_seed_differs(tmp_path):
    df = paper_like(0)
    a, b, c = make_splits(df, seed=11), make_splits(df, seed=11), make_splits(df, seed=12)
    assert a.to_dict() == b.to_dict() and a.hash == b.hash
    assert c.hash != a.hash
    path = a.save(tmp_path / "splits.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == SPLITS_FORMAT and doc["hash"] == a.hash and doc["rule"] == "paper-percentile"
    assert all(doc["partitions"][p] == sorted(doc["partitions"][p]) for p in ("train", "val", "test"))
    loaded = load_splits(path, manifest_df=df)
    assert loaded == a and loaded.hash == a.hash
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_load_rejects_tampered_file_naming_it(tmp_path):
    df = paper_like(1)
    path = make_splits(df, seed=0).save(tmp_path / "splits.json")
    doc = json.loads(path.read_text())
    moved = doc["partitions"]["test"].pop()
    doc["partitions"]["train"] = sorted([*doc["partitions"]["train"], moved])
    path.write_text(json.dumps(doc))
    with pytest.raises(SplitsError, match="hash mismatch") as err:
        load_splits(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "cannot read"), ('{"format": "other/9"}', "format"), ("[1, 2]", "format")],
)
def test_load_rejects_malformed_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SplitsError, match=match):
        load_splits(path)


def test_load_rejects_other_manifest(tmp_path):
    df = paper_like(2)
    path = make_splits(df, seed=0).save(tmp_path / "splits.json")
    load_splits(path, manifest_df=df.sample(frac=1.0, random_state=0))  # row order does not matter
    changed = df.copy()
    changed.loc[10, "label"] = 1 - changed.loc[10, "label"]
    with pytest.raises(SplitsError, match="fingerprint mismatch") as err:
        load_splits(path, manifest_df=changed)
    assert "splits.json" in str(err.value)


def test_fingerprint_agrees_between_csv_and_parquet(tmp_path):
    df = scans_frame({("P1", "S1"): 3, ("P2", "S2"): 4})
    df = df.assign(
        image_path="volumes/x/image.npy",
        image_index=df["slice_index"],
        mask_path="volumes/x/mask.npy",
        mask_index=df["slice_index"],
        spacing_row_mm=0.8,
        spacing_col_mm=0.8,
        slice_thickness_mm=2.5,
        height=64,
        width=64,
        patch_rows=2,
        patch_cols=2,
        patches=[np.zeros(4, np.uint8)] * len(df),
        source="npy",
    )
    a = read_manifest(write_manifest(df, tmp_path / "m.parquet"))
    b = read_manifest(write_manifest(df, tmp_path / "m.csv"))
    assert manifest_fingerprint(a) == manifest_fingerprint(b) == manifest_fingerprint(df)
    assert manifest_fingerprint(df.assign(anatomy="iliac")) != manifest_fingerprint(df)


def test_kfold_folds_are_patient_disjoint_balanced_and_cover_train_val():
    df = paper_like(4)
    plain = make_splits(df, seed=3)
    cv = make_splits(df, seed=3, kfold=5)
    assert cv.rule == "kfold" and len(cv.folds) == 5
    assert cv.partitions["test"] == plain.partitions["test"]
    fold_patients = [patients_of(df, f) for f in cv.folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not fold_patients[i] & fold_patients[j]
    flat = sorted(s for f in cv.folds for s in f)
    assert flat == sorted([*cv.partitions["train"], *cv.partitions["val"]])
    assert not set(flat) & set(cv.partitions["test"])
    sizes = [int(df["scan_id"].isin(set(f)).sum()) for f in cv.folds]
    assert max(sizes) < 1.15 * min(sizes)
    train, val = cv.fold(2)
    assert set(val) == set(cv.folds[2]) and set(train) | set(val) == set(flat) and not set(train) & set(val)
    assert cv.fold(0) == (cv.partitions["train"], cv.partitions["val"])
    with pytest.raises(SplitsError, match="out of range"):
        cv.fold(5)
    with pytest.raises(SplitsError, match="no folds"):
        plain.fold(0)


def test_kfold_roundtrip_and_too_many_folds(tmp_path):
    df = scans_frame({(f"P{i}", f"S{i}"): 10 + i for i in range(8)})
    cv = make_splits(df, seed=0, kfold=3)
    assert load_splits(cv.save(tmp_path / "s.json"), manifest_df=df) == cv
    with pytest.raises(SplitsError, match="kfold=20"):
        make_splits(df, seed=0, kfold=20)


def test_anatomy_filter():
    slices = {(f"P{i}", f"S{i}-{a}"): 20 + i for i in range(12) for a in ("fem", "ili")}
    anatomy = {sid: ("femoral" if sid.endswith("fem") else "iliac") for _, sid in slices}
    df = scans_frame(slices, anatomy=anatomy)
    for choice, suffixes in (("femoral", {"fem"}), ("iliac", {"ili"}), ("both", {"fem", "ili"})):
        splits = make_splits(df, seed=1, anatomy=choice)
        ids = [s for p in ("train", "val", "test") for s in splits.partitions[p]]
        assert {s.split("-")[1] for s in ids} == suffixes and len(ids) == 12 * len(suffixes)
        rows = pd.concat([splits.select(df, p) for p in ("train", "val", "test")])
        assert (
            set(rows["anatomy"]) == {anatomy[s] for s in ids} and len(rows) == df["scan_id"].isin(ids).sum()
        )
        assert_patient_disjoint(df, splits)
    with pytest.raises(KeyError, match="no partition"):
        make_splits(df, anatomy="femoral").partition_of("S0-ili")
    with pytest.raises(SplitsError, match="unknown anatomy"):
        make_splits(df, anatomy="knee")


def test_rejects_degenerate_inputs():
    two = scans_frame({("P1", "S1"): 5, ("P2", "S2"): 6})
    with pytest.raises(SplitsError, match="at least 3 patients"):
        make_splits(two)
    with pytest.raises(SplitsError, match="no rows of anatomy"):
        make_splits(two, anatomy="iliac")
    df = scans_frame({(f"P{i}", f"S{i}"): 5 for i in range(6)})
    with pytest.raises(SplitsError, match="quantiles"):
        make_splits(df, quantiles=(0.7, 0.3))
    shared = pd.concat([df, df.iloc[:1].assign(patient_id="P9")], ignore_index=True)
    with pytest.raises(SplitsError, match="more than one patient"):
        make_splits(shared)


def test_equal_slice_counts_still_give_three_partitions():
    df = scans_frame({(f"P{i}", f"S{i}"): 64 for i in range(12)})  # phantom-like: every scan 64 slices
    frame = summarize(df, make_splits(df, seed=0))
    assert list(frame["scans"]) == [8, 2, 2]


def test_summary_counts_and_class_balance():
    df = paper_like(5)
    splits = make_splits(df, seed=0)
    frame = summarize(df, splits)
    assert frame["slices"].sum() == len(df) and frame["positives"].sum() == df["label"].sum()
    test_rows = splits.select(df, "test")
    assert frame.loc["test", "pos_fraction"] == pytest.approx(test_rows["label"].mean())
    assert frame.loc["test", "patients"] == test_rows["patient_id"].nunique()
    assert frame["slice_fraction"].sum() == pytest.approx(1.0)
    text = format_summary(frame)
    assert all(name in text for name in ("train", "val", "test", "total"))

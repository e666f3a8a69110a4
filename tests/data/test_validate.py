"""`validate_manifest`: one test per kind of bad input, on a tiny .npy dataset built in each test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvt_search.data import io, schema
from dvt_search.data.splits import manifest_fingerprint
from dvt_search.data.validate import RowError, validate_manifest

SIZE = 40  # not a multiple of 32: the patch grid has a partial edge block (2x2)


def make_dataset(root: Path, *, scans: int = 2, slices: int = 3, float_images: bool = False) -> pd.DataFrame:
    """A valid dataset in the contract layout: two patients, one scan each, vein blobs in every mask."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(scans):
        scan = f"scan{s}"
        vol_dir = root / "volumes" / scan
        vol_dir.mkdir(parents=True)
        image = rng.integers(-1000, 1000, size=(slices, SIZE, SIZE)).astype(
            np.float32 if float_images else np.int16
        )
        mask = np.zeros((slices, SIZE, SIZE), dtype=np.uint8)
        for z in range(slices):
            mask[z, 5 + z : 9 + z, 30:36] = 1
        np.save(vol_dir / "image.npy", image)
        np.save(vol_dir / "mask.npy", mask)
        for z in range(slices):
            rows.append(
                dict(
                    patient_id=f"P{s}",
                    study_id=f"st{s}",
                    scan_id=scan,
                    slice_index=z,
                    image_path=f"volumes/{scan}/image.npy",
                    image_index=z,
                    mask_path=f"volumes/{scan}/mask.npy",
                    mask_index=z,
                    label=z % 2,
                    anatomy="femoral",
                    spacing_row_mm=0.8,
                    spacing_col_mm=0.8,
                    slice_thickness_mm=2.5,
                    height=SIZE,
                    width=SIZE,
                    patch_rows=2,
                    patch_cols=2,
                    patches=schema.patches_from_mask(mask[z]).ravel(),
                    source="npy",
                )
            )
    io.clear_cache()
    return pd.DataFrame(rows)


@pytest.fixture()
def ds(tmp_path: Path) -> pd.DataFrame:
    return make_dataset(tmp_path)


def write(df: pd.DataFrame, path: Path) -> Path:
    return schema.write_manifest(df, path)


def write_csv_raw(df: pd.DataFrame, path: Path) -> Path:
    """CSV with whatever values the frame holds (bypasses schema typing, to inject bad values)."""
    out = df.copy()
    out["patches"] = out["patches"].map(lambda v: v if isinstance(v, str) else schema.encode_patches_csv(v))
    out.to_csv(path, index=False)
    return path


def errors_for(report, field: str) -> list[RowError]:
    return [e for e in report.errors if e.field == field]


def test_valid_parquet_and_csv_pass(tmp_path: Path, ds: pd.DataFrame) -> None:
    for name in ("m.parquet", "m.csv"):
        report = validate_manifest(write(ds, tmp_path / name))
        assert report.ok, report.format()
        assert report.rows_checked == 6
        assert report.warnings == []
        assert report.format().startswith("OK:")


def test_missing_required_column(tmp_path: Path, ds: pd.DataFrame) -> None:
    path = tmp_path / "m.csv"
    write_csv_raw(ds.drop(columns=["label", "anatomy"]), path)
    report = validate_manifest(path)
    assert not report.ok
    assert {(e.row, e.field) for e in report.errors} == {(None, "label"), (None, "anatomy")}
    assert "required column is missing" in report.format()


def test_unreadable_manifest(tmp_path: Path) -> None:
    corrupt = tmp_path / "m.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all")
    report = validate_manifest(corrupt)
    assert not report.ok and report.errors[0].row is None and str(corrupt) in report.errors[0].message
    report = validate_manifest(tmp_path / "absent.parquet")
    assert not report.ok and "not found" in report.errors[0].message


def test_empty_manifest(tmp_path: Path) -> None:
    report = validate_manifest(write(schema.empty_manifest(), tmp_path / "m.parquet"))
    assert not report.ok and "no rows" in report.errors[0].message


def test_missing_image_file(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[4, "image_path"] = "volumes/nowhere/image.npy"
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(4, "image_path")]
    assert "file not found" in report.errors[0].message


def test_corrupt_image_bytes(tmp_path: Path, ds: pd.DataFrame) -> None:
    path = tmp_path / "volumes/scan1/image.npy"
    path.write_bytes(path.read_bytes()[:150])  # header intact, pixel data truncated
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [e.row for e in errors_for(report, "image_path")] == [3, 4, 5]
    assert all("cannot read image" in e.message for e in report.errors)


def test_corrupt_png_is_reported_not_raised(tmp_path: Path, ds: pd.DataFrame) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds.loc[0, ["image_path", "image_index"]] = ["bad.png", 0]
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, "image_path")]


def test_image_index_out_of_range(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[2, "image_index"] = 3
    ds.loc[1, "mask_index"] = 7
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert {(e.row, e.field) for e in report.errors} == {(2, "image_index"), (1, "mask_index")}
    assert "holds 3 slice(s)" in report.format()


def test_mask_shape_differs_from_image(tmp_path: Path, ds: pd.DataFrame) -> None:
    np.save(tmp_path / "small_mask.npy", np.zeros((20, 20), np.uint8))
    ds.loc[1, ["mask_path", "mask_index"]] = ["small_mask.npy", 0]
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(1, "mask_path")]
    assert "(20, 20) != image (40, 40)" in report.errors[0].message


def test_height_width_disagree_with_image(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[ds.scan_id == "scan0", ["height", "width"]] = [64, 64]  # consistent within the scan, wrong on disk
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    rows = sorted({e.row for e in errors_for(report, "height")})
    assert rows == [0, 1, 2]
    assert "64x64" in report.format() and "40x40" in report.format()
    assert {e.field for e in report.errors} == {"height"}  # 64 and 40 both give a 2x2 patch grid


@pytest.mark.parametrize("bad", ["2", "-1", "yes", "", "0.5"])
def test_bad_label(tmp_path: Path, ds: pd.DataFrame, bad: str) -> None:
    ds["label"] = ds["label"].astype(object)
    ds.loc[3, "label"] = bad
    report = validate_manifest(write_csv_raw(ds, tmp_path / "m.csv"))
    assert [(e.row, e.field) for e in report.errors] == [(3, "label")]
    assert "row 3 (line 5) label" in report.format()


def test_label_two_in_parquet(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[0, "label"] = 2
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, "label")]
    assert "row 0 label" in report.format()


def test_nan_and_inf_pixels(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, float_images=True)
    vol = np.load(tmp_path / "volumes/scan0/image.npy")
    vol[1, 3, 3] = np.nan
    vol[2, 0, :2] = np.inf
    np.save(tmp_path / "volumes/scan0/image.npy", vol)
    io.clear_cache()
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(1, "image_path"), (2, "image_path")]
    assert "1 NaN/inf" in report.errors[0].message and "2 NaN/inf" in report.errors[1].message


def test_mask_values_not_binary(tmp_path: Path, ds: pd.DataFrame) -> None:
    mask = np.load(tmp_path / "volumes/scan1/mask.npy")
    mask[2][mask[2] > 0] = 255
    np.save(tmp_path / "volumes/scan1/mask.npy", mask)
    io.clear_cache()
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(5, "mask_path")]
    assert "24 pixel(s) not 0/1" in report.errors[0].message


def test_duplicate_row(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds = pd.concat([ds, ds.iloc[[1]]], ignore_index=True)
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert {(e.row, e.field) for e in report.errors} == {(6, "slice_index"), (6, "image_path")}
    assert all("row 1" in e.message for e in report.errors)


def test_same_image_slice_on_two_rows(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[2, "image_path"] = "./volumes/scan0/../scan0/image.npy"
    ds.loc[2, "image_index"] = 0
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(2, "image_path")]
    assert "as row 0" in report.errors[0].message


def test_spacing_inconsistent_within_scan(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[4, "spacing_col_mm"] = 0.9
    ds.loc[5, "slice_thickness_mm"] = 5.0
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert {(e.row, e.field) for e in report.errors} == {(4, "spacing_col_mm"), (5, "slice_thickness_mm")}
    assert "scan 'scan1' has spacing_col_mm 0.9 here but 0.8 on row 3" in report.errors[0].message


@pytest.mark.parametrize(
    "col,value", [("spacing_row_mm", 0.0), ("slice_thickness_mm", -2.5), ("spacing_col_mm", np.inf)]
)
def test_non_positive_spacing(tmp_path: Path, col: str, value: float) -> None:
    ds = make_dataset(tmp_path, scans=1, slices=1)
    ds[col] = value
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, col)]


def test_unknown_anatomy(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[0, "anatomy"] = "popliteal"
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, "anatomy")]
    assert "femoral, iliac" in report.errors[0].message


@pytest.mark.parametrize("value", ["", "   ", " P0", None])
def test_empty_or_padded_id(tmp_path: Path, ds: pd.DataFrame, value: str | None) -> None:
    ds.loc[:2, "patient_id"] = value  # the whole scan, so no "two patients" error follows
    report = validate_manifest(write_csv_raw(ds, tmp_path / "m.csv"))
    assert [(e.row, e.field) for e in report.errors] == [
        (0, "patient_id"),
        (1, "patient_id"),
        (2, "patient_id"),
    ]


def test_scan_under_two_patients(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[5, "patient_id"] = "P9"
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert {(e.row, e.field) for e in report.errors} == {(5, "patient_id")}
    assert "scan 'scan1' has patient_id 'P9' here but 'P1' on row 3" in report.errors[0].message


def test_patches_wrong_length_and_wrong_flags(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.at[0, "patches"] = np.array([1, 0, 0], np.uint8)
    flipped = ds.at[4, "patches"].copy()
    flipped[0] ^= 1
    ds.at[4, "patches"] = flipped
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, "patches"), (4, "patches")]
    assert "expected patch_rows*patch_cols = 4" in report.errors[0].message
    assert "1 flag(s) disagree with the mask" in report.errors[1].message


def test_garbage_values_do_not_crash(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds = ds.astype({"image_index": object, "height": object, "patches": object})
    ds.loc[0, "image_index"] = "x"
    ds.loc[1, "height"] = "tall"
    ds.loc[2, "patches"] = "01a1"
    report = validate_manifest(write_csv_raw(ds, tmp_path / "m.csv"))
    fields = {(e.row, e.field) for e in report.errors}
    assert {(0, "image_index"), (1, "height"), (2, "patches")} <= fields


def test_slice_gaps_are_a_warning(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds = ds.drop(index=1).reset_index(drop=True)
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert report.ok, report.format()
    assert [(w.row, w.field) for w in report.warnings] == [(0, "slice_index")]
    assert "1 missing, e.g. [1]" in report.format()


def test_max_errors_caps_the_report(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds["label"] = 5
    path = write(ds, tmp_path / "m.parquet")
    assert len(validate_manifest(path).errors) == 6
    capped = validate_manifest(path, max_errors=2)
    assert len(capped.errors) == 2 and capped.truncated and "stopped at --max-errors" in capped.format()


def test_no_files_skips_file_checks(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[0, "image_path"] = "missing.npy"
    path = write(ds, tmp_path / "m.parquet")
    assert validate_manifest(path, check_files=False).ok
    assert not validate_manifest(path).ok


def write_splits(
    path: Path, partitions: dict[str, list[str]], manifest: pd.DataFrame, **override: object
) -> Path:
    doc = {
        "format": "dvt-search-splits/1",
        "seed": 0,
        "rule": "paper-percentile",
        "anatomy": ["femoral"],
        "quantiles": [1 / 3, 2 / 3],
        "manifest_fingerprint": manifest_fingerprint(manifest),
        "partitions": partitions,
        "folds": None,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    doc["hash"] = hashlib.sha256(canonical.encode()).hexdigest()
    doc.update(override)
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_splits_ok_and_patient_in_two_partitions(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, scans=3, slices=1)
    ds.loc[2, "patient_id"] = "P0"  # scan2 belongs to P0 as well
    ds.loc[2, "study_id"] = "st0"
    manifest = write(ds, tmp_path / "m.parquet")
    good = write_splits(
        tmp_path / "good.json", {"train": ["scan0", "scan2"], "val": ["scan1"], "test": []}, ds
    )
    assert validate_manifest(manifest, splits_path=good).ok
    bad = write_splits(tmp_path / "bad.json", {"train": ["scan0"], "val": ["scan1"], "test": ["scan2"]}, ds)
    report = validate_manifest(manifest, splits_path=bad)
    assert [e.field for e in report.errors] == ["splits"]
    assert "patient 'P0' is in more than one partition: ['test', 'train']" in report.errors[0].message


def test_splits_for_another_manifest(tmp_path: Path, ds: pd.DataFrame) -> None:
    manifest = write(ds, tmp_path / "m.parquet")
    other = ds.copy()
    other.loc[0, "label"] = 1 - int(other.loc[0, "label"])
    splits = write_splits(tmp_path / "s.json", {"train": ["scan0"], "val": ["scan1"], "test": []}, other)
    report = validate_manifest(manifest, splits_path=splits)
    assert [e.message for e in report.errors] == [
        "s.json: made for a different manifest (fingerprint mismatch)"
    ]


def test_splits_hash_mismatch_and_unknown_scan(tmp_path: Path, ds: pd.DataFrame) -> None:
    manifest = write(ds, tmp_path / "m.parquet")
    edited = write_splits(tmp_path / "s.json", {"train": ["scan0"], "val": ["scan1"], "test": []}, ds, seed=7)
    report = validate_manifest(manifest, splits_path=edited)
    assert [e.message.split(": ", 1)[1] for e in report.errors] == [
        "hash mismatch: the file was edited after it was written"
    ]
    unknown = write_splits(
        tmp_path / "u.json", {"train": ["scan0", "scanX"], "val": ["scan1"], "test": []}, ds
    )
    report = validate_manifest(manifest, splits_path=unknown)
    assert len(report.errors) == 1 and "1 scan(s) not in the manifest" in report.errors[0].message
    (tmp_path / "junk.json").write_text("{not json")
    report = validate_manifest(manifest, splits_path=tmp_path / "junk.json")
    assert len(report.errors) == 1 and "cannot read splits file" in report.errors[0].message


def test_every_error_kind_is_reported_in_one_pass(tmp_path: Path, ds: pd.DataFrame) -> None:
    ds.loc[0, "label"] = 2
    ds.loc[1, "anatomy"] = "knee"
    ds.loc[4, "image_path"] = "gone.npy"
    report = validate_manifest(write(ds, tmp_path / "m.parquet"))
    assert [(e.row, e.field) for e in report.errors] == [(0, "label"), (1, "anatomy"), (4, "image_path")]

"""Manifest schema: round trips through Parquet and CSV, patch arrays, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dvt_search.data import schema


def _rows(n: int = 3, size: int = 64) -> pd.DataFrame:
    mask = np.zeros((size, size), np.uint8)
    mask[40:44, 10:12] = 1
    patches = schema.patches_from_mask(mask)
    return pd.DataFrame(
        {
            "patient_id": ["P1"] * n,
            "study_id": ["P1-S1"] * n,
            "scan_id": ["P1-S1-C1"] * n,
            "slice_index": list(range(n)),
            "image_path": ["volumes/P1-S1-C1/image.npy"] * n,
            "image_index": list(range(n)),
            "mask_path": ["volumes/P1-S1-C1/mask.npy"] * n,
            "mask_index": list(range(n)),
            "label": [0, 1, 0][:n],
            "anatomy": ["femoral"] * n,
            "spacing_row_mm": [0.8] * n,
            "spacing_col_mm": [0.8] * n,
            "slice_thickness_mm": [2.5] * n,
            "height": [size] * n,
            "width": [size] * n,
            "patch_rows": [patches.shape[0]] * n,
            "patch_cols": [patches.shape[1]] * n,
            "patches": [patches.ravel()] * n,
            "source": ["npy"] * n,
        }
    )


def test_patches_from_mask_flags_blocks_holding_vein() -> None:
    mask = np.zeros((512, 512), np.uint8)
    mask[33, 65] = 1  # block (1, 2)
    mask[511, 0] = 1  # block (15, 0)
    p = schema.patches_from_mask(mask)
    assert p.shape == (16, 16)
    assert p.sum() == 2 and p[1, 2] == 1 and p[15, 0] == 1


def test_patch_grid_scales_with_image_size() -> None:
    assert schema.patch_grid_shape(512, 512) == (16, 16)
    assert schema.patch_grid_shape(128, 128) == (4, 4)
    assert schema.patch_grid_shape(100, 70) == (4, 3)  # partial edge blocks count
    assert schema.patches_from_mask(np.ones((100, 70))).shape == (4, 3)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    df = _rows()
    path = schema.write_manifest(df, tmp_path / f"manifest{suffix}")
    back = schema.read_manifest(path)
    assert list(back.columns) == list(schema.COLUMNS)
    assert back["label"].tolist() == [0, 1, 0]
    assert back["label"].dtype == np.int8
    np.testing.assert_array_equal(back["patches"][1], df["patches"][1])


def test_parquet_file_carries_documented_schema(tmp_path: Path) -> None:
    path = schema.write_manifest(_rows(), tmp_path / "m.parquet")
    assert pq.read_schema(path).remove_metadata().equals(schema.SCHEMA.remove_metadata())


def test_missing_column_is_named(tmp_path: Path) -> None:
    df = _rows().drop(columns=["anatomy"])
    df.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(schema.ManifestError, match="anatomy"):
        schema.read_manifest(tmp_path / "m.csv")


def test_mistyped_column_is_named(tmp_path: Path) -> None:
    df = _rows()
    df["slice_index"] = ["a", "b", "c"]
    with pytest.raises(schema.ManifestError, match="slice_index"):
        schema.write_manifest(df, tmp_path / "m.parquet")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "m.parquet"
    schema.write_manifest(_rows(), target)
    before = target.read_bytes()
    bad = _rows()
    bad["height"] = ["x", "y", "z"]
    with pytest.raises(schema.ManifestError):
        schema.write_manifest(bad, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_csv_patches_reject_other_characters() -> None:
    with pytest.raises(ValueError, match="0/1"):
        schema.decode_patches_csv("0102")

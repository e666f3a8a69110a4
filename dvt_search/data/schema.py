"""The manifest: one row per 2D slice, Parquet canonical, CSV accepted in and out.

Every later stage (validation, splits, datasets, families, the search, the selector) reads slices only
through this table. Paths in ``image_path`` / ``mask_path`` are resolved relative to the directory that
holds the manifest unless they are absolute, so a dataset directory can be moved or mounted elsewhere.

Columns (pyarrow types in :data:`SCHEMA`):

=====================  ===========  ====================================================================
column                 type         meaning
=====================  ===========  ====================================================================
patient_id             string       pseudonymous patient key (user-mapped, or a salted hash; never PHI)
study_id               string       study key, unique within the dataset
scan_id                string       scan (series) key, unique within the dataset
slice_index            int32        position of the slice inside its scan, 0 = most inferior
image_path             string       file holding the image: ``.npy`` (2D, or 3D volume ``[Z, H, W]``),
                                    ``.png``/``.tif`` (2D), ``.nii``/``.nii.gz`` (3D), ``.dcm`` (2D)
image_index            int32        slice index inside ``image_path`` (0 for 2D files)
mask_path              string       file holding the vein segmentation (same kinds as ``image_path``)
mask_index             int32        slice index inside ``mask_path``
label                  int8         1 if a DVT (clot) is present in this slice, else 0
anatomy                string       ``femoral`` or ``iliac``
spacing_row_mm         float32      pixel spacing along rows (mm)
spacing_col_mm         float32      pixel spacing along columns (mm)
slice_thickness_mm     float32      slice thickness (mm)
height                 int32        image rows
width                  int32        image columns
patch_rows             int16        rows of the patch vein grid = ceil(height / 32)
patch_cols             int16        columns of the patch vein grid = ceil(width / 32)
patches                list<uint8>  row-major flags, 1 where the 32x32 block holds any vein pixel
                                    (16x16 at 512^2; paper sections 3 and 4.4)
source                 string       where the row came from: phantom / dicom / nifti / png / npy
=====================  ===========  ====================================================================

Images are stored in Hounsfield units (HU). Masks are 0/1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..fsutil import atomic_path

#: Side of one patch block in pixels at native resolution (paper: 32x32 blocks of a 512x512 slice).
PATCH_BLOCK = 32

ANATOMIES = ("femoral", "iliac")

SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("study_id", pa.string(), nullable=False),
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("slice_index", pa.int32(), nullable=False),
        pa.field("image_path", pa.string(), nullable=False),
        pa.field("image_index", pa.int32(), nullable=False),
        pa.field("mask_path", pa.string(), nullable=False),
        pa.field("mask_index", pa.int32(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("anatomy", pa.string(), nullable=False),
        pa.field("spacing_row_mm", pa.float32(), nullable=False),
        pa.field("spacing_col_mm", pa.float32(), nullable=False),
        pa.field("slice_thickness_mm", pa.float32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("patch_rows", pa.int16(), nullable=False),
        pa.field("patch_cols", pa.int16(), nullable=False),
        pa.field("patches", pa.list_(pa.uint8()), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ],
    metadata={b"dvt_search.manifest_version": b"1"},
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
REQUIRED: tuple[str, ...] = COLUMNS

_NUMPY_DTYPES: dict[str, Any] = {
    "slice_index": "int32",
    "image_index": "int32",
    "mask_index": "int32",
    "label": "int8",
    "spacing_row_mm": "float32",
    "spacing_col_mm": "float32",
    "slice_thickness_mm": "float32",
    "height": "int32",
    "width": "int32",
    "patch_rows": "int16",
    "patch_cols": "int16",
}
_STRING_COLUMNS = ("patient_id", "study_id", "scan_id", "image_path", "mask_path", "anatomy", "source")


class ManifestError(ValueError):
    """The manifest file itself cannot be read as a manifest (missing column, unreadable file...)."""


def patch_grid_shape(height: int, width: int, block: int = PATCH_BLOCK) -> tuple[int, int]:
    """Patch grid (rows, cols) for an image of ``height`` x ``width``: one flag per ``block``-pixel block."""
    return (-(-int(height) // block), -(-int(width) // block))


def patches_from_mask(mask: np.ndarray, block: int = PATCH_BLOCK) -> np.ndarray:
    """The patch vein array: ``uint8[rows, cols]``, 1 where a ``block`` x ``block`` block holds vein.

    Partial blocks at the right/bottom edge count (the grid is ``ceil(size / block)``).
    """
    m = np.asarray(mask) > 0
    rows, cols = patch_grid_shape(m.shape[0], m.shape[1], block)
    padded = np.zeros((rows * block, cols * block), dtype=bool)
    padded[: m.shape[0], : m.shape[1]] = m
    return padded.reshape(rows, block, cols, block).any(axis=(1, 3)).astype(np.uint8)


def encode_patches_csv(flags: Any) -> str:
    """CSV form of a patch array: a string of '0'/'1' characters, row-major."""
    return "".join("1" if int(v) else "0" for v in np.asarray(flags).ravel())


def decode_patches_csv(text: Any) -> list[int]:
    """Inverse of :func:`encode_patches_csv`; raises ``ValueError`` on any other character."""
    s = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text).strip()
    if any(ch not in "01" for ch in s):
        raise ValueError(f"patches must be a string of 0/1 characters, got {s[:40]!r}")
    return [int(ch) for ch in s]


def empty_manifest() -> pd.DataFrame:
    """An empty manifest frame with the canonical columns and dtypes."""
    return SCHEMA.empty_table().to_pandas()


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` with canonical column order and dtypes (raises :class:`ManifestError` if it can't)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(f"manifest is missing required column(s): {', '.join(missing)}")
    out = df.loc[:, list(COLUMNS)].copy()
    for col in _STRING_COLUMNS:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
        out[col] = out[col].map(lambda v: None if v is None else str(v))
    return out.reset_index(drop=True)


def to_table(df: pd.DataFrame) -> pa.Table:
    """Convert a manifest frame to a pyarrow table with :data:`SCHEMA` (strict: raises on bad types)."""
    df = normalize(df)
    arrays = {}
    for field in SCHEMA:
        col = df[field.name]
        if field.name == "patches":
            values = [list(np.asarray(v, dtype=np.uint8).ravel()) for v in col]
            arrays[field.name] = pa.array(values, type=field.type)
        else:
            try:
                arrays[field.name] = pa.array(col.tolist(), type=field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                raise ManifestError(f"column {field.name!r} cannot be stored as {field.type}: {exc}") from exc
    return pa.table(arrays, schema=SCHEMA)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a manifest atomically (temp file + rename): Parquet for ``.parquet``, else CSV.

    A failure leaves any previous file at ``path`` untouched and no partial file behind.
    """
    path = Path(path)
    table = to_table(df)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            frame = table.to_pandas()
            frame["patches"] = frame["patches"].map(encode_patches_csv)
            frame.to_csv(tmp, index=False)
    return path


def read_manifest_raw(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest file without coercing types (used by validation to report bad rows)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pandas()
        return pd.read_csv(path, dtype=str, keep_default_na=True)
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest (Parquet or CSV) into a frame with canonical dtypes.

    Raises :class:`ManifestError` naming the file and column when a column is missing or mistyped.
    Use ``dvt-search data validate`` for row-level checks.
    """
    path = Path(path)
    df = read_manifest_raw(path)
    try:
        df = normalize(df)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    if df["patches"].map(lambda v: isinstance(v, str)).any() or path.suffix != ".parquet":
        df["patches"] = df["patches"].map(decode_patches_csv)
    df["patches"] = df["patches"].map(lambda v: np.asarray(v, dtype=np.uint8))
    for col, dtype in _NUMPY_DTYPES.items():
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(dtype)
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{path}: column {col!r} is not {dtype}: {exc}") from exc
    return df


def resolve(root: str | os.PathLike[str], rel: str) -> Path:
    """Resolve a manifest path entry against the manifest's directory."""
    p = Path(rel)
    return p if p.is_absolute() else Path(root) / p


def manifest_root(manifest_path: str | os.PathLike[str]) -> Path:
    """Directory that relative paths in the manifest are resolved against."""
    return Path(manifest_path).resolve().parent

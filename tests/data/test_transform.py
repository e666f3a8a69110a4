"""Training data and deployment preprocessing turn the same HU slice into the same arrays.

A phantom scan is given non-finite pixels (NaN, +inf, -inf) and read back through ``SliceDataset`` (no
augmentation) at sizes that shrink and enlarge it; the same raw HU slice goes through the deployment path
(:mod:`dvt_search.deploy.preprocess`). Any drift on one side (interpolation, NaN fill, window formula,
uint8 rounding) makes the arrays differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvt_search.data import transform
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.io import clear_cache
from dvt_search.data.phantom import generate
from dvt_search.data.schema import read_manifest
from dvt_search.data.spec import DataSpec
from dvt_search.deploy.preprocess import network_input, preprocess_spec, sift_input

SIDE = 48  # phantom slice side: the dataset sizes below shrink (32) and enlarge (80) it
WINDOWS = ((0.0, 4200.0), (40.0, 400.0))  # the wide first window sees the NaN fill (-1000 HU)


@pytest.fixture(scope="module")
def phantom_with_holes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """A small phantom whose first scan's image volume holds NaN/+inf/-inf pixels (as float32)."""
    out = tmp_path_factory.mktemp("transform") / "ph"
    manifest = generate(out, patients=2, seed=3, size=SIDE, slices_per_scan=4, preset="easy")
    df = read_manifest(manifest)
    row = df.iloc[0]
    path = manifest.parent / row["image_path"]
    vol = np.load(path).astype(np.float32)
    z = int(row["image_index"])
    vol[z, 10:13, 20:24] = np.nan
    vol[z, 30, 5:9] = np.inf
    vol[z, 2:4, 40] = -np.inf
    np.save(path, vol)
    clear_cache()
    rows = df[(df["image_path"] == row["image_path"]) & (df["image_index"] == z)]
    return manifest, rows, vol[z]


@pytest.mark.parametrize("size", [32, SIDE, 80])
def test_dataset_item_equals_deployment_network_input(phantom_with_holes, size: int) -> None:
    manifest, rows, hu = phantom_with_holes
    assert not np.isfinite(hu).all()  # the NaN fill is exercised
    ds = SliceDataset(rows, manifest.parent, size=size, windows=WINDOWS)
    trained_on = ds[0]["image"].numpy()
    deployed = network_input(hu, DataSpec(image_size=size, windows=WINDOWS))
    assert trained_on.shape == deployed.shape == (len(WINDOWS), size, size)
    assert trained_on.dtype == deployed.dtype == np.float32
    np.testing.assert_array_equal(trained_on, deployed)


@pytest.mark.parametrize("size", [32, 80])
def test_dataset_sift_image_equals_deployment_sift_input(phantom_with_holes, size: int) -> None:
    manifest, rows, hu = phantom_with_holes
    ds = SliceDataset(rows, manifest.parent, size=size, windows=WINDOWS)
    trained_on = ds.window_u8(0)
    deployed = sift_input(hu, DataSpec(image_size=size, windows=WINDOWS))
    assert trained_on.dtype == deployed.dtype == np.uint8 and trained_on.shape == (size, size)
    np.testing.assert_array_equal(trained_on, deployed)


def test_the_pipeline_steps_are_the_documented_ones() -> None:
    """Hand-worked values: NaN -> -1000 HU (0 in any window), +inf -> 3071 (1), window formula, rounding."""
    hu = np.array([[np.nan, np.inf], [-np.inf, 100.0]], np.float32)
    cleaned = transform.clean_hu(hu)
    np.testing.assert_array_equal(cleaned, [[-1000.0, 3071.0], [-1024.0, 100.0]])
    ch = transform.network_input(hu, 2, ((40.0, 400.0),))
    np.testing.assert_allclose(ch[0], [[0.0, 1.0], [0.0, (100 + 160) / 400]], rtol=1e-6)
    assert transform.sift_input(hu, 2, ((40.0, 400.0),))[1, 1] == round(255 * 260 / 400)


def test_preprocess_json_records_the_transform_constants(tiny_model_for_doc) -> None:
    doc = preprocess_spec(tiny_model_for_doc)
    assert doc["nonfinite_hu"] == {"nan": -1000.0, "posinf": 3071.0, "neginf": -1024.0}
    assert doc["window_formula"] == "clip((HU - (level - width / 2)) / width, 0, 1)"
    assert "INTER_AREA when shrinking" in doc["resize"]["method"]


@pytest.fixture
def tiny_model_for_doc():
    from dvt_search import families

    return families.get("sift_bow_svm").build({}, DataSpec(image_size=32, windows=WINDOWS))

"""The synthetic CT phantom: determinism, anatomy and HU values, labels/masks/patches, atomic writes, DICOM."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from dvt_search.data import phantom
from dvt_search.data.io import load_slice
from dvt_search.data.phantom import dataset as phantom_generate
from dvt_search.data.phantom.presets import (
    ARTERY,
    BOWEL_AIR,
    BOWEL_WALL,
    CANCELLOUS,
    CLOT,
    CORTICAL,
    FAT,
    MUSCLE,
    TISSUE_HU,
    VEIN,
)
from dvt_search.data.phantom.render import render_slice
from dvt_search.data.schema import COLUMNS, patches_from_mask, read_manifest, write_manifest

SMALL = {"patients": 3, "seed": 7, "size": 64, "slices_per_scan": 5}


@pytest.fixture(scope="module")
def dataset(phantom_data) -> Path:
    """A tiny standard-preset phantom (64^2, ~5 slices per scan); returns the manifest path."""
    return phantom_data(**SMALL).manifest


def _volumes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("volumes/*/*.npy"))}


def _runs(labels: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive 1s."""
    padded = np.concatenate([[0], labels, [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[::2])


def test_same_seed_same_bytes_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = phantom.generate(tmp_path / "again", **SMALL)
    assert _volumes(again.parent) == _volumes(dataset.parent)
    pd.testing.assert_frame_equal(read_manifest(again), read_manifest(dataset))
    other = phantom.generate(tmp_path / "other", **{**SMALL, "seed": 8})
    a, b = read_manifest(other), read_manifest(dataset)
    same_layout = len(a) == len(b) and (a["scan_id"].to_numpy() == b["scan_id"].to_numpy()).all()
    assert not same_layout or _volumes(other.parent) != _volumes(dataset.parent)


def test_workers_give_identical_output(dataset: Path, tmp_path: Path) -> None:
    parallel = phantom.generate(tmp_path / "par", **SMALL, workers=2)
    assert _volumes(parallel.parent) == _volumes(dataset.parent)
    pd.testing.assert_frame_equal(read_manifest(parallel), read_manifest(dataset))


def test_manifest_round_trip_ids_and_layout(dataset: Path, tmp_path: Path) -> None:
    df = read_manifest(dataset)
    assert list(df.columns) == list(COLUMNS)
    assert not df.isna().any().any()
    copy = write_manifest(df, tmp_path / "copy.parquet")
    pd.testing.assert_frame_equal(read_manifest(copy), df)
    assert set(df["source"]) == {"phantom"}
    for row in df.itertuples():
        assert re.fullmatch(r"P\d{4}", row.patient_id)
        assert row.study_id.startswith(row.patient_id + "-S") and row.scan_id.startswith(row.study_id + "-C")
        assert (
            row.image_path == f"volumes/{row.scan_id}/image.npy"
            and row.mask_path == f"volumes/{row.scan_id}/mask.npy"
        )
        assert row.image_index == row.slice_index == row.mask_index
    studies = df.groupby("patient_id")["study_id"].nunique()
    scans = df.groupby("study_id")["scan_id"].nunique()
    assert studies.between(1, 4).all() and scans.between(1, 3).all()
    for scan_id, rows in df.groupby("scan_id"):
        assert list(rows["slice_index"]) == list(range(len(rows)))
        image = np.load(dataset.parent / rows["image_path"].iloc[0], allow_pickle=False)
        mask = np.load(dataset.parent / rows["mask_path"].iloc[0], allow_pickle=False)
        assert image.dtype == np.int16 and mask.dtype == np.uint8, scan_id
        assert image.shape == mask.shape == (len(rows), 64, 64)
        assert set(np.unique(mask)) <= {0, 1}
    spacing_512 = df["spacing_row_mm"] * 64 / 512
    assert spacing_512.between(0.68 - 1e-4, 0.98 + 1e-4).all()
    assert (df["spacing_row_mm"] == df["spacing_col_mm"]).all()
    assert (df[["height", "width", "patch_rows", "patch_cols"]].to_numpy() == [64, 64, 2, 2]).all()


def test_scan_lengths_vary_and_both_anatomies_appear(tmp_path: Path) -> None:
    plans = phantom.plan_dataset(patients=8, seed=0, slices_per_scan=10, iliac_fraction=0.5)
    counts = [p.n_slices for p in plans]
    assert min(counts) >= 5 and max(counts) <= 15 and len(set(counts)) > 3
    assert {p.anatomy for p in plans} == {"femoral", "iliac"}
    assert {p.anatomy for p in phantom.plan_dataset(3, 0, 10, 0.0)} == {"femoral"}
    assert {p.anatomy for p in phantom.plan_dataset(3, 0, 10, 1.0)} == {"iliac"}


def test_patches_labels_and_masks_agree_with_the_rendered_anatomy(dataset: Path) -> None:
    df = read_manifest(dataset)
    plans = {p.scan_id: p for p in phantom.plan_dataset(3, 7, 5, 0.5)}
    assert set(plans) == set(df["scan_id"])
    for scan_id, rows in df.groupby("scan_id"):
        spec, image, mask, tissue = phantom.render_plan(
            plans[scan_id], seed=7, size=64, preset="standard", with_tissue=True
        )
        assert np.array_equal(np.load(dataset.parent / rows["image_path"].iloc[0]), image)
        assert np.array_equal(np.load(dataset.parent / rows["mask_path"].iloc[0]), mask)
        for row in rows.itertuples():
            z = row.slice_index
            assert np.array_equal(np.asarray(row.patches).reshape(2, 2), patches_from_mask(mask[z]))
            clot = tissue[z] == CLOT
            assert row.label == int(clot.any()), (scan_id, z)
            assert not (clot & (mask[z] == 0)).any()
            assert mask[z].any()  # both veins are always drawn, clotted or not
        assert all(n >= 2 for n in _runs(rows["label"].to_numpy())), scan_id


def test_clots_span_consecutive_slices_and_cover_a_realistic_share() -> None:
    labels, runs = [], []
    for plan in phantom.plan_dataset(patients=10, seed=3, slices_per_scan=30, iliac_fraction=0.5):
        lab = phantom.scan_spec(plan, seed=3, size=64, preset="standard").labels()
        labels.append(lab)
        runs += _runs(lab)
    share = float(np.concatenate(labels).mean())
    assert 0.3 <= share <= 0.6
    assert runs and min(runs) >= 2 and np.median(runs) >= 5


def _first_plan(anatomy: str, seed: int = 0) -> phantom.ScanPlan:
    return next(p for p in phantom.plan_dataset(6, seed, 24, 0.5) if p.anatomy == anatomy)


def _interior(tissue: np.ndarray, code: int, px: int) -> np.ndarray:
    region = (tissue == code).astype(np.uint8)
    return cv2.erode(region, np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


@pytest.mark.parametrize("anatomy", ["femoral", "iliac"])
def test_tissues_have_their_ct_numbers(anatomy: str) -> None:
    spec = phantom.scan_spec(_first_plan(anatomy), seed=0, size=512, preset="standard")
    hu, mask, tissue = render_slice(spec, spec.n // 2, np.random.default_rng(0))
    checked = 0
    for code in (FAT, MUSCLE, CANCELLOUS, CORTICAL, VEIN, ARTERY, BOWEL_WALL):
        inner = _interior(tissue, code, 2)
        if inner.sum() < 20:
            continue
        lo, hi = TISSUE_HU[code]
        median = float(np.median(hu[inner]))
        assert lo - 10 <= median <= hi + 10, (code, median)
        checked += 1
    assert checked >= 5
    muscle = hu[_interior(tissue, MUSCLE, 4)].astype(float)
    assert 8.0 <= muscle.std() <= 30.0  # CT noise (10-25 HU) plus a little texture
    assert np.array_equal(mask > 0, (tissue == VEIN) | (tissue == CLOT))
    assert (hu[_interior(tissue, 0, 3)] < -850).mean() > 0.99  # air outside the body


def test_anatomies_look_different() -> None:
    femoral = phantom.scan_spec(_first_plan("femoral"), seed=0, size=128, preset="standard")
    iliac = phantom.scan_spec(_first_plan("iliac"), seed=0, size=128, preset="standard")
    t_fem = render_slice(femoral, 3, np.random.default_rng(0))[2]
    t_ili = render_slice(iliac, 3, np.random.default_rng(0))[2]
    assert not np.isin(t_fem, [BOWEL_WALL, BOWEL_AIR]).any()
    assert np.isin(t_ili, [BOWEL_WALL]).any()
    bones = lambda t: cv2.connectedComponents(np.isin(t, [CORTICAL, CANCELLOUS]).astype(np.uint8))[0] - 1  # noqa: E731
    assert bones(t_fem) == 2  # two femurs
    assert bones(t_ili) >= 3  # two iliac wings and the sacrum


def test_clot_pixels_are_thrombus_dense_and_easy_clots_are_conspicuous() -> None:
    for preset in ("standard", "easy"):
        for plan in phantom.plan_dataset(6, 1, 24, 0.5):
            spec = phantom.scan_spec(plan, seed=1, size=256, preset=preset)
            occlusive = [c for c in spec.clots if c.occlusive]
            if occlusive:
                break
        c = occlusive[0]
        z = (c.z0 + c.z1) // 2
        hu, mask, tissue = render_slice(spec, z, np.random.default_rng(0))
        inner = _interior(tissue, CLOT, 1)
        median = float(np.median(hu[inner]))
        assert 25 <= median <= 75, (preset, median)
        vein = _interior(tissue, VEIN, 1)
        if vein.sum() >= 5:
            assert float(np.median(hu[vein])) > median + 20


def test_easy_preset_is_quieter_than_standard() -> None:
    plan = _first_plan("femoral")
    std = [
        phantom.scan_spec(p, seed=0, size=64, preset="standard") for p in phantom.plan_dataset(6, 0, 8, 0.5)
    ]
    easy = [phantom.scan_spec(p, seed=0, size=64, preset="easy") for p in phantom.plan_dataset(6, 0, 8, 0.5)]
    assert max(s.noise_sd for s in easy) < min(s.noise_sd for s in std)
    assert sum(len(s.mixes) for s in easy) < sum(len(s.mixes) for s in std)
    assert phantom.scan_spec(plan, seed=0, size=64, preset="easy").n == plan.n_slices


def test_refuses_to_overwrite_unless_asked(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    first = phantom.generate(out, **SMALL)
    with pytest.raises(FileExistsError, match="overwrite"):
        phantom.generate(out, **SMALL)
    replaced = phantom.generate(out, **{**SMALL, "seed": 9, "patients": 2}, overwrite=True)
    assert replaced == first
    assert read_manifest(replaced)["patient_id"].nunique() == 2
    fresh = phantom.generate(tmp_path / "fresh", **{**SMALL, "seed": 9, "patients": 2})
    assert _volumes(out) == _volumes(fresh.parent)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "volumes"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("kept")
    phantom.generate(existing, **{**SMALL, "patients": 1})
    assert sorted(p.name for p in existing.iterdir()) == ["manifest.parquet", "notes.txt", "volumes"]


def _failing_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = phantom_generate._save_volume

    def flaky(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        real(path, array)

    monkeypatch.setattr(phantom_generate, "_save_volume", flaky)


def test_failed_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_writer(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        phantom.generate(tmp_path / "new", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_dataset(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = phantom.generate(tmp_path / "ds", **SMALL).parent
    before = _volumes(out), (out / "manifest.parquet").read_bytes()
    _failing_writer(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        phantom.generate(out, **{**SMALL, "seed": 1}, overwrite=True)
    assert (_volumes(out), (out / "manifest.parquet").read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "volumes"]


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        phantom.generate(tmp_path / "a", patients=1, size=32, slices_per_scan=2, preset="hard")
    with pytest.raises(ValueError, match="patients"):
        phantom.generate(tmp_path / "b", patients=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _read_series(files: list[Path]) -> tuple[list[pydicom.Dataset], np.ndarray]:
    datasets = sorted(
        (pydicom.dcmread(f) for f in reversed(files)), key=lambda d: float(d.ImagePositionPatient[2])
    )
    hu = np.stack(
        [d.pixel_array.astype(np.int32) * int(d.RescaleSlope) + int(d.RescaleIntercept) for d in datasets]
    )
    return datasets, hu


def test_dicom_series_round_trips_to_hu(tmp_path: Path) -> None:
    spec = phantom.scan_spec(_first_plan("femoral"), seed=0, size=48, preset="standard")
    volume = np.stack([render_slice(spec, z, np.random.default_rng(z))[0] for z in range(4)])
    files = phantom.write_dicom_series(
        volume, tmp_path / "series", spacing_mm=(0.7, 0.75), thickness_mm=2.0, seed=5
    )
    assert len(files) == 4 and all(f.is_file() for f in files)
    datasets, hu = _read_series(files)
    assert np.array_equal(hu, volume)
    z = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert z == sorted(z) and np.allclose(np.diff(z), 2.0)
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert [float(v) for v in first.PixelSpacing] == [0.7, 0.75] and float(first.SliceThickness) == 2.0
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(first.RescaleSlope) == 1 and float(first.RescaleIntercept) == -1024
    assert str(first.PatientName) == "PHANTOM^ANON" and first.PatientID == "PHANTOM-5"
    assert (
        len({d.SOPInstanceUID for d in datasets}) == 4 and len({d.SeriesInstanceUID for d in datasets}) == 1
    )
    assert np.array_equal(load_slice(files[2]), volume[2].astype(np.float32))
    again = phantom.write_dicom_series(volume, tmp_path / "again", seed=5)
    assert pydicom.dcmread(again[0]).SOPInstanceUID == pydicom.dcmread(files[0]).SOPInstanceUID


def test_dicom_series_handles_values_below_the_usual_range(tmp_path: Path) -> None:
    volume = np.array([[[-2000, 0], [100, 3000]]], dtype=np.int16)
    files = phantom.write_dicom_series(volume, tmp_path / "s")
    assert np.array_equal(_read_series(files)[1], volume)
    with pytest.raises(FileExistsError):
        phantom.write_dicom_series(volume, tmp_path / "s")
    with pytest.raises(ValueError, match="Z, H, W"):
        phantom.write_dicom_series(volume[0], tmp_path / "t")


def test_export_scan_dicom_writes_the_scan_in_slice_order(dataset: Path, tmp_path: Path) -> None:
    df = read_manifest(dataset)
    scan_id = df["scan_id"].iloc[-1]
    rows = df[df["scan_id"] == scan_id]
    files = phantom.export_scan_dicom(dataset, scan_id, tmp_path / "dcm")
    datasets, hu = _read_series(files)
    assert np.array_equal(hu, np.load(dataset.parent / rows["image_path"].iloc[0]))
    assert float(datasets[0].SliceThickness) == pytest.approx(float(rows["slice_thickness_mm"].iloc[0]))
    assert float(datasets[0].PixelSpacing[0]) == pytest.approx(
        float(rows["spacing_row_mm"].iloc[0]), rel=1e-5
    )
    with pytest.raises(KeyError, match="P9999"):
        phantom.export_scan_dicom(dataset, "P9999-S1-C1", tmp_path / "none")

"""Out-of-scope checks: phantom thigh/pelvis scans pass; head, chest, abdomen, cropped CT, MR, non-HU, non-contrast warn."""

from __future__ import annotations

import numpy as np
import pytest
from dvt_testkit_scope import abdomen_slice, chest_slice, volume

from dvt_search.data.phantom import ScanPlan, render_plan
from dvt_search.deploy.scope import check_scope


def _phantom(anatomy: str, size: int, preset: str = "standard", seed: int = 0) -> tuple[np.ndarray, tuple]:
    spec, image, _, _ = render_plan(ScanPlan(1, 1, 1, anatomy, 6), seed=seed, size=size, preset=preset)
    return image.astype(np.float32), (spec.spacing_mm, spec.spacing_mm)


def _bundled(name: str) -> tuple[np.ndarray, list[float], str]:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    hu = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    return hu[None].astype(np.float32), [float(v) for v in ds.PixelSpacing], str(ds.Modality)


@pytest.mark.parametrize("anatomy", ["femoral", "iliac"])
@pytest.mark.parametrize("size, preset, seed", [(64, "easy", 1), (64, "standard", 2), (256, "standard", 0)])
def test_phantom_thigh_and_pelvis_are_in_scope(anatomy, size, preset, seed) -> None:
    vol, spacing = _phantom(anatomy, size, preset, seed)
    report = check_scope(vol, spacing, modality="CT")
    assert report.ok, report.warnings
    assert report.checks["out_of_region"] == 0
    if anatomy == "femoral":  # both thighs seen as two legs on every slice
        assert report.checks["two_leg_slices"] == len(vol)


@pytest.mark.parametrize(
    "slice_fn, reason", [(chest_slice, "air-filled lungs (chest)"), (abdomen_slice, "large enhancing organs")]
)
@pytest.mark.parametrize("size", [64, 256])
def test_chest_and_upper_abdomen_warn(slice_fn, reason, size) -> None:
    vol, mm = volume(slice_fn, n=5, size=size)
    report = check_scope(vol, (mm, mm), modality="CT")
    assert not report.ok
    region = [w for w in report.warnings if "do not look like thigh or pelvis" in w]
    assert len(region) == 1 and reason in region[0] and "5 of 5 slices" in region[0]


def test_pydicom_ct_small_is_not_a_thigh() -> None:
    vol, spacing, modality = _bundled("CT_small.dcm")  # an 85 mm field of view on a vertebra
    report = check_scope(vol, spacing, modality=modality)
    assert modality == "CT" and not report.ok
    assert "do not look like thigh or pelvis" in report.warnings[0]


def test_head_ct_is_too_narrow() -> None:
    vol, spacing, modality = _bundled("693_J2KI.dcm")  # a head CT (CQ500)
    report = check_scope(vol, spacing, modality=modality)
    assert any("narrower than" in w for w in report.warnings), report.warnings


def test_mr_warns_on_modality() -> None:
    vol, spacing, modality = _bundled("MR_small.dcm")
    report = check_scope(vol, spacing, modality=modality)
    assert report.warnings[0].startswith("modality MR, not CT")
    assert any(w.startswith("values not HU") for w in report.warnings)


def test_values_not_in_hu_warn_on_soft_tissue() -> None:
    vol, spacing = _phantom("femoral", 128)
    report = check_scope(vol + 1024.0, spacing, modality=None)  # stored values without the -1024 intercept
    assert any(w.startswith("values not HU") for w in report.warnings), report.warnings
    assert report.checks["modality"] == "not recorded (CT assumed)"


def test_non_contrast_scan_warns() -> None:
    vol, spacing = _phantom("femoral", 128)
    plain = vol.copy()
    plain[(plain >= 60) & (plain < 350)] = 45.0  # unenhanced blood (and no cancellous bone either)
    assert check_scope(vol, spacing, modality="CT").ok
    report = check_scope(plain, spacing, modality="CT")
    assert any(w.startswith("no enhanced vessels") for w in report.warnings), report.warnings


def test_not_axial_warns() -> None:
    vol, spacing = _phantom("iliac", 64)
    report = check_scope(vol, spacing, modality="CT", axial=False)
    assert report.warnings == ["slices are not axial: the model was trained on axial slices"]


def test_long_series_names_the_chest_slices_of_a_chest_to_thigh_scan() -> None:
    spec, image, _, _ = render_plan(ScanPlan(1, 1, 1, "femoral", 60), seed=0, size=64, preset="standard")
    chest, _ = volume(chest_slice, n=40, size=64)
    report = check_scope(
        np.concatenate([image.astype(np.float32), chest]), (spec.spacing_mm,) * 2, modality="CT"
    )
    (warning,) = [w for w in report.warnings if "do not look like thigh or pelvis" in w]
    assert report.checks["slices_measured"] == 48
    ranges = warning.split("air-filled lungs (chest): slice(s) ")[1].split(")")[0]
    first, last = (int(v) for v in ranges.split("-"))  # one run: every measured chest slice, no leg slice
    assert 60 <= first <= 62 and last == 99

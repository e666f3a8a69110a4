"""The scope check's ``veins`` criterion, on hand-made detector answers (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from dvt_search.data.phantom import ScanPlan, render_plan
from dvt_search.deploy.scope import MAX_VEINLESS, MIN_VEIN_MM2, check_scope, check_veins

AREA = 400.0 * 400.0  # mm2 of a 400 mm field of view


def test_slices_with_vein_area_above_the_floor_pass() -> None:
    fractions = np.full(6, 2 * MIN_VEIN_MM2 / AREA)
    warning, checks = check_veins(fractions, AREA, list(range(6)))
    assert warning is None
    assert checks["slices_without_veins"] == 0 and checks["vein_slices_measured"] == 6
    assert checks["median_vein_area_mm2"] == pytest.approx(2 * MIN_VEIN_MM2, abs=0.1)


def test_most_slices_below_the_floor_warn_and_name_them() -> None:
    just_below = 0.95 * MIN_VEIN_MM2 / AREA  # some vein pixels, but less than the floor: "almost none"
    fractions = [0.0, just_below, 0.0, 0.0, 0.01, 0.01]
    warning, checks = check_veins(fractions, AREA, [0, 4, 8, 12, 16, 20])
    assert checks["slices_without_veins"] == 4
    assert warning is not None and "4 of 6 slices" in warning and "slice(s) 0-12" in warning
    assert f"under {MIN_VEIN_MM2:.0f} mm2" in warning


def test_half_the_slices_without_veins_is_still_in_scope() -> None:
    # the series warns only when MORE than MAX_VEINLESS of the slices have no vein (e.g. a scan that
    # runs past the iliac level keeps its femoral half)
    n = 8
    k = int(MAX_VEINLESS * n)
    fractions = [0.0] * k + [0.01] * (n - k)
    assert check_veins(fractions, AREA, list(range(n)))[0] is None
    assert check_veins([0.0] * (k + 1) + [0.01] * (n - k - 1), AREA, list(range(n)))[0] is not None


def test_the_floor_is_an_area_so_coarse_grids_are_judged_alike() -> None:
    # one 64^2 slice of 400 mm: a single detected pixel (39 mm2) is above the floor; the same fraction of
    # a 100 mm field (2.4 mm2) is not
    one_pixel = 1 / 64**2
    assert check_veins([one_pixel] * 3, AREA, [0, 1, 2])[0] is None
    assert check_veins([one_pixel] * 3, 100.0 * 100.0, [0, 1, 2])[0] is not None


@pytest.mark.parametrize(
    "fractions, match", [([0.1, 0.2], "2 fractions for 3 slices"), ([0.1, 1.5, 0.0], r"in \[0, 1\]")]
)
def test_bad_detector_answers_raise(fractions, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_veins(fractions, AREA, [0, 1, 2])


def _femoral(z: int = 6) -> tuple[np.ndarray, tuple[float, float]]:
    spec, image, _, _ = render_plan(ScanPlan(1, 1, 1, "femoral", z), seed=0, size=64, preset="easy")
    return image.astype(np.float32), (spec.spacing_mm, spec.spacing_mm)


def test_check_scope_asks_the_detector_about_the_measured_slices() -> None:
    vol, spacing = _femoral(60)
    asked: list[int] = []

    def nothing_found(slices: list[np.ndarray]) -> np.ndarray:
        asked.append(len(slices))
        assert all(s.shape == vol.shape[1:] for s in slices)
        return np.zeros(len(slices))

    report = check_scope(vol, spacing, modality="CT", vein_detector=nothing_found)
    assert asked == [report.checks["slices_measured"]] and asked[0] == 48
    # the image statistics pass (a phantom thigh): the vein warning is the only one
    assert len(report.warnings) == 1 and "vein detector finds (almost) no vein" in report.warnings[0]
    assert report.checks["slices_without_veins"] == 48 and not report.ok


def test_check_scope_without_a_detector_skips_the_vein_criterion() -> None:
    vol, spacing = _femoral()
    for detector in (None, lambda slices: None):
        report = check_scope(vol, spacing, modality="CT", vein_detector=detector)
        assert report.ok, report.warnings
        assert report.checks["vein_detector"].startswith("none")
        assert "slices_without_veins" not in report.checks


def test_check_scope_with_veins_found_passes() -> None:
    vol, spacing = _femoral()
    area = vol.shape[1] * vol.shape[2] * spacing[0] * spacing[1]
    report = check_scope(vol, spacing, modality="CT", vein_detector=lambda s: np.full(len(s), 150.0 / area))
    assert report.ok, report.warnings
    assert report.checks["vein_detector"] == "asked" and report.checks["slices_without_veins"] == 0

"""Series discovery on de-identified folders: UID-less grouping, skipped objects, choice, tilt, rescale."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dvt_testkit_dicom import blank_uids
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    XRayRadiationDoseSRStorage,
)

from dvt_search.data.phantom import write_dicom_series
from dvt_search.data.readers import ReaderError
from dvt_search.data.readers.dicom import find_series, read_series
from dvt_search.data.readers.discovery import choose_series, skip_reason

PHI = ("PHANTOM", "ANON", "CompressedSamples", "1CT1", "CQ500", "JXD")


def _no_phi(text: str) -> None:
    for value in PHI:
        assert value.upper() not in text.upper(), f"{value!r} leaked"


def _ct_small_series(folder: Path, n: int, syntax: str | None = None) -> np.ndarray:
    """``n`` copies of CT_small (slice k: pixels + 10k), UIDs blanked, optionally compressed."""
    folder.mkdir(parents=True)
    out = []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pixels = ds.pixel_array.astype(np.int16) + 10 * k
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.7 + 5.0 * (n - 1 - k)]  # stored top down
        ds.InstanceNumber = n - k
        blank_uids(ds)
        if syntax is not None:
            ds.compress(syntax)
        ds.save_as(folder / f"{k:02d}.dcm")
        out.append(pixels - 1024.0)
    return np.stack(out[::-1]).astype(np.float32)


def test_bundled_jpeg2000_ct_without_uids_is_one_series(
    tmp_path: Path, bundled_ct_series, caplog: pytest.LogCaptureFixture
) -> None:
    expected = bundled_ct_series(tmp_path / "exam", 4)
    with caplog.at_level(logging.INFO):
        series = find_series(tmp_path)
        vol = read_series(series[0])
    assert len(series) == 1 and series[0].uid == "" and series[0].key == "exam"
    assert "without SeriesInstanceUID" in caplog.text and "grouped by folder and geometry" in caplog.text
    np.testing.assert_array_equal(vol.scan.image, expected)  # lossy J2K slice 0 + three lossless syntaxes
    assert vol.scan.image.shape == (4, 512, 512) and vol.sop_uids == [""] * 4
    _no_phi(caplog.text + repr(series) + repr(vol))


@pytest.mark.parametrize("syntax", [None, JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_ct_small_without_uids_ordered_by_position(tmp_path: Path, syntax: str | None) -> None:
    expected = _ct_small_series(tmp_path / "s", 3, syntax)
    series = find_series(tmp_path)
    assert [len(s.files) for s in series] == [3]
    np.testing.assert_array_equal(read_series(series[0]).scan.image, expected)


def _object(path: Path, sop_class: str, modality: str, **attrs: object) -> None:
    """A small DICOM object (header only, or with a 16x16 image when Rows is given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ""
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = sop_class, "", ""
    ds.Modality, ds.PatientName, ds.PatientID = modality, "PHANTOM^ANON", "PHANTOM-9"
    for k, v in attrs.items():
        setattr(ds, k, v)
    if "Rows" in attrs:
        ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = attrs["Rows"], 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.zeros((attrs["Rows"], attrs["Rows"]), np.int16).tobytes()
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.save_as(path, enforce_file_format=False)


def _exam_with_scout(root: Path, *, uids: bool) -> Path:
    """One folder: axial series A (5 slices), axial series B (3 slices, other spacing), a localizer,
    a coronal reformat, a dose-screen secondary capture, a dose SR and a text file."""
    exam = root / "exam"
    exam.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, z, spacing, seed in (("a", 5, (0.7, 0.7), 1), ("b", 3, (0.9, 0.9), 2)):
        files = write_dicom_series(
            rng.integers(-1000, 1000, (z, 16, 16)), root / name, spacing_mm=spacing, seed=seed
        )
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientID = "PHANTOM-7"  # one patient, two series
            if not uids:
                blank_uids(ds)
            ds.save_as(exam / f"{name}{f.name}")
        shutil.rmtree(root / name)
    _object(
        exam / "scout.dcm",
        CTImageStorage,
        "CT",
        Rows=16,
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
        ImagePositionPatient=[0, 0, 0],
    )
    _object(
        exam / "coronal.dcm",
        CTImageStorage,
        "CT",
        Rows=16,
        ImageType=["DERIVED", "SECONDARY", "MPR"],
        ImageOrientationPatient=[1, 0, 0, 0, 0, -1],
        ImagePositionPatient=[0, 0, 0],
    )
    _object(
        exam / "dose.dcm", SecondaryCaptureImageStorage, "CT", Rows=16, ImageType=["DERIVED", "SECONDARY"]
    )
    _object(exam / "dose_sr.dcm", XRayRadiationDoseSRStorage, "SR")
    (exam / "README.txt").write_text("not DICOM")
    return exam


@pytest.mark.parametrize("uids", [False, True])
def test_multi_series_folder_with_scout(tmp_path: Path, caplog: pytest.LogCaptureFixture, uids: bool) -> None:
    _exam_with_scout(tmp_path, uids=uids)
    with caplog.at_level(logging.INFO):
        series = find_series(tmp_path)
    assert [(s.key, len(s.files), s.modality) for s in series] == [("exam:1", 5, "CT"), ("exam:2", 3, "CT")]
    assert [read_series(s).scan.spacing_row_mm for s in series] == [0.7, 0.9]
    skipped = {
        r.getMessage().split(":")[0].removeprefix("skipped ")
        for r in caplog.records
        if "skipped" in r.message
    }
    assert skipped == {"exam/scout.dcm", "exam/coronal.dcm", "exam/dose.dcm", "exam/dose_sr.dcm"}
    text = caplog.text
    assert "localizer/scout" in text and "not axial (a coronal image" in text
    assert "secondary capture" in text and "structured report" in text
    assert ("without SeriesInstanceUID" in text) is not uids
    _no_phi(text)


def test_uid_less_series_with_equal_geometry_split_by_series_number(tmp_path: Path) -> None:
    exam = tmp_path / "exam"
    exam.mkdir()
    for number, seed in ((2, 1), (3, 2)):
        for f in write_dicom_series(np.zeros((2, 8, 8)), tmp_path / "w", seed=seed):
            ds = pydicom.dcmread(f)
            blank_uids(ds)
            ds.SeriesNumber = number
            ds.save_as(exam / f"{number}_{f.name}")
        shutil.rmtree(tmp_path / "w")
    assert [len(s.files) for s in find_series(tmp_path)] == [2, 2]


def test_choose_series_by_index_key_or_largest_ct(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _exam_with_scout(tmp_path, uids=False)
    series = find_series(tmp_path)
    assert choose_series(series, "2", "in").key == "exam:2"
    assert choose_series(series, "exam:1", "in").key == "exam:1"
    with caplog.at_level(logging.WARNING):
        assert choose_series(series, None, "in").key == "exam:1"  # 5 slices beat 3
    assert "2 image series found" in caplog.text and "largest axial CT series" in caplog.text
    assert "--series" in caplog.text
    with pytest.raises(ReaderError, match="--series '7' is neither an index nor a series key"):
        choose_series(series, "7", "in")
    with pytest.raises(ReaderError, match="expected exactly one DICOM image series, found 0"):
        choose_series([], None, "in")


def test_skip_reason_keeps_axial_ct_and_tilted_axial() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert skip_reason(ds) is None
    tilted = pydicom.dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"), stop_before_pixels=True)
    assert float(tilted.GantryDetectorTilt) == -22.0 and skip_reason(tilted) is None
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    assert "sagittal" in skip_reason(ds)


def test_gantry_tilt_is_named_and_the_affine_follows_the_stack(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "tilt"
    folder.mkdir()
    for k in range(3):  # 22 degree tilted planes stacked straight along the table (z)
        ds = pydicom.dcmread(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
        ds.ImagePositionPatient = [-110.2153, -98.1898, 72.1446 + 5.0 * k]
        ds.InstanceNumber = k + 1
        blank_uids(ds)
        ds.save_as(folder / f"{k}.dcm")
    with caplog.at_level(logging.WARNING):
        vol = read_series(find_series(tmp_path)[0])
    assert "gantry tilt" in caplog.text and "GantryDetectorTilt -22 degrees" in caplog.text
    assert "22.0 degrees off the slice normal" in caplog.text and str(folder / "0.dcm") in caplog.text
    np.testing.assert_allclose(vol.affine[:3, 0], [0, 0, 5.0], atol=1e-3)  # RAS: slice axis = the table


def test_missing_rescale_and_mixed_thickness_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "s"
    _ct_small_series(folder, 4)
    raw = pydicom.dcmread(folder / "00.dcm").pixel_array.astype(np.float32)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        if f.name == "02.dcm":
            ds.SliceThickness = 2.0
        ds.save_as(f)
    with caplog.at_level(logging.WARNING):
        vol = read_series(find_series(tmp_path)[0])
    np.testing.assert_array_equal(vol.scan.image[-1], raw)  # stored values taken as HU
    assert f"{folder / '00.dcm'}: no RescaleSlope/RescaleIntercept in 4 of 4 file(s)" in caplog.text
    assert "assuming slope 1 and intercept 0, so stored values are taken as HU" in caplog.text
    assert f"{folder / '02.dcm'}: SliceThickness 2 mm differs from 5 mm" in caplog.text
    assert vol.scan.slice_thickness_mm == 5.0


def test_gap_in_positions_names_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "s"
    _ct_small_series(folder, 5)
    (folder / "02.dcm").unlink()  # the middle slice
    with caplog.at_level(logging.WARNING):
        read_series(find_series(tmp_path)[0])
    assert f"{folder / '01.dcm'}: 10 mm from the previous slice (03.dcm)" in caplog.text


def test_ingest_names_uid_less_series_by_key_and_keeps_them_apart(tmp_path: Path) -> None:
    from dvt_search.data.ingest import ingest_dicom
    from dvt_search.data.schema import read_manifest

    _exam_with_scout(tmp_path / "in", uids=False)
    labels = tmp_path / "labels.csv"
    kw = dict(labels_csv=labels, salt="s", allow_missing_masks=True)
    labels.write_text("series,slice,label\nexam,all,0\n")
    with pytest.raises(
        ReaderError, match=r"folder holds 2 series; name one by its series key \(exam:1, exam:2\)"
    ):
        ingest_dicom(tmp_path / "in", tmp_path / "bad", **kw)
    labels.write_text("series,slice,label\nexam:1,all,0\nexam:2,0-1,1\n")
    df = read_manifest(ingest_dicom(tmp_path / "in", tmp_path / "out", **kw))
    sizes = df.groupby("scan_id").size().sort_values().tolist()
    assert sizes == [2, 5] and df.patient_id.nunique() == 1 and df.study_id.nunique() == 1
    _no_phi(df.to_csv())


def test_two_uid_less_series_with_equal_geometry_in_one_folder_get_a_hint(tmp_path: Path) -> None:
    exam = tmp_path / "exam"
    exam.mkdir()
    for kernel, seed in (("soft", 1), ("bone", 2)):  # same positions, same series number, no UIDs
        for f in write_dicom_series(np.zeros((2, 8, 8)), tmp_path / "w", seed=seed):
            ds = pydicom.dcmread(f)
            blank_uids(ds)
            ds.save_as(exam / f"{kernel}_{f.name}")
        shutil.rmtree(tmp_path / "w")
    with pytest.raises(ReaderError, match="same slice position .* two series with the same geometry mixed"):
        read_series(find_series(tmp_path)[0])

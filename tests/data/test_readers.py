"""Readers on real DICOM test files shipped with pydicom (plain and compressed) and tiny NIfTI volumes."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from dvt_search.data.readers import ReaderError, binary_mask, parse_slices
from dvt_search.data.readers.dicom import find_series, read_series
from dvt_search.data.readers.nifti import read_nifti, reorient

NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"  # Nuclear Medicine Image Storage
CT = "CT_small.dcm"  # 128x128 CT, RescaleSlope 1 / RescaleIntercept -1024, PixelSpacing 0.661468


def make_series(
    folder: Path,
    n: int,
    *,
    step: float = 2.5,
    descending: bool = False,
    slope: float | None = None,
    syntax: str | None = None,
    drop_position: bool = False,
    seed: int = 0,
) -> tuple[list[Path], np.ndarray]:
    """Copy CT_small ``n`` times as one series, slice k marked by adding 10*k to its stored pixels.

    Files get shuffled names, so discovery order is not anatomical order. Returns the files (in slice
    order, inferior first) and the expected HU volume.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, names = generate_uid(), [f"f{i:03d}.dcm" for i in random.Random(seed).sample(range(999), n)]
    files, expected = [], []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file(CT))
        pixels = ds.pixel_array.astype(np.int16) + 10 * k
        ds.PixelData = pixels.tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.7 + (-k if descending else k) * step]
        ds.InstanceNumber = k + 1
        if slope is not None:
            ds.RescaleSlope = slope
        if drop_position:
            del ds.ImagePositionPatient
        if syntax is not None:
            ds.compress(syntax)
        path = folder / names[k]
        ds.save_as(path)
        files.append(path)
        expected.append(pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    if descending:  # slice k sits lower for larger k: the inferior-first volume is reversed
        files, expected = files[::-1], expected[::-1]
    return files, np.stack(expected).astype(np.float32)


def test_find_series_groups_and_skips_non_dicom(tmp_path: Path) -> None:
    make_series(tmp_path / "a", 3)
    make_series(tmp_path / "b" / "deep", 2, seed=1)
    (tmp_path / "a" / "notes.txt").write_text("not dicom")
    (tmp_path / "b" / "DICOMDIR").write_bytes(Path(get_testdata_file("DICOMDIR")).read_bytes())
    series = find_series(tmp_path)
    assert [(s.folder.relative_to(tmp_path).as_posix(), len(s.files)) for s in series] == [
        ("a", 3),
        ("b/deep", 2),
    ]
    assert "uid" not in repr(series[0]) and series[0].uid not in repr(series[0])


def test_slices_ordered_by_position_not_file_name(tmp_path: Path) -> None:
    files, expected = make_series(tmp_path / "s", 5)
    vol = read_series(find_series(tmp_path)[0])
    np.testing.assert_array_equal(vol.scan.image, expected)
    assert vol.scan.image.shape == (5, 128, 128)
    assert vol.scan.spacing_row_mm == pytest.approx(0.661468) and vol.scan.slice_thickness_mm == 5.0
    assert vol.spacing[0] == pytest.approx(2.5)


def test_descending_positions_still_put_inferior_first(tmp_path: Path) -> None:
    _, expected = make_series(tmp_path / "s", 4, descending=True)
    vol = read_series(find_series(tmp_path)[0])
    np.testing.assert_array_equal(vol.scan.image, expected)
    assert vol.affine is not None and vol.affine[2, 0] > 0  # axis 0 points superior


def test_rescale_slope_and_intercept_give_hu(tmp_path: Path) -> None:
    _, expected = make_series(tmp_path / "s", 2, slope=2.0)
    vol = read_series(find_series(tmp_path)[0]).scan.image
    raw = pydicom.dcmread(get_testdata_file(CT)).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(vol[0], raw * 2.0 - 1024.0)
    np.testing.assert_array_equal(vol, expected)


def test_instance_number_fallback_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, expected = make_series(tmp_path / "s", 3, drop_position=True)
    with caplog.at_level(logging.WARNING):
        vol = read_series(find_series(tmp_path)[0])
    np.testing.assert_array_equal(vol.scan.image, expected)
    assert vol.affine is None
    assert "ordered by InstanceNumber" in caplog.text and str(tmp_path / "s") in caplog.text


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_compressed_files_decode_like_their_uncompressed_sibling(tmp_path: Path, name: str) -> None:
    plain = read_series(find_series(Path(get_testdata_file("MR_small.dcm")))[0]).scan.image
    packed = read_series(find_series(Path(get_testdata_file(name)))[0]).scan.image
    assert packed.shape == (1, 64, 64) and np.ptp(plain) > 0
    np.testing.assert_array_equal(packed, plain)


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm"])
def test_lossy_greyscale_syntaxes_decode(tmp_path: Path, name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))  # NM files without SliceThickness: add one, keep the pixels
    ds.SliceThickness = 1.0
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = NM_STORAGE  # stored as secondary captures
    ds.save_as(tmp_path / name)
    scan = read_series(find_series(tmp_path)[0]).scan
    raw = pydicom.dcmread(get_testdata_file(name)).pixel_array
    assert scan.image.shape == (1, *raw.shape) and np.ptp(scan.image) > 0
    np.testing.assert_array_equal(scan.image[0], raw.astype(np.float32))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_equals_uncompressed(tmp_path: Path, syntax: str) -> None:
    make_series(tmp_path / "plain", 3)
    make_series(tmp_path / "packed", 3, syntax=syntax)
    plain, packed = (read_series(s).scan.image for s in find_series(tmp_path))
    np.testing.assert_array_equal(packed, plain)


def test_colour_image_is_rejected_naming_the_file(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))  # JPEG baseline, RGB
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage  # not skipped as a capture
    path = tmp_path / "rgb.dcm"
    ds.save_as(path)
    with pytest.raises(ReaderError, match="colour image") as exc:
        read_series(find_series(path)[0])
    assert str(path) in str(exc.value)


def test_inconsistent_size_is_rejected_naming_the_file(tmp_path: Path) -> None:
    files, _ = make_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(files[1])
    ds.PixelData, ds.Rows, ds.Columns = np.zeros((64, 64), np.int16).tobytes(), 64, 64
    ds.save_as(files[1])
    with pytest.raises(ReaderError, match="size .rows x columns. 64x64 differs from 128x128") as exc:
        read_series(find_series(tmp_path)[0])
    assert str(files[1]) in str(exc.value)


def test_inconsistent_spacing_is_rejected_naming_the_file(tmp_path: Path) -> None:
    files, _ = make_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(files[2])
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(files[2])
    with pytest.raises(ReaderError, match="PixelSpacing") as exc:
        read_series(find_series(tmp_path)[0])
    assert str(files[2]) in str(exc.value)


def test_duplicate_position_is_rejected(tmp_path: Path) -> None:
    files, _ = make_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = pydicom.dcmread(files[1]).ImagePositionPatient
    ds.save_as(files[2])
    with pytest.raises(ReaderError, match="same slice position"):
        read_series(find_series(tmp_path)[0])


def test_corrupt_pixel_data_names_the_file(tmp_path: Path) -> None:
    files, _ = make_series(tmp_path / "s", 2)
    files[0].write_bytes(files[0].read_bytes()[:-20000])  # header intact, pixel data cut short
    with pytest.raises(ReaderError) as exc:
        read_series(find_series(tmp_path)[0])
    assert str(files[0]) in str(exc.value)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_layout_is_superior_posterior_left_from_any_axis_order(tmp_path: Path) -> None:
    zrc = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)  # target [Z, H, W]
    # RAS storage: i = R+ (columns reversed: they run right->left), j = A+ (rows reversed), k = S+.
    ras = zrc.transpose(2, 1, 0)[::-1, ::-1, :]
    a = _nifti(tmp_path / "ras.nii.gz", np.ascontiguousarray(ras), np.diag([0.7, 0.8, 2.0, 1.0]))
    # LPI storage (i = L+, j = P+, k = I+): the same voxels with every axis mirrored.
    lpi = ras[::-1, ::-1, ::-1]
    b = _nifti(tmp_path / "lpi.nii.gz", np.ascontiguousarray(lpi), np.diag([-0.7, -0.8, -2.0, 1.0]))
    for path in (a, b):
        vol = read_nifti(path)
        np.testing.assert_array_equal(vol.data, zrc)
        assert vol.spacing == pytest.approx((2.0, 0.8, 0.7))


def test_nifti_mask_on_another_grid_is_rejected(tmp_path: Path) -> None:
    from dvt_search.data.readers.nifti import read_mask_volume

    img = _nifti(tmp_path / "img.nii", np.zeros((5, 4, 3), np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    shifted = np.diag([1.0, 1.0, 2.0, 1.0])
    shifted[0, 3] = 3.0
    mask = _nifti(tmp_path / "mask.nii", np.zeros((5, 4, 3), np.uint8), shifted)
    vol = reorient(img)
    with pytest.raises(ReaderError, match="not on the image's voxel grid"):
        read_mask_volume(mask, vol.data.shape, vol.affine, vol.spacing, "test")


def test_corrupt_nifti_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ReaderError, match="cannot read NIfTI") as exc:
        read_nifti(path)
    assert str(path) in str(exc.value)


def test_binary_mask_accepts_0_1_and_0_255_only() -> None:
    np.testing.assert_array_equal(binary_mask(np.array([0, 255, 0], np.uint8), "m"), [0, 1, 0])
    np.testing.assert_array_equal(binary_mask(np.array([0.0, 1.0]), "m"), [0, 1])
    with pytest.raises(ReaderError, match="found 1, 2 besides 0"):
        binary_mask(np.array([0, 1, 2]), "m")
    with pytest.raises(ReaderError, match="found nan besides 0"):
        binary_mask(np.array([0.0, np.nan]), "m")


@pytest.mark.parametrize(
    "text,n,want", [("3", 5, range(3, 4)), ("1-3", 5, range(1, 4)), ("all", 4, range(4))]
)
def test_parse_slices(text: str, n: int, want: range) -> None:
    assert parse_slices(text, n, "x") == want


@pytest.mark.parametrize("text", ["-1", "3-1", "a", "2-9", "5"])
def test_parse_slices_rejects(text: str) -> None:
    with pytest.raises(ReaderError, match="x:"):
        parse_slices(text, 5, "x")

"""Ingest: DICOM / NIfTI / slice files -> dataset layout; pseudonyms, no PHI, atomic output."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dvt_search.data import io
from dvt_search.data.ingest import ingest_dicom, ingest_nifti, ingest_slices
from dvt_search.data.phantom import write_dicom_series
from dvt_search.data.readers import ReaderError
from dvt_search.data.schema import COLUMNS, patches_from_mask, read_manifest
from dvt_search.data.validate import validate_manifest

# Header values of the files used below that must never reach an output.
PHI = ["PHANTOM^ANON", "PHANTOM-0", "CompressedSamples^CT1", "1CT1", "20000101", "20040119"]
ROW_MM, COL_MM, THICK = 0.7, 0.8, 2.5


@pytest.fixture(autouse=True)
def _fresh_memmaps() -> None:
    io.clear_cache()


def phantom_series(
    root: Path, z: int = 5, h: int = 32, w: int = 48, seed: int = 0
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CT series written by the phantom's DICOM writer (files renamed so names don't give the order)."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1500, size=(z, h, w)).astype(np.int16)
    mask = np.zeros((z, h, w), np.uint8)
    mask[:, 4:12, 30:40] = 1
    mask[2, 20:22, 3:5] = 1
    folder = root / "pat" / "ct"
    files = write_dicom_series(hu, folder, spacing_mm=(ROW_MM, COL_MM), thickness_mm=THICK, seed=seed)
    for k, f in enumerate(files):
        f.rename(folder / f"x{(7 * k) % z}_{k}.dcm.tmp")
    for f in folder.glob("*.tmp"):
        f.rename(f.with_suffix(""))
    return folder, hu, mask


def ct_small_series(folder: Path, n: int = 3) -> str:
    """``n`` copies of pydicom's CT_small (real header PHI) as one series; returns the SeriesInstanceUID."""
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * k]
        ds.save_as(folder / f"{k}.dcm")
    return uid


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for value in PHI:
            assert value not in text, f"{value!r} leaked"


def test_dicom_ingest_end_to_end_without_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "in"
    folder, hu, mask = phantom_series(root)
    np.save(tmp_path / "mask.npy", mask)
    uid = ct_small_series(root / "other")
    labels = write_csv(
        tmp_path / "labels.csv",
        "series,slice,label,anatomy,mask",
        "pat/ct,0-2,0,femoral,mask.npy",
        "pat/ct,3-4,1,,",
        f"{uid},all,0,iliac,",
    )
    with caplog.at_level(logging.DEBUG):
        manifest = ingest_dicom(
            root, tmp_path / "out", labels_csv=labels, salt="s3cret", allow_missing_masks=True
        )
    df = read_manifest(manifest)
    assert list(df.columns) == list(COLUMNS) and len(df) == 8
    ours = df[df.source.eq("dicom") & df.anatomy.eq("femoral")].sort_values("slice_index")
    assert ours.slice_index.tolist() == [0, 1, 2, 3, 4] and ours.label.tolist() == [0, 0, 0, 1, 1]
    assert (
        ours.image_index.tolist() == [0, 1, 2, 3, 4]
        and ours.height.iloc[0] == 32
        and ours.width.iloc[0] == 48
    )
    assert ours.spacing_row_mm.iloc[0] == pytest.approx(ROW_MM) and ours.spacing_col_mm.iloc[
        0
    ] == pytest.approx(COL_MM)
    image = np.load(tmp_path / "out" / ours.image_path.iloc[0])
    assert image.dtype == np.int16
    np.testing.assert_array_equal(image, hu)  # slice order and HU (intercept -1024) restored
    np.testing.assert_array_equal(np.load(tmp_path / "out" / ours.mask_path.iloc[0]), mask)
    for row in ours.itertuples():
        np.testing.assert_array_equal(row.patches, patches_from_mask(mask[row.slice_index]).ravel())
    other = df[df.anatomy.eq("iliac")]
    assert len(other) == 3 and not np.load(tmp_path / "out" / other.mask_path.iloc[0]).any()
    assert validate_manifest(manifest).ok
    assert_no_phi(manifest.read_bytes().decode("latin-1"), caplog.text, *capsys.readouterr())
    assert uid not in manifest.read_bytes().decode("latin-1") and uid not in caplog.text
    assert not (tmp_path / "out" / "salt.txt").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_dicom_mask_as_nifti_is_put_on_the_series_grid(tmp_path: Path) -> None:
    folder, _, mask = phantom_series(tmp_path / "in")
    z, h, w = mask.shape
    x0, y0 = -(w - 1) / 2 * COL_MM, -(h - 1) / 2 * ROW_MM  # the phantom writer's ImagePositionPatient
    ras = np.ascontiguousarray(mask.transpose(2, 1, 0)[::-1, ::-1, :])  # i = R+, j = A+, k = S+
    affine = np.diag([COL_MM, ROW_MM, THICK, 1.0])
    affine[:3, 3] = [-x0 - (w - 1) * COL_MM, -y0 - (h - 1) * ROW_MM, 0.0]
    nib.save(nib.Nifti1Image(ras, affine), str(tmp_path / "m.nii.gz"))
    labels = write_csv(tmp_path / "l.csv", "series,slice,label,mask", f"{folder},all,0,m.nii.gz")
    manifest = ingest_dicom(tmp_path / "in", tmp_path / "out", labels_csv=labels, salt="x")
    np.testing.assert_array_equal(np.load(manifest.parent / read_manifest(manifest).mask_path[0]), mask)
    affine[0, 3] += 5.0  # a mask from another scan position
    nib.save(nib.Nifti1Image(ras, affine), str(tmp_path / "m.nii.gz"))
    with pytest.raises(ReaderError, match="not on the image's voxel grid"):
        ingest_dicom(tmp_path / "in", tmp_path / "out2", labels_csv=labels, salt="x")


def test_missing_masks_need_the_flag(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    phantom_series(tmp_path / "in")
    labels = write_csv(tmp_path / "l.csv", "series,slice,label", "pat/ct,all,1")
    with pytest.raises(ReaderError, match="--allow-missing-masks"):
        ingest_dicom(tmp_path / "in", tmp_path / "out", labels_csv=labels, salt="x")
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.WARNING):
        manifest = ingest_dicom(
            tmp_path / "in", tmp_path / "out", labels_csv=labels, salt="x", allow_missing_masks=True
        )
    assert "all-zero mask" in caplog.text
    assert not np.load(manifest.parent / read_manifest(manifest).mask_path[0]).any()


def test_pseudonyms_salt_and_id_map(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    phantom_series(tmp_path / "in")
    labels = write_csv(tmp_path / "l.csv", "series,slice,label", "pat/ct,all,0")

    def ids(out: str, **kw: object) -> tuple[str, str, str]:
        df = read_manifest(
            ingest_dicom(tmp_path / "in", tmp_path / out, labels_csv=labels, allow_missing_masks=True, **kw)
        )
        return df.patient_id[0], df.study_id[0], df.scan_id[0]

    a, b, c = ids("a", salt="one"), ids("b", salt="one"), ids("c", salt="two")
    assert a == b and a[0] != c[0] and a[2] != c[2]
    assert a[0].startswith("P-") and a[1].startswith("ST-") and a[2].startswith("SC-")
    with caplog.at_level(logging.WARNING):
        d = ids("d")
    salt_file = tmp_path / "d" / "salt.txt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert "keep it secret" in caplog.text.lower()
    assert ids("e", salt=salt_file.read_text().strip()) == d
    id_map = write_csv(tmp_path / "map.csv", "original,pseudonym", "PHANTOM-0,case-007")
    assert ids("f", salt="one", id_map=id_map) == ("case-007", a[1], a[2])
    other_map = write_csv(tmp_path / "map2.csv", "original,pseudonym", "someone-else,case-1")
    with pytest.raises(ReaderError, match="patient not found in") as exc:
        ids("g", salt="one", id_map=other_map)
    assert_no_phi(str(exc.value))


def test_error_leaves_nothing_half_written(tmp_path: Path) -> None:
    phantom_series(tmp_path / "in")
    ct_small_series(tmp_path / "in" / "zz")
    bad = tmp_path / "in" / "zz" / "1.dcm"
    bad.write_bytes(bad.read_bytes()[:-5000])
    labels = write_csv(tmp_path / "l.csv", "series,slice,label", "pat/ct,all,0", "zz,all,1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(ReaderError) as exc:
        ingest_dicom(tmp_path / "in", out, labels_csv=labels, salt="x", allow_missing_masks=True)
    assert str(bad) in str(exc.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_refuses_to_overwrite_a_dataset(tmp_path: Path) -> None:
    phantom_series(tmp_path / "in")
    labels = write_csv(tmp_path / "l.csv", "series,slice,label", "pat/ct,all,0")
    kw = dict(labels_csv=labels, salt="x", allow_missing_masks=True)
    manifest = ingest_dicom(tmp_path / "in", tmp_path / "out", **kw)
    before = manifest.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        ingest_dicom(tmp_path / "in", tmp_path / "out", **kw)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize(
    "line,match",
    [
        ("nowhere/ct,all,0", "l.csv:2 column 'series': no DICOM series"),
        ("pat/ct,3-9,0", "l.csv:2 column 'slice': .* out of range"),
        ("pat/ct,0,yes", "l.csv:2 column 'label': label 'yes'"),
        ("pat/ct,0,1\npat/ct,0-1,0", "l.csv:3: slice 0 .* labelled twice"),
    ],
)
def test_bad_labels_name_the_line(tmp_path: Path, line: str, match: str) -> None:
    phantom_series(tmp_path / "in")
    labels = write_csv(tmp_path / "l.csv", "series,slice,label", line)
    with pytest.raises(ReaderError, match=match):
        ingest_dicom(tmp_path / "in", tmp_path / "out", labels_csv=labels, salt="x", allow_missing_masks=True)


def test_nifti_ingest_with_three_label_forms(tmp_path: Path) -> None:
    zrc = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5) - 50
    ras = np.ascontiguousarray(zrc.transpose(2, 1, 0)[::-1, ::-1, :])
    lpi = np.ascontiguousarray(ras[::-1, ::-1, ::-1])  # same voxels stored with every axis mirrored
    mask = np.zeros_like(zrc, dtype=np.uint8)
    mask[1:3, 2:4, 1:3] = 1
    clots = np.zeros_like(mask)
    clots[2, 3, 2] = 1
    ras_aff, lpi_aff = np.diag([0.9, 0.8, 3.0, 1.0]), np.diag([-0.9, -0.8, -3.0, 1.0])
    for name, data, aff in (
        ("a.nii.gz", ras, ras_aff),
        ("b.nii", lpi, lpi_aff),
        ("a_mask.nii.gz", np.ascontiguousarray(mask.transpose(2, 1, 0)[::-1, ::-1, :]), ras_aff),
        (
            "b_clot.nii",
            np.ascontiguousarray(clots.transpose(2, 1, 0)[::-1, ::-1, :][::-1, ::-1, ::-1]),
            lpi_aff,
        ),
    ):
        nib.save(nib.Nifti1Image(data, aff), str(tmp_path / name))
    write_csv(tmp_path / "a_labels.csv", "slice,label", "0-1,0", "3,1")
    listing = write_csv(
        tmp_path / "list.csv",
        "image,mask,patient,study,anatomy,labels",
        "a.nii.gz,a_mask.nii.gz,MRN1,ACC1,femoral,a_labels.csv",
        "b.nii,,MRN1,ACC2,iliac,b_clot.nii",
        "a.nii.gz,a_mask.nii.gz,MRN2,ACC3,,0110",
    )
    manifest = ingest_nifti(listing, tmp_path / "out", salt="x", allow_missing_masks=True)
    df = read_manifest(manifest)
    assert validate_manifest(manifest).ok
    assert df.patient_id.nunique() == 2 and df.scan_id.nunique() == 3 and df.study_id.nunique() == 3
    first, second, third = (df[df.scan_id == s] for s in df.scan_id.unique())
    assert first.slice_index.tolist() == [0, 1, 3] and first.label.tolist() == [0, 0, 1]
    assert second.label.tolist() == [0, 0, 1, 0] and set(second.anatomy) == {"iliac"}
    assert third.label.tolist() == [0, 1, 1, 0]
    for part in (first, second):
        np.testing.assert_array_equal(np.load(manifest.parent / part.image_path.iloc[0]), zrc)
    np.testing.assert_array_equal(np.load(manifest.parent / first.mask_path.iloc[0]), mask)
    assert first.spacing_row_mm.iloc[0] == pytest.approx(0.8) and first.slice_thickness_mm.iloc[
        0
    ] == pytest.approx(3.0)
    assert "MRN" not in manifest.read_bytes().decode("latin-1")


def test_nifti_label_string_of_wrong_length(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 4), np.int16), np.eye(4)), str(tmp_path / "a.nii"))
    listing = write_csv(tmp_path / "list.csv", "image,patient,study,labels", "a.nii,p,s,010")
    with pytest.raises(ReaderError, match="list.csv:2 labels: labels string has 3 character"):
        ingest_nifti(listing, tmp_path / "out", salt="x", allow_missing_masks=True)


def test_slices_ingest_png_and_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 2000, size=(3, 20, 24)).astype(np.int16)
    mask = np.zeros((3, 20, 24), np.uint8)
    mask[:, 5:9, 10:14] = 1
    lines = []
    for k, number in enumerate((5, 3, 4)):  # listed out of order, with a gap before 3
        cv2.imwrite(str(tmp_path / f"i{k}.png"), (hu[k].astype(np.int32) + 1024).astype(np.uint16))
        cv2.imwrite(str(tmp_path / f"m{k}.png"), mask[k] * 255)
        lines.append(f"i{k}.png,m{k}.png,MRN9,ACC1,series3,{number},{k % 2}")
    np.save(tmp_path / "n.npy", hu[0].astype(np.float32) + 1024)
    np.save(tmp_path / "nm.npy", mask[0])
    lines.append("n.npy,nm.npy,MRN9,ACC1,series4,0,1")
    listing = write_csv(tmp_path / "s.csv", "image,mask,patient,study,scan,slice,label", *lines)
    manifest = ingest_slices(
        listing, tmp_path / "out", salt="x", spacing_mm=(0.7, 0.7), slice_thickness_mm=3, intercept=-1024
    )
    df = read_manifest(manifest)
    assert validate_manifest(manifest).ok
    png = df[df.source == "png"]
    assert png.slice_index.tolist() == [3, 4, 5] and png.image_index.tolist() == [0, 1, 2]
    assert png.label.tolist() == [1, 0, 0]
    np.testing.assert_array_equal(np.load(manifest.parent / png.image_path.iloc[0]), hu[[1, 2, 0]])
    np.testing.assert_array_equal(np.load(manifest.parent / png.mask_path.iloc[0]), mask[[1, 2, 0]])
    npy = df[df.source == "npy"]
    np.testing.assert_array_equal(np.load(manifest.parent / npy.image_path.iloc[0])[0], hu[0])


def test_slices_errors_name_the_line(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.int16))
    np.save(tmp_path / "m.npy", np.zeros((4, 4), np.uint8))
    np.save(tmp_path / "ok.npy", np.zeros((8, 8), np.uint8))
    header = "image,mask,patient,study,scan,slice,label"
    cases = [
        ("a.npy,ok.npy,p,s,c,0,0", "s.csv:2 column 'spacing_row_mm': empty"),
        ("a.npy,m.npy,p,s,c,0,0", r"s.csv:2 column 'mask': mask \(4, 4\) != image \(8, 8\)"),
        ("a.npy,missing.npy,p,s,c,0,0", "s.csv:2 column 'mask': file not found"),
        (
            "a.npy,ok.npy,p,s,c,0,0\na.npy,ok.npy,p,s,c,0,1",
            "s.csv:3 column 'slice': slice 0 of this scan already on line 2",
        ),
    ]
    for k, (line, match) in enumerate(cases):
        listing = write_csv(tmp_path / "s.csv", header, line)
        spacing = None if k == 0 else (1.0, 1.0)
        with pytest.raises(ReaderError, match=match):
            ingest_slices(listing, tmp_path / f"out{k}", salt="x", spacing_mm=spacing, slice_thickness_mm=1.0)
        assert not (tmp_path / f"out{k}").exists()


def test_phantom_dicom_export_round_trips_through_ingest(phantom_data, tmp_path: Path) -> None:
    from dvt_search.data.phantom import export_scan_dicom

    source = phantom_data(patients=1, size=64, slices_per_scan=4, seed=2).manifest
    df = read_manifest(source)
    scan = df.scan_id.iloc[0]
    rows = df[df.scan_id == scan].sort_values("slice_index")
    export_scan_dicom(source, scan, tmp_path / "dcm" / "series")
    image = np.load(source.parent / rows.image_path.iloc[0])
    mask = np.load(source.parent / rows.mask_path.iloc[0])
    np.save(tmp_path / "mask.npy", mask)
    labels = ["series,slice,label,anatomy,mask"] + [
        f"series,{r.image_index},{r.label},{r.anatomy},mask.npy" for r in rows.itertuples()
    ]
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    manifest = ingest_dicom(tmp_path / "dcm", tmp_path / "out", labels_csv=tmp_path / "labels.csv", salt="x")
    got = read_manifest(manifest)
    np.testing.assert_array_equal(np.load(manifest.parent / got.image_path[0]), image)
    assert got.label.tolist() == rows.label.tolist()
    assert [p.tolist() for p in got.patches] == [p.tolist() for p in rows.patches]
    assert got.spacing_row_mm[0] == pytest.approx(rows.spacing_row_mm.iloc[0])

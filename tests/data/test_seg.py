"""DICOM SEG masks (written with highdicom over pydicom's CT_small) -> ingest -> manifest -> validate."""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from dvt_testkit_dicom import blank_uids
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dvt_search.cli import main
from dvt_search.data import io
from dvt_search.data.readers import ReaderError
from dvt_search.data.readers.dicom import find_series, read_series
from dvt_search.data.readers.seg import choose_segments, open_seg, seg_mask
from dvt_search.data.schema import patches_from_mask

N = 4


@pytest.fixture(autouse=True)
def _fresh_memmaps() -> None:
    io.clear_cache()


def ct_series(folder: Path, n: int = N, z0: float = -75.7) -> list[pydicom.Dataset]:
    """``n`` CT_small copies, 5 mm apart, stored top slice first (so file order is not slice order)."""
    folder.mkdir(parents=True)
    uid, out = generate_uid(), []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-158.135803, -179.035797, z0 + 5.0 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{n - k:03d}.dcm")
        out.append(ds)
    return out  # inferior first


def write_seg(
    path: Path, sources: list[pydicom.Dataset], masks: dict[str, np.ndarray], kind: str = "BINARY"
) -> Path:
    """A SEG of type ``kind`` (one segment per label) over ``sources``, written by highdicom."""
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Vein if "vein" in label else codes.SCT.Artery,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, label in enumerate(masks, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(list(masks.values()), axis=-1).astype(
            np.float32 if kind == "FRACTIONAL" else bool
        ),
        segmentation_type=hd.seg.SegmentationTypeValues[kind],
        segment_descriptions=descs,
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="dvt-search tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def vein_mask(n: int = N) -> np.ndarray:
    m = np.zeros((n, 128, 128), bool)
    m[1, 40:60, 30:50] = True
    m[2, 10:14, 100:120] = True
    return m


def ingest(tmp_path: Path, labels: str, *extra: str) -> tuple[int, Path]:
    csv = tmp_path / "labels.csv"
    csv.write_text(labels)
    out = tmp_path / "out"
    code = main(
        [
            "data",
            "ingest",
            "dicom",
            str(tmp_path / "in"),
            "--labels",
            str(csv),
            "--out",
            str(out),
            "--salt",
            "s",
        ]
        + list(extra)
    )
    return code, out


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL", "LABELMAP"])
def test_seg_by_referenced_instances_ingests_and_validates(tmp_path: Path, capsys, caplog, kind: str) -> None:
    caplog.set_level(logging.INFO)
    sources = ct_series(tmp_path / "in" / "ct")
    mask = vein_mask()
    write_seg(tmp_path / "seg" / "vein.dcm", sources, {"femoral vein": mask}, kind)
    code, out = ingest(tmp_path, "series,slice,label\nct,all,0\n", "--seg", str(tmp_path / "seg"))
    assert code == 0, capsys.readouterr().err
    assert "aligned by referenced SOP instances" in caplog.text
    stored = np.load(out / "volumes" / pd.read_parquet(out / "manifest.parquet").scan_id[0] / "mask.npy")
    np.testing.assert_array_equal(stored, mask.astype(np.uint8))
    df = pd.read_parquet(out / "manifest.parquet").sort_values("slice_index")
    for z, row in enumerate(df.itertuples()):
        np.testing.assert_array_equal(row.patches, patches_from_mask(mask[z]).ravel())
    assert main(["data", "validate", str(out / "manifest.parquet")]) == 0


def _blank_seg_references(path: Path) -> None:
    """De-identify a SEG as its series: its own and every referenced UID blanked."""
    ds = pydicom.dcmread(path)
    blank_uids(ds)
    for item in ds.ReferencedSeriesSequence:
        item.SeriesInstanceUID = ""
        for ref in item.ReferencedInstanceSequence:
            ref.ReferencedSOPInstanceUID = ""
    for frame in ds.PerFrameFunctionalGroupsSequence:
        for derivation in frame.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                source.ReferencedSOPInstanceUID = ""
    ds.save_as(path)


@pytest.mark.parametrize(
    "blank_seg, kind", [(False, "BINARY"), (True, "BINARY"), (True, "FRACTIONAL"), (True, "LABELMAP")]
)
def test_seg_aligned_by_positions_when_uids_are_blanked(
    tmp_path: Path, capsys, caplog, blank_seg: bool, kind: str
) -> None:
    caplog.set_level(logging.INFO)
    sources = ct_series(tmp_path / "in" / "ct")
    mask = vein_mask()
    seg = write_seg(tmp_path / "vein_seg", sources, {"femoral vein": mask}, kind)
    if blank_seg:
        _blank_seg_references(seg)
    for f in (tmp_path / "in" / "ct").iterdir():  # de-identified series: every UID blank
        ds = pydicom.dcmread(f)
        blank_uids(ds)
        ds.save_as(f)
    series = find_series(tmp_path / "in")
    vol = read_series(series[0])
    found = open_seg(seg)
    np.testing.assert_array_equal(seg_mask(found, vol, [1], "test"), mask.astype(np.uint8))
    assert "aligned by slice positions" in caplog.text
    code, out = ingest(tmp_path, f"series,slice,label,mask\nct,all,0,{seg}\n")  # SEG in the mask column
    assert code == 0, capsys.readouterr().err
    assert main(["data", "validate", str(out / "manifest.parquet")]) == 0
    scan = pd.read_parquet(out / "manifest.parquet").scan_id[0]
    np.testing.assert_array_equal(np.load(out / "volumes" / scan / "mask.npy"), mask.astype(np.uint8))


def test_segment_choice_by_label_number_or_vein_default(tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "in" / "ct")
    artery = np.zeros((N, 128, 128), bool)
    artery[0, 0:5, 0:5] = True
    seg = open_seg(write_seg(tmp_path / "s.dcm", sources, {"artery": artery, "femoral vein": vein_mask()}))
    assert seg.segments == {1: "artery", 2: "femoral vein"}
    assert choose_segments(seg, None) == [2]  # the one segment typed/labelled as a vein
    assert choose_segments(seg, "Artery") == [1] and choose_segments(seg, "1,femoral vein") == [1, 2]
    vol = read_series(find_series(tmp_path / "in")[0])
    both = seg_mask(seg, vol, [1, 2], "t")
    np.testing.assert_array_equal(both, (artery | vein_mask()).astype(np.uint8))
    with pytest.raises(ReaderError, match="no segment 'aorta' .segments: 1 'artery', 2 'femoral vein'"):
        choose_segments(seg, "aorta")
    two_veins = open_seg(write_seg(tmp_path / "t.dcm", sources, {"left vein": artery, "right vein": artery}))
    with pytest.raises(ReaderError, match="2 segments .* choose the vein mask with --seg-segment"):
        choose_segments(two_veins, None)


def test_seg_of_another_series_is_an_error_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    ct_series(tmp_path / "in" / "ct")
    other = ct_series(tmp_path / "other", z0=0.0)  # same size, other table positions
    seg = write_seg(tmp_path / "s.dcm", other, {"vein": vein_mask()})
    for f in list((tmp_path / "in" / "ct").iterdir()):
        ds = pydicom.dcmread(f)
        blank_uids(ds)
        ds.save_as(f)
    code, out = ingest(tmp_path, f"series,slice,label,mask\nct,all,0,{seg}\n")
    err = capsys.readouterr().err
    assert code == 1 and str(seg) in err and "frame 1 lies on no slice of the series" in err
    assert not out.exists()
    code, out = ingest(tmp_path, "series,slice,label\nct,all,0\n", "--seg", str(seg))  # fits no series
    assert code == 1 and "no mask for series" in capsys.readouterr().err and not out.exists()


def test_seg_option_rejects_a_file_that_is_not_a_seg(tmp_path: Path, capsys) -> None:
    ct_series(tmp_path / "in" / "ct")
    code, _ = ingest(tmp_path, "series,slice,label\nct,all,0\n", "--seg", get_testdata_file("CT_small.dcm"))
    assert code == 1 and "not a DICOM SEG or RTSTRUCT file" in capsys.readouterr().err


def write_rtstruct(
    path: Path, sources: list[pydicom.Dataset], contours: dict[str, list[tuple[int, list]]]
) -> Path:
    """A minimal RT structure set: ROI name -> [(slice, [(col, row) pixel vertices])] on ``sources``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTStructureSetStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        RTStructureSetStorage,
        meta.MediaStorageSOPInstanceUID,
        "RTSTRUCT",
    )
    ds.PatientName, ds.PatientID, ds.StructureSetLabel = "PHANTOM^ANON", "PHANTOM-1", "veins"
    series = Dataset()
    series.SeriesInstanceUID = sources[0].SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, roi_contours = [], []
    for number, (name, items) in enumerate(contours.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        rois.append(roi)
        seq = []
        for z, vertices in items:
            src = sources[z]
            ipp, ps = np.asarray(src.ImagePositionPatient, float), float(src.PixelSpacing[0])
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.ContourData = [v for col, row in vertices for v in (ipp + [col * ps, row * ps, 0.0]).round(4)]
            c.NumberOfContourPoints = len(vertices)
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
            c.ContourImageSequence = Sequence([ref])
            seq.append(c)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ContourSequence = number, Sequence(seq)
        roi_contours.append(rc)
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(rois), Sequence(roi_contours)
    ds.save_as(path, enforce_file_format=False)
    return path


def _box(c0: int, r0: int, c1: int, r1: int) -> list[tuple[int, int]]:
    return [(c0, r0), (c1, r0), (c1, r1), (c0, r1)]


@pytest.mark.parametrize("blank", [False, True])
def test_rtstruct_contours_become_the_mask(tmp_path: Path, capsys, blank: bool) -> None:
    sources = ct_series(tmp_path / "in" / "ct")
    rt = write_rtstruct(
        tmp_path / "rt.dcm",
        sources,
        {
            "artery": [(2, _box(0, 0, 9, 9))],
            "femoral vein": [(1, _box(30, 40, 49, 59)), (1, _box(35, 45, 44, 54))],
        },
    )
    if blank:
        for f in (tmp_path / "in" / "ct").iterdir():
            ds = pydicom.dcmread(f)
            blank_uids(ds)
            ds.save_as(f)
    expected = np.zeros((N, 128, 128), np.uint8)
    expected[1, 40:60, 30:50] = 1
    expected[1, 45:55, 35:45] = 0  # the inner contour (outline included) is a hole
    code, out = ingest(tmp_path, "series,slice,label\nct,all,0\n", "--seg", str(rt))
    assert code == 0, capsys.readouterr().err
    scan = pd.read_parquet(out / "manifest.parquet").scan_id[0]
    np.testing.assert_array_equal(np.load(out / "volumes" / scan / "mask.npy"), expected)
    assert main(["data", "validate", str(out / "manifest.parquet")]) == 0


def test_broken_seg_is_one_line_naming_the_file_without_uids(tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "in" / "ct")
    path = write_seg(tmp_path / "s.dcm", sources, {"vein": vein_mask()})
    ds = pydicom.dcmread(path)
    del ds.SegmentSequence
    ds.save_as(path)
    with pytest.raises(ReaderError) as exc:
        open_seg(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: not a readable DICOM SEG") and "\n" not in text
    for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, sources[0].SOPInstanceUID):
        assert uid not in text
    from dvt_search.data.readers.seg import _scrub

    uid = sources[0].SOPInstanceUID  # library messages that quote a UID lose it
    assert _scrub(KeyError(f"no frame for {uid}")) == "KeyError: 'no frame for <UID>'"

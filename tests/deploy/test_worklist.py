"""Batch predict (worklist), NIfTI input and out-of-scope warnings through `dvt-search predict`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvt_search.cli import main
from dvt_search.data.phantom import export_scan_dicom
from dvt_search.data.phantom.dicom import PATIENT_NAME

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")]


@pytest.fixture(scope="module")
def phantom_scans(selected_run) -> list[str]:
    preds = pd.read_parquet(selected_run["run"].path / "test_predictions.parquet")
    return sorted(preds["scan_id"].unique())


def _header_values(files: list[Path]) -> set[str]:
    """Names, ids and UIDs of the headers (what must never reach an output)."""
    import pydicom

    out = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for tag in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(tag, "") or "")
            if value:
                out.add(value)
    return out


def _write_nifti(volume: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """``[Z, H, W]`` (ingest layout: rows A->P, columns R->L) stored the usual RAS way (x right, y anterior)."""
    import nibabel as nib

    xyz = np.ascontiguousarray(volume.transpose(2, 1, 0)[::-1, ::-1, :]).astype(np.int16)
    dz, dr, dc = spacing
    nib.save(nib.Nifti1Image(xyz, np.diag([dc, dr, dz, 1.0])), str(path))


def _texts(out: Path) -> list[str]:
    texts = []
    for p in out.rglob("*"):
        if p.suffix == ".parquet":
            texts.append(pd.read_parquet(p).to_csv())
        elif p.is_file():
            texts.append(p.read_bytes().decode("latin-1"))
    return texts


def test_batch_folder_worklist_scores_two_and_reports_the_broken_one(
    exported, selected_run, phantom_scans, tmp_path, capsys, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    studies = tmp_path / "studies"
    good_a = export_scan_dicom(selected_run["manifest"], phantom_scans[0], studies / "a_ct")
    good_b = export_scan_dicom(selected_run["manifest"], phantom_scans[1], studies / "b_ct")
    broken = export_scan_dicom(selected_run["manifest"], phantom_scans[2], studies / "c_broken")
    data = broken[1].read_bytes()
    broken[1].write_bytes(data[: len(data) - 200])  # pixel data cut short
    out = tmp_path / "wl"
    code = main(["predict", "--model", str(exported / "vgg16"), "--batch", str(studies), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    df = pd.read_parquet(out / "worklist.parquet")
    csv = pd.read_csv(out / "worklist.csv", keep_default_na=False)
    assert df["series_key"].tolist() == csv["series_key"].tolist() == ["a_ct", "b_ct", "c_broken"]
    assert csv["error"].tolist() == df["error"].tolist()
    scored, failed = df[df["error"] == ""], df[df["error"] != ""]
    assert len(scored) == 2 and len(failed) == 1
    assert failed["series_key"].item() == "c_broken" and "c_broken" in failed["error"].item()
    assert "[3/3] c_broken: ERROR" in printed.err and "Traceback" not in printed.err + printed.out
    assert "3 series: 2 scored" in printed.out and "1 failed" in printed.out
    thr = json.loads((exported / "vgg16" / "threshold.json").read_text())
    key = "scan_threshold" if thr.get("scan_threshold") is not None else "threshold"
    assert (scored["threshold_key"] == key).all() and np.allclose(scored["threshold"].astype(float), thr[key])
    for row in scored.itertuples():
        slices = pd.read_csv(out / row.output / "slices.csv")
        assert row.n_slices == len(slices)
        assert row.scan_score == pytest.approx(slices["probability"].max(), abs=1e-6)
        assert row.top_slice == slices["probability"].idxmax()
        assert row.decision == ("DVT suspected" if row.scan_score >= thr[key] else "no DVT detected")
        assert row.in_scope and row.warnings == ""  # phantom thighs are in scope
        assert not list((out / row.output).glob("*.png"))  # no --heatmaps
    assert df["n_slices"].isna().tolist() == [False, False, True]
    leaks = _header_values(good_a + good_b + broken) | {PATIENT_NAME, "PHANTOM"}
    for blob in [printed.out, printed.err, caplog.text, *_texts(out)]:
        for value in leaks:
            assert value not in blob


def test_batch_csv_mixes_dicom_nifti_and_warns_on_non_leg_anatomy(
    exported, selected_run, phantom_scans, tmp_path, capsys, caplog
) -> None:
    from pydicom.data import get_testdata_file

    from dvt_search.data.readers.dicom import find_series, read_series

    caplog.set_level(logging.DEBUG)
    root = tmp_path / "in"
    dicom = export_scan_dicom(selected_run["manifest"], phantom_scans[0], root / "leg")
    vol = read_series(find_series(root / "leg")[0])
    _write_nifti(vol.scan.image, vol.spacing, root / "leg.nii.gz")
    (root / "chest").mkdir()
    ct_small = Path(get_testdata_file("CT_small.dcm"))
    mr_small = Path(get_testdata_file("MR_small.dcm"))
    shutil.copy(ct_small, root / "chest" / "ct.dcm")
    (root / "mr").mkdir()
    shutil.copy(mr_small, root / "mr" / "mr.dcm")
    listing = tmp_path / "list.csv"
    listing.write_text("path,series\nin/leg,\nin/leg.nii.gz,\nin/chest,\nin/mr,\nin/missing,\n")
    out = tmp_path / "wl"
    code = main(
        [
            "predict",
            "--model",
            str(exported / "vgg16"),
            "--batch",
            str(listing),
            "--out",
            str(out),
            "--heatmaps",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    df = pd.read_parquet(out / "worklist.parquet").set_index("series_key")
    assert list(df.index) == ["in/leg", "in/leg.nii.gz", "in/chest", "in/mr", "in/missing"]
    assert df.loc["in/leg.nii.gz", "source"] == "nifti" and df.loc["in/leg", "source"] == "dicom"
    # the NIfTI copy of a series scores like the series itself (same layout, same preprocessing)
    a = pd.read_csv(out / df.loc["in/leg", "output"] / "slices.csv")
    b = pd.read_csv(out / df.loc["in/leg.nii.gz", "output"] / "slices.csv")
    np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-6)
    assert bool(df.loc["in/leg", "in_scope"]) and bool(df.loc["in/leg.nii.gz", "in_scope"])
    assert (
        not df.loc["in/chest", "in_scope"]
        and "do not look like thigh or pelvis" in df.loc["in/chest", "warnings"]
    )
    assert not df.loc["in/mr", "in_scope"] and "modality MR, not CT" in df.loc["in/mr", "warnings"]
    assert "no such file or folder" in df.loc["in/missing", "error"]
    assert "in/chest:" in printed.out and "OUT OF SCOPE" in printed.out
    positive = df.loc["in/leg", "positive_slices"]
    assert len(list((out / df.loc["in/leg", "output"]).glob("heatmap_slice_*.png"))) == positive
    leaks = _header_values([*dicom, ct_small, mr_small]) | {"CompressedSamples", PATIENT_NAME}
    for blob in [printed.out, printed.err, caplog.text, *_texts(out)]:
        for value in leaks:
            if len(value) >= 6 or not blob.startswith("\x89PNG"):
                assert value not in blob


def test_single_non_leg_series_warns_in_summary_and_terminal(exported, tmp_path, capsys) -> None:
    from pydicom.data import get_testdata_file

    (tmp_path / "ct").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct" / "ct.dcm")
    out = tmp_path / "pred"
    code = main(
        [
            "predict",
            "--model",
            str(exported / "sift_bow_svm"),
            "--dicom",
            str(tmp_path / "ct"),
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["in_scope"] is False and summary["warnings"]
    assert "WARNING: out of scope:" in printed and "do not rely on this decision" in printed


def test_nifti_predict_matches_dicom_predict(exported, selected_run, phantom_scans, tmp_path) -> None:
    from dvt_search.data.readers.dicom import find_series, read_series

    export_scan_dicom(selected_run["manifest"], phantom_scans[1], tmp_path / "s")
    vol = read_series(find_series(tmp_path / "s")[0])
    _write_nifti(vol.scan.image, vol.spacing, tmp_path / "s.nii")
    base = ["predict", "--model", str(exported / "sift_bow_svm")]
    assert main([*base, "--dicom", str(tmp_path / "s"), "--out", str(tmp_path / "d")]) == 0
    assert main([*base, "--nifti", str(tmp_path / "s.nii"), "--out", str(tmp_path / "n")]) == 0
    d, n = (pd.read_csv(tmp_path / x / "slices.csv") for x in ("d", "n"))
    np.testing.assert_allclose(d["probability"], n["probability"], atol=1e-9)
    summary = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert summary["source"] == "nifti" and summary["scope"]["modality"] == "not recorded (CT assumed)"


def test_batch_where_every_series_fails_exits_non_zero(exported, tmp_path, capsys) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("path\nnope_a\nnope_b\n")
    out = tmp_path / "wl"
    assert (
        main(["predict", "--model", str(exported / "vgg16"), "--batch", str(listing), "--out", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert "every series failed" in err and "[1/2] nope_a: ERROR" in err
    assert (pd.read_csv(out / "worklist.csv")["error"].str.len() > 0).all()


@pytest.mark.parametrize("scan_threshold, decision", [(1.5, "no DVT detected"), (0.0, "DVT suspected")])
def test_scan_decision_uses_the_exported_scan_threshold(
    exported, selected_run, phantom_scans, tmp_path, scan_threshold, decision
) -> None:
    model = tmp_path / "model"
    shutil.copytree(exported / "sift_bow_svm", model)
    doc = json.loads((model / "threshold.json").read_text())
    doc["scan_threshold"] = scan_threshold  # as an export with an exam-level threshold records it
    (model / "threshold.json").write_text(json.dumps(doc))
    export_scan_dicom(selected_run["manifest"], phantom_scans[0], tmp_path / "in" / "s")
    out = tmp_path / "wl"
    assert main(["predict", "--model", str(model), "--batch", str(tmp_path / "in"), "--out", str(out)]) == 0
    row = pd.read_parquet(out / "worklist.parquet").iloc[0]
    assert row["threshold_key"] == "scan_threshold" and row["threshold"] == scan_threshold
    assert row["decision"] == decision
    summary = json.loads((out / row["output"] / "summary.json").read_text())
    assert summary["scan_threshold_key"] == "scan_threshold" and summary["threshold"] == doc["threshold"]

"""De-identified DICOM (every UID blanked) from pydicom's compressed CT files: ingest -> validate -> predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from dvt_search.cli import main

pytestmark = pytest.mark.slow

PHI = ("CQ500",)  # PatientName/PatientID of 693_J2KI.dcm


def test_uid_less_compressed_series_ingests_validates_and_predicts(
    exported: Path, bundled_ct_series, tmp_path: Path, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO)
    bundled_ct_series(tmp_path / "in" / "exam", 4)  # JPEG 2000 (lossy + lossless), JPEG-LS, RLE; no UIDs
    labels = tmp_path / "labels.csv"
    labels.write_text("series,slice,label,anatomy\nexam,0-1,0,femoral\nexam,2-3,1,femoral\n")
    out = tmp_path / "data"
    code = main(
        [
            "data",
            "ingest",
            "dicom",
            str(tmp_path / "in"),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--salt",
            "s",
            "--allow-missing-masks",
        ]
    )
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "manifest.parquet")
    assert len(df) == 4 and df.label.tolist() == [0, 0, 1, 1] and df.scan_id.nunique() == 1
    assert main(["data", "validate", str(out / "manifest.parquet")]) == 0
    pred = tmp_path / "pred"
    code = main(
        ["predict", "--model", str(exported / "vgg16"), "--dicom", str(tmp_path / "in"), "--out", str(pred)]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    table = pd.read_csv(pred / "slices.csv")
    assert table.slice_index.tolist() == [0, 1, 2, 3] and table.probability.between(0, 1).all()
    assert json.loads((pred / "summary.json").read_text())["n_slices"] == 4
    assert "without SeriesInstanceUID" in caplog.text
    blobs = [printed.out, printed.err, caplog.text] + [
        p.read_bytes().decode("latin-1") for d in (out, pred) for p in d.rglob("*") if p.is_file()
    ]
    for blob in blobs:
        for value in PHI:
            assert value not in blob


def test_predict_picks_a_series_by_option_or_the_largest(
    exported: Path, bundled_ct_series, tmp_path: Path, capsys, caplog
) -> None:
    exam = tmp_path / "exam"
    bundled_ct_series(exam / "big", 3)
    bundled_ct_series(exam / "small", 2)
    base = ["predict", "--model", str(exported / "sift_bow_svm"), "--dicom", str(exam)]
    caplog.set_level(logging.WARNING)
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "using [1] big, the largest axial CT series" in caplog.text
    assert len(pd.read_csv(tmp_path / "a" / "slices.csv")) == 3
    assert main([*base, "--out", str(tmp_path / "b"), "--series", "small"]) == 0
    assert len(pd.read_csv(tmp_path / "b" / "slices.csv")) == 2
    assert main([*base, "--out", str(tmp_path / "c"), "--series", "9"]) == 1
    assert "--series '9' is neither an index nor a series key" in capsys.readouterr().err

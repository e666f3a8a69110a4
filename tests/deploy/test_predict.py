"""`dvt-search predict` on a DICOM series reproduces the selection's test scores and leaks no PHI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvt_search.cli import main
from dvt_search.data.phantom import export_scan_dicom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def series(selected_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    preds = pd.read_parquet(selected_run["run"].path / "test_predictions.parquet")
    scan = sorted(preds["scan_id"].unique())[0]
    out = tmp_path_factory.mktemp("dicom") / "series"
    files = export_scan_dicom(selected_run["manifest"], scan, out)
    import pydicom

    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert "PHANTOM" in str(header.PatientName) + str(
        header.PatientID
    )  # so the leak check below means something
    return out, preds[preds["scan_id"] == scan]


@pytest.mark.parametrize("family, atol", [("vgg16", 1e-5), ("sift_bow_svm", 1e-9)])
def test_predict_matches_selection_scores(family, atol, exported, series, tmp_path, capsys, caplog) -> None:
    dicom, preds = series
    out = tmp_path / "pred"
    caplog.set_level(logging.DEBUG)
    assert main(["predict", "--model", str(exported / family), "--dicom", str(dicom), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "slices.csv")
    expected = preds[preds["family"] == family].sort_values("slice_index")
    got = table.set_index("slice_index").loc[expected["slice_index"], "probability"].to_numpy()
    np.testing.assert_allclose(
        got, expected["score"].to_numpy(), atol=max(atol, 1e-6)
    )  # csv keeps 6 decimals
    summary = json.loads((out / "summary.json").read_text())
    # the scan decision: the validation-chosen aggregation against the validation scan threshold
    thr = json.loads((exported / family / "threshold.json").read_text())
    agg = thr["scan_aggregation"]
    p = np.sort(table["probability"].to_numpy())[::-1]
    score = {"max": p[0], "mean": p.mean(), "topk": p[: agg["k"]].mean()}[agg["how"]]
    assert summary["scan_threshold"] == thr["scan_threshold"]
    assert summary["scan_score"] == pytest.approx(score, abs=1e-6)
    assert summary["decision"] == ("DVT suspected" if score >= thr["scan_threshold"] else "no DVT detected")
    assert summary["decision"] in printed
    if family == "vgg16":
        assert len(summary["heatmaps"]) == int(table["positive"].sum())
        assert all((out / h).is_file() for h in summary["heatmaps"])
    else:
        assert summary["heatmaps"] == []
    blobs = [printed, caplog.text] + [f.read_bytes().decode("latin-1") for f in out.iterdir()]
    for blob in blobs:
        assert "PHANTOM" not in blob.upper() and "ANON" not in blob.upper()


def test_predict_rejects_a_folder_without_series(exported, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "predict",
            "--model",
            str(exported / "vgg16"),
            "--dicom",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "exactly one DICOM" in capsys.readouterr().err

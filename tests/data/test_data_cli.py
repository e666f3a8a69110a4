"""``dvt-search data ...``: phantom -> validate (the issue's acceptance check), split, summary, ingest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dvt_search.cli import main
from dvt_search.data.phantom import write_dicom_series
from dvt_search.data.schema import read_manifest, write_manifest


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "ds"
    assert (
        main(
            [
                "data",
                "phantom",
                "--out",
                str(out),
                "--patients",
                "6",
                "--size",
                "128",
                "--slices-per-scan",
                "6",
            ]
        )
        == 0
    )
    return out / "manifest.parquet"


def test_phantom_prints_manifest_and_validates(phantom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert phantom.is_file()
    assert main(["data", "validate", str(phantom)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("OK:") and "0 error(s)" in out[0]


def test_acceptance_bad_copy_names_each_bad_row(phantom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = read_manifest(phantom)
    df.loc[3, "label"] = 2
    df.loc[7, "image_path"] = "volumes/no-such-scan/image.npy"
    df = pd.concat([df, df.iloc[[10]]], ignore_index=True)
    dup = len(df) - 1
    bad = write_manifest(df, phantom.with_name("bad.csv"))
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "row 3 (line 5) label: 2 is not a valid label" in out
    assert "row 7 (line 9) image_path: volumes/no-such-scan/image.npy: file not found" in out
    assert f"row {dup} (line {dup + 2}) slice_index: duplicate" in out and "first on row 10" in out
    assert out.strip().splitlines()[-1].startswith("INVALID:")


def test_validate_options(phantom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = read_manifest(phantom)
    df["image_path"] = "gone/" + df["scan_id"] + "/image.npy"
    bad = write_manifest(df, phantom.with_name("gone.parquet"))
    assert main(["data", "validate", str(bad), "--no-files"]) == 0
    assert main(["data", "validate", str(bad), "--max-errors", "3"]) == 1
    out = capsys.readouterr().out
    assert out.count("file not found") == 3 and "stopped at --max-errors" in out


def test_split_summary_and_validate_with_splits(phantom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    splits = phantom.with_name("s.json")
    assert (
        main(["data", "split", str(phantom), "--out", str(splits), "--anatomy", "both", "--seed", "3"]) == 0
    )
    assert "splits:" in capsys.readouterr().out
    assert main(["data", "validate", str(phantom), "--splits", str(splits)]) == 0
    assert main(["data", "summary", str(phantom), "--splits", str(splits)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out
    assert main(["data", "summary", str(phantom)]) == 0
    assert "femoral" in capsys.readouterr().out
    doc = json.loads(splits.read_text())
    doc["partitions"]["test"].append(doc["partitions"]["train"][0])  # same scan twice, hash now stale
    splits.write_text(json.dumps(doc))
    assert main(["data", "validate", str(phantom), "--splits", str(splits), "--no-files"]) == 1
    out = capsys.readouterr().out
    assert "hash mismatch" in out and "is in partition 'test' and partition 'train'" in out  # file key order


def test_help_documents_the_input_formats(capsys: pytest.CaptureFixture[str]) -> None:
    for kind, needle in (
        ("dicom", "series,slice,label"),
        ("nifti", "image,mask,patient"),
        ("slices", "--intercept"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["data", "ingest", kind, "--help"])
        assert exc.value.code == 0
        assert needle in capsys.readouterr().out


def test_ingest_dicom_subprocess_no_phi(tmp_path: Path) -> None:
    hu = np.random.default_rng(0).integers(-200, 300, size=(3, 16, 16)).astype(np.int16)
    write_dicom_series(hu, tmp_path / "in" / "ct", seed=0)
    (tmp_path / "labels.csv").write_text("series,slice,label\nct,0-1,0\nct,2,1\n")
    exe = Path(sys.executable).with_name("dvt-search")
    cmd = [
        str(exe),
        "data",
        "ingest",
        "dicom",
        str(tmp_path / "in"),
        "--labels",
        str(tmp_path / "labels.csv"),
    ]
    cmd += ["--out", str(tmp_path / "out"), "--allow-missing-masks"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"manifest: {tmp_path / 'out' / 'manifest.parquet'}" in done.stdout
    assert "salt.txt" in done.stderr and "all-zero mask" in done.stderr
    for text in (
        done.stdout,
        done.stderr,
        (tmp_path / "out" / "manifest.parquet").read_bytes().decode("latin-1"),
    ):
        assert "PHANTOM" not in text
    assert main(["data", "validate", str(tmp_path / "out" / "manifest.parquet")]) == 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already holds a dataset" in again.stderr


def test_ingest_slices_cli_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "a.npy", np.full((8, 8), 100, np.int16))
    np.save(tmp_path / "m.npy", np.eye(8, dtype=np.uint8))
    (tmp_path / "s.csv").write_text("image,mask,patient,study,scan,slice,label\na.npy,m.npy,p,s,c,0,1\n")
    (tmp_path / "salt").write_text("pepper\n")
    args = ["data", "ingest", "slices", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o"), "--salt-file"]
    args += [
        str(tmp_path / "salt"),
        "--pixel-spacing",
        "0.5",
        "0.6",
        "--slice-thickness",
        "2",
        "--anatomy",
        "iliac",
    ]
    assert main(args) == 0
    df = read_manifest(tmp_path / "o" / "manifest.parquet")
    assert df.anatomy.tolist() == ["iliac"] and df.spacing_col_mm.tolist() == [pytest.approx(0.6)]
    assert not (tmp_path / "o" / "salt.txt").exists()
    capsys.readouterr()
    assert main(["data", "ingest", "slices", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o2")]) == 1
    assert "spacing_row_mm" in capsys.readouterr().err and not (tmp_path / "o2").exists()

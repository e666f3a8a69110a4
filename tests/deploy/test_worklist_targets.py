"""Listing a batch: DICOM series and NIfTI files under a folder, or the rows of a CSV (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dvt_search.data.phantom import write_dicom_series
from dvt_search.data.readers import ReaderError
from dvt_search.deploy.worklist import list_targets


def _series(folder: Path, n: int, seed: int) -> None:
    write_dicom_series(np.full((n, 8, 8), 40, np.int16), folder, seed=seed)


@pytest.fixture()
def studies(tmp_path: Path) -> Path:
    import nibabel as nib

    root = tmp_path / "studies"
    _series(root / "p1", 3, 1)
    _series(root / "p2" / "venous", 4, 2)
    _series(root / "p2" / "late", 2, 3)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)), str(root / "p3.nii.gz"))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_lists_every_dicom_series_and_nifti_file(studies: Path) -> None:
    targets = list_targets(studies)
    assert [(t.key, t.source) for t in targets] == [
        ("p1", "dicom"),
        ("p2/late", "dicom"),
        ("p2/venous", "dicom"),
        ("p3.nii.gz", "nifti"),
    ]
    assert [len(t.dicom.files) for t in targets[:3]] == [3, 2, 4] and targets[3].path.is_file()


def test_csv_rows_pick_series_and_report_bad_rows(studies: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,series\nstudies/p1,\nstudies/p2,\nstudies/p2,late\nstudies/p3.nii.gz,\nstudies/none,\n"
        "studies/p2,9\n"
    )
    targets = list_targets(listing)
    keys = [t.key for t in targets]
    assert keys == [
        "studies/p1",
        "studies/p2/venous",  # default: the largest series of the folder
        "studies/p2/late",
        "studies/p3.nii.gz",
        "studies/none",
        "studies/p2:9",
    ]
    assert len(targets[1].dicom.files) == 4 and len(targets[2].dicom.files) == 2
    assert targets[3].source == "nifti" and not targets[3].error
    assert f"{listing}:6 column 'path': no such file or folder" in targets[4].error
    assert "--series '9' is neither an index nor a series key" in targets[5].error
    assert all(not t.error for t in targets[:4])


def test_bad_batch_sources_raise_naming_them(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no DICOM series or NIfTI volume found"):
        list_targets(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ReaderError, match="a batch is a folder or a .csv listing"):
        list_targets(tmp_path / "x.txt")
    with pytest.raises(ReaderError, match="no such file or folder"):
        list_targets(tmp_path / "gone")
    (tmp_path / "bad.csv").write_text("folder\nx\n")
    with pytest.raises(ReaderError, match="missing column"):
        list_targets(tmp_path / "bad.csv")

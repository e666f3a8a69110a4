"""Benchmark of DICOM series discovery and reading on a de-identified JPEG 2000 CT series.

The series is ``--slices`` copies of pydicom's bundled ``693_J2KI.dcm`` (512x512 CT, lossy JPEG 2000),
5 mm apart, with every instance UID blanked (so discovery groups by folder + geometry), plus a localizer
that discovery must skip. Printed: seconds for ``find_series`` (header-only pass
over every file) and ``read_series`` (full read + JPEG 2000 decode + HU), and ms per slice. CPU time of
this process is shown beside wall time (robust to other load). Figures only.

    .venv/bin/python bench/bench_dicom.py [--slices 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from dvt_search.data.readers.dicom import read_series
from dvt_search.data.readers.discovery import find_series


def build(folder: Path, n: int) -> None:
    """``n`` UID-less J2K slices and a localizer in ``folder``."""
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
        for tag in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            setattr(ds, tag, "")
        ds.file_meta.MediaStorageSOPInstanceUID = ""
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 5.0 * k]
        ds.InstanceNumber = k + 1
        if k == 0:
            scout = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
            scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            scout.save_as(folder / "scout.dcm")
        ds.save_as(folder / f"IM{k:04d}")


def timed(fn, *args):  # noqa: ANN001, ANN002, ANN201
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the UID-less warning and skip lines are expected here
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "exam"
        folder.mkdir()
        build(folder, args.slices)
        print(f"{args.slices} slices 512x512 JPEG 2000, UIDs blanked, + 1 localizer")
        print(f"{'step':<14}{'wall s':>8}{'cpu s':>8}{'ms/slice':>10}")
        for _ in range(args.repeats):
            series, w1, c1 = timed(find_series, folder)
            assert len(series) == 1 and len(series[0].files) == args.slices
            vol, w2, c2 = timed(read_series, series[0])
            assert vol.scan.image.shape == (args.slices, 512, 512)
            for name, w, c in (("find_series", w1, c1), ("read_series", w2, c2)):
                print(f"{name:<14}{w:>8.3f}{c:>8.3f}{1000 * w / args.slices:>10.2f}")


if __name__ == "__main__":
    main()

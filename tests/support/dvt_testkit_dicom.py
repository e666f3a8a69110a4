"""De-identified DICOM test data built from pydicom's bundled files (imported by tests of any room).

``tests/`` is on ``sys.path`` because the suite's root ``conftest.py`` lives there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def blank_uids(ds: Any) -> None:
    """Blank every instance UID of a pydicom dataset, as de-identification tools do."""
    for tag in UID_TAGS:
        if tag in ds:
            setattr(ds, tag, "")
    ds.file_meta.MediaStorageSOPInstanceUID = ""


def write_bundled_ct_series(folder: Path, n: int = 4, *, uids: bool = False) -> np.ndarray:
    """``n`` slices built from pydicom's bundled JPEG 2000 CT file ``693_J2KI.dcm`` (512x512).

    Slice 0 keeps the file's own lossy JPEG 2000 stream; slice k > 0 holds the decoded pixels + 10*k,
    re-encoded in turn as JPEG 2000 lossless, JPEG-LS lossless and RLE. ImagePositionPatient moves 5 mm
    per slice and InstanceNumber counts up; file names are shuffled. Every instance UID is blanked unless
    ``uids``. Returns the expected HU volume ``[n, 512, 512]`` (slice 0 most inferior).
    """
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    source = get_testdata_file("693_J2KI.dcm")
    series_uid = generate_uid()
    syntaxes = [JPEG2000Lossless, JPEGLSLossless, RLELossless]
    expected = []
    for k in range(n):
        ds = pydicom.dcmread(source)
        pixels = ds.pixel_array.astype(np.int16) + 10 * k
        if k:
            ds.compress(syntaxes[(k - 1) % 3], pixels)
        ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 5.0 * k]
        ds.InstanceNumber = k + 1
        if uids:
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        else:
            blank_uids(ds)
        ds.save_as(folder / f"IMG{(7 * k + 3) % 97:04d}")
        expected.append(pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(expected).astype(np.float32)

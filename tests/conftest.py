"""Suite-wide settings: keep CPU thread counts sane on small CI machines and skip GPU tests without CUDA."""

from __future__ import annotations

import os
import secrets

import pytest

# Two cores here: more intra-op threads than cores only adds contention between test processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Ray 2.60 caches its auth mode in the process when ray is first imported. Every test process must see the
# same mode from the start (token auth, as in production), with a per-session token kept in the
# environment so nothing is written to ~/.ray and a token file left there by a demo run is never used.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if os.environ["RAY_AUTH_MODE"] == "token":
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# ------------------------------------------------------------------ de-identified DICOM from pydicom's files
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def blank_uids(ds: object) -> None:
    """Blank every instance UID of a pydicom dataset, as de-identification tools do."""
    for tag in UID_TAGS:
        if tag in ds:  # type: ignore[operator]
            setattr(ds, tag, "")
    ds.file_meta.MediaStorageSOPInstanceUID = ""  # type: ignore[attr-defined]


def write_bundled_ct_series(folder, n: int = 4, *, uids: bool = False):  # noqa: ANN001, ANN201
    """``n`` slices built from pydicom's bundled JPEG 2000 CT file ``693_J2KI.dcm`` (512x512).

    Slice 0 keeps the file's own lossy JPEG 2000 stream; slice k > 0 holds the decoded pixels + 10*k,
    re-encoded in turn as JPEG 2000 lossless, JPEG-LS lossless and RLE. ImagePositionPatient moves 5 mm
    per slice and InstanceNumber counts up; file names are shuffled. Every instance UID is blanked unless
    ``uids``. Returns the expected HU volume ``[n, 512, 512]`` (slice 0 most inferior).
    """
    import numpy as np
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


@pytest.fixture()
def bundled_ct_series():  # noqa: ANN201
    """:func:`write_bundled_ct_series` (and :func:`blank_uids`) for tests in any room."""
    return write_bundled_ct_series

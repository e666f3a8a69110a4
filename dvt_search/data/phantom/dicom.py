"""Writing phantom volumes as real CT DICOM series (one uncompressed file per slice).

The files are CT Image Storage instances in Explicit VR Little Endian, with ImagePositionPatient
increasing along z (slice 0 = most inferior), so that ``pixel_array * RescaleSlope + RescaleIntercept``
gives back the HU slice. Patient attributes are obviously synthetic (``PHANTOM^ANON`` /
``PHANTOM-<n>``) so tests can check that such header values never leak into derived outputs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

PATIENT_NAME = "PHANTOM^ANON"
_UID_ROOT = "dvt-search-phantom"


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[_UID_ROOT, *map(str, parts)])


def _stored(volume: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Stored pixels, RescaleIntercept and PixelRepresentation for an integer HU volume."""
    lo, hi = int(volume.min()), int(volume.max())
    if lo >= -1024 and hi <= 65535 - 1024:
        return (volume.astype(np.int32) + 1024).astype(np.uint16), -1024.0, 0
    if lo >= -32768 and hi <= 32767:
        return volume.astype(np.int16), 0.0, 1
    raise ValueError(f"HU values {lo}..{hi} do not fit 16-bit DICOM storage")


def write_dicom_series(
    volume_hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    spacing_mm: tuple[float, float] = (0.8, 0.8),
    thickness_mm: float = 2.5,
    series_uid: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``volume_hu`` (``[Z, H, W]`` HU) as a CT series, one ``.dcm`` per slice.

    Args:
        volume_hu: HU volume; non-integer values are rounded to the nearest integer.
        out_dir: Series directory; must not exist or be empty (files appear all at once).
        spacing_mm: ``(row, column)`` pixel spacing, written as PixelSpacing.
        thickness_mm: SliceThickness and the z step of ImagePositionPatient.
        series_uid: SeriesInstanceUID (derived from ``seed`` when omitted).
        seed: Makes the UIDs and PatientID (``PHANTOM-<seed>``) deterministic.

    Returns:
        The written files in slice order (slice 0 = most inferior = lowest z).

    Raises:
        ValueError: The volume is not 3D, not finite, or outside the 16-bit range.
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    vol = np.asarray(volume_hu)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise ValueError(f"volume_hu must be a non-empty [Z, H, W] array, got shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.integer):
        if not np.isfinite(vol).all():
            raise ValueError("volume_hu holds NaN or infinite values")
        vol = np.rint(vol).astype(np.int64)
    stored, intercept, pixel_rep = _stored(vol)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: directory is not empty; refusing to mix DICOM series")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    z_count, rows, cols = vol.shape
    study_uid, frame_uid = _uid(seed, "study"), _uid(seed, "frame")
    series_uid = series_uid or _uid(seed, "series")
    row_mm, col_mm = round(float(spacing_mm[0]), 6), round(float(spacing_mm[1]), 6)  # DS: <= 16 chars
    thickness_mm = round(float(thickness_mm), 6)
    x0, y0 = -(cols - 1) / 2 * col_mm, -(rows - 1) / 2 * row_mm
    names = []
    try:
        for z in range(z_count):
            sop_uid = _uid(series_uid, z)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
                study_uid,
                series_uid,
                frame_uid,
            )
            ds.Modality, ds.Manufacturer = "CT", "dvt-search synthetic phantom"
            ds.PatientName, ds.PatientID = PATIENT_NAME, f"PHANTOM-{seed}"
            ds.PatientBirthDate, ds.PatientSex = "", "O"
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
            ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", ""
            ds.SeriesDescription = "synthetic phantom, not patient data"
            ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, z + 1, 1
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.ImagePositionPatient = [round(x0, 4), round(y0, 4), round(z * thickness_mm, 4)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.SliceLocation = round(z * thickness_mm, 4)
            ds.SliceThickness = ds.SpacingBetweenSlices = thickness_mm
            ds.PixelSpacing = [row_mm, col_mm]
            ds.KVP = 120
            ds.Rows, ds.Columns = rows, cols
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, pixel_rep
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, 1, "HU"
            ds.WindowCenter, ds.WindowWidth = 40, 400
            ds.BurnedInAnnotation = "NO"
            ds.PixelData = np.ascontiguousarray(stored[z]).astype(stored.dtype.newbyteorder("<")).tobytes()
            name = f"IM{z + 1:05d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def export_scan_dicom(
    manifest_path: str | os.PathLike[str], scan_id: str, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write the scan ``scan_id`` of a (phantom) dataset as a DICOM series in ``out_dir``.

    Slices are read through the manifest (any file kind it references), ordered by slice_index, and
    written with the scan's pixel spacing and slice thickness.

    Raises:
        KeyError: ``scan_id`` is not in the manifest (the message names the file).
    """
    from ..io import load_slice
    from ..schema import manifest_root, read_manifest, resolve

    df = read_manifest(manifest_path)
    rows = df[df["scan_id"] == scan_id].sort_values("slice_index")
    if rows.empty:
        raise KeyError(f"{manifest_path}: no rows for scan_id {scan_id!r}")
    root = manifest_root(manifest_path)
    volume = np.stack([load_slice(resolve(root, r.image_path), r.image_index) for r in rows.itertuples()])
    first = rows.iloc[0]
    seed = int(hashlib.sha256(scan_id.encode()).hexdigest()[:8], 16)
    return write_dicom_series(
        volume,
        out_dir,
        spacing_mm=(float(first["spacing_row_mm"]), float(first["spacing_col_mm"])),
        thickness_mm=float(first["slice_thickness_mm"]),
        seed=seed,
    )

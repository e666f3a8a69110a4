"""NIfTI volumes (nibabel), reoriented to the layout every ingested volume shares.

Array layout of an ingested volume ``[Z, H, W]``: Z runs inferior -> superior (slice 0 the most
inferior), rows run anterior -> posterior and columns patient right -> left, i.e. the usual radiological
display of an axial DICOM slice (ImageOrientationPatient ``1\\0\\0\\0\\1\\0``). NIfTI data is permuted/flipped
into that layout from its affine (nearest axes; no resampling). Scaled data (``scl_slope``) is read as float.

Listing CSV for ``dvt-search data ingest nifti`` (one row per scan, paths relative to the CSV's folder)::

    image,mask,patient,study,anatomy,labels
    ct/a.nii.gz,seg/a.nii.gz,MRN123,ACC9,femoral,labels/a.csv
    ct/b.nii.gz,seg/b.nii.gz,MRN123,ACC9,femoral,0001111000
    ct/c.nii.gz,,MRN456,ACC2,,clots/c.nii.gz

* ``image`` (required): the CT volume in HU. ``mask``: the vein mask volume (same grid; 0/1 or 0/255);
  empty only with ``--allow-missing-masks`` (an all-zero mask is written).
* ``patient``, ``study`` (required): original keys; never stored (pseudonymized by ingest).
* ``anatomy``: ``femoral`` / ``iliac`` (empty: the ``--anatomy`` default).
* ``labels`` (required), one of: a string of ``0``/``1``, one per slice in the layout above (first
  character = most inferior slice); a ``.csv`` with columns ``slice,label`` (``slice``: ``k``, inclusive
  ``a-b`` or ``all``, in the same order; slices not listed are left out of the manifest); or a clot-mask
  volume (``.nii``/``.nii.gz``/``.npy``) whose slices with any voxel > 0 are labelled 1.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import (
    LabeledScan,
    ReaderError,
    Scan,
    binary_mask,
    listing_rows,
    parse_anatomy,
    parse_label,
    parse_slices,
    read_table,
    resolve_input,
)

log = logging.getLogger(__name__)

#: nibabel orientation of the target layout: array axes (0, 1, 2) point to (S, P, L).
TARGET_ORNT = np.array([[2.0, 1.0], [1.0, -1.0], [0.0, -1.0]])
LISTING_COLUMNS = ("image", "mask", "patient", "study", "anatomy", "labels")


@dataclass
class NiftiVolume:
    """A reoriented NIfTI volume: ``data`` ``[Z, H, W]``, the ``affine`` of that array, voxel ``spacing`` (z, row, col)."""

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types on corrupt files
        raise ReaderError(f"{path}: cannot read NIfTI: {type(exc).__name__}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise ReaderError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data, affine


def reorient(path: Path, target_affine: np.ndarray | None = None) -> NiftiVolume:
    """Read ``path`` and permute/flip it to ``target_affine``'s axes (default: :data:`TARGET_ORNT`)."""
    from nibabel import orientations as ort

    data, affine = _load(path)
    target = TARGET_ORNT if target_affine is None else ort.io_orientation(target_affine)
    transform = ort.ornt_transform(ort.io_orientation(affine), target)
    out = ort.apply_orientation(data, transform)
    new_affine = affine @ ort.inv_ornt_aff(transform, data.shape)
    spacing = np.sqrt((new_affine[:3, :3] ** 2).sum(axis=0))
    return NiftiVolume(
        np.ascontiguousarray(out), new_affine, (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    )


def read_nifti(path: Path) -> NiftiVolume:
    """The volume in the ingest layout (see the module docstring)."""
    vol = reorient(path)
    if abs(vol.affine[2, 0]) < 0.5 * np.linalg.norm(vol.affine[:3, 0]):
        log.warning(
            "%s: slices are not axial; slice 0 is the one nearest the feet along the stored axis", path
        )
    return vol


def same_grid(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> bool:
    """True when two voxel-to-world affines agree to a tenth of the smallest voxel side."""
    return bool(np.allclose(a, b, atol=0.1 * min(spacing), rtol=0))


def _labels(text: str, base: Path, n: int, vol: NiftiVolume, where: str) -> dict[int, int]:
    if re.fullmatch(r"[01]+", text):
        if len(text) != n:
            raise ReaderError(f"{where}: labels string has {len(text)} character(s), the volume {n} slice(s)")
        return {z: int(ch) for z, ch in enumerate(text)}
    if not text:
        raise ReaderError(f"{where}: empty labels")
    path = Path(text) if Path(text).is_absolute() else base / text
    if path.suffix.lower() == ".csv":
        out: dict[int, int] = {}
        for row in read_table(path, ("slice", "label")):
            label = parse_label(row.get("label"), row.where(path, "label"))
            for z in parse_slices(row.get("slice"), n, row.where(path, "slice")):
                if out.setdefault(z, label) != label:
                    raise ReaderError(f"{row.where(path)}: slice {z} labelled both 0 and 1")
        return out
    clots = read_mask_volume(path, vol.data.shape, vol.affine, vol.spacing, where)
    return {z: int(clots[z].any()) for z in range(n)}


def iter_scans(
    listing: str | Path | Sequence[Mapping[str, str]], *, anatomy: str, allow_missing_masks: bool = False
) -> Iterator[LabeledScan]:
    """Yield each listed scan with its mask and labels (one volume in memory at a time).

    Args:
        listing: the listing CSV (module docstring), or rows with the same keys (paths relative to cwd).
        anatomy: default for rows with an empty ``anatomy``.
        allow_missing_masks: write an all-zero mask where ``mask`` is empty instead of failing.
    """
    rows, base, src = listing_rows(listing, ("image", "patient", "study", "labels"), LISTING_COLUMNS)
    for row in rows:
        where = row.where(src)
        image_path = resolve_input(base, row, "image", src)
        vol = read_nifti(image_path)
        mask = None
        if row.get("mask"):
            mask_path = resolve_input(base, row, "mask", src)
            mask = read_mask_volume(mask_path, vol.data.shape, vol.affine, vol.spacing, f"{where} mask")
        elif not allow_missing_masks:
            raise ReaderError(f"{where}: no mask given (pass --allow-missing-masks to write all-zero masks)")
        labels = _labels(row.get("labels"), base, vol.data.shape[0], vol, f"{where} labels")
        spacing_z, spacing_r, spacing_c = vol.spacing
        scan = Scan(vol.data, mask, spacing_r, spacing_c, spacing_z, "nifti", str(image_path))
        site = parse_anatomy(row.get("anatomy"), anatomy, where)
        yield LabeledScan(
            scan,
            row.get("patient"),
            row.get("study"),
            str(image_path.resolve()),
            labels,
            dict.fromkeys(labels, site),
        )


def read_mask_volume(
    path: Path,
    shape: tuple[int, ...],
    affine: np.ndarray | None,
    spacing: Sequence[float] | None,
    where: str,
) -> np.ndarray:
    """A 0/1 ``uint8`` volume of ``shape`` from ``.npy`` (already in the ingest layout) or NIfTI.

    A NIfTI volume is reoriented to ``affine``'s axes and must lie on the same grid (to a tenth of a voxel);
    with ``affine=None`` it is put in the default layout unchecked.
    """
    name = path.name.lower()
    if not path.is_file():
        raise ReaderError(f"{where}: file not found: {path}")
    if name.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # corrupt or pickled files raise several types
            raise ReaderError(f"{where}: cannot read {path}: {type(exc).__name__}: {exc}") from exc
        arr = arr[None] if arr.ndim == 2 else arr
    elif name.endswith((".nii", ".nii.gz")):
        vol = reorient(path, affine)
        if (
            affine is not None
            and spacing is not None
            and vol.data.shape == shape
            and not same_grid(vol.affine, affine, spacing)
        ):
            raise ReaderError(f"{where}: {path} is not on the image's voxel grid (affines differ)")
        arr = vol.data
    else:
        raise ReaderError(f"{where}: {path} is not a .npy or .nii[.gz] volume")
    if arr.shape != tuple(shape):
        raise ReaderError(f"{where}: {path} has shape {arr.shape}, the image {tuple(shape)}")
    return binary_mask(arr, f"{where}: {path}")

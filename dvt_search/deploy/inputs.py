"""The series ``predict`` scores: a DICOM series or a NIfTI volume read into the ingest layout.

Both kinds become a :class:`SeriesInput`: an HU volume ``[Z, H, W]`` with slice 0 the most inferior
(exactly what ``data ingest`` stores, so preprocessing is the training one), the in-plane pixel spacing,
the modality and whether the slices are axial (for :mod:`.scope`).

* DICOM: :mod:`dvt_search.data.readers.discovery` finds the series (UID-less files grouped by folder and
  geometry; scouts, reports, captures and non-axial images skipped), :mod:`~dvt_search.data.readers.dicom`
  reads it (RescaleSlope/Intercept applied).
* NIfTI (``.nii`` / ``.nii.gz``): :mod:`dvt_search.data.readers.nifti` permutes/flips it from its affine
  into the ingest layout (no resampling). The voxel values are taken as HU **as stored** (after the
  header's ``scl_slope``/``scl_inter``, which nibabel applies); NIfTI records no modality, so CT is
  assumed. A volume in other units (e.g. stored pixel values without the DICOM rescale, or MR) is scored
  anyway and gets the soft-tissue warning of :mod:`.scope`.

A series is named by its **series key** only (folder relative to the input root, ``:k`` when the folder
holds several; a NIfTI file by its path relative to the root): no header value is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dvt_search.data.readers.discovery import DicomSeries

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class SeriesInput:
    """One series to score.

    Attributes:
        key: the series key (for people and the worklist; never a header value).
        volume: HU ``float32[Z, H, W]``, slice 0 the most inferior.
        spacing_rc: in-plane pixel spacing (row, column) in mm.
        modality: the DICOM Modality (``""`` when absent), None for NIfTI (not recorded).
        axial: whether the slices are axial.
        source: ``dicom`` or ``nifti``.
    """

    key: str
    volume: np.ndarray
    spacing_rc: tuple[float, float]
    modality: str | None
    axial: bool
    source: str


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is named like a NIfTI volume (``.nii`` / ``.nii.gz``)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_dicom_input(found: DicomSeries, key: str | None = None) -> SeriesInput:
    """A discovered DICOM series read into a :class:`SeriesInput` (named ``key``, default its series key)."""
    from dvt_search.data.readers.dicom import read_series

    scan = read_series(found).scan
    return SeriesInput(
        key=key or found.key,
        volume=np.asarray(scan.image, dtype=np.float32),
        spacing_rc=(float(scan.spacing_row_mm), float(scan.spacing_col_mm)),
        modality=found.modality,
        axial=True,  # discovery skips images more than 45 degrees off axial
        source="dicom",
    )


def read_dicom_folder(series_dir: str | os.PathLike[str], series: str | None = None) -> SeriesInput:
    """The one series under ``series_dir`` (or the one ``series`` names, or the largest axial CT one)."""
    from dvt_search.data.readers.discovery import choose_series, find_series

    chosen = choose_series(find_series(Path(series_dir)), series, str(series_dir))
    return read_dicom_input(chosen)


def read_nifti_input(path: str | os.PathLike[str], key: str | None = None) -> SeriesInput:
    """A NIfTI volume in the ingest layout, values taken as HU as stored (see the module docstring)."""
    from dvt_search.data.readers import ReaderError
    from dvt_search.data.readers.nifti import read_nifti

    p = Path(path)
    if not p.is_file():
        raise ReaderError(f"{p}: no such NIfTI file")
    vol = read_nifti(p)
    axis = vol.affine[:3, 0]
    axial = abs(float(axis[2])) >= np.cos(np.radians(45.0)) * float(np.linalg.norm(axis))
    return SeriesInput(
        key=key or p.name,
        volume=np.asarray(vol.data, dtype=np.float32),
        spacing_rc=(float(vol.spacing[1]), float(vol.spacing[2])),
        modality=None,
        axial=bool(axial),
        source="nifti",
    )

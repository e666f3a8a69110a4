"""Ingest: DICOM series, NIfTI volumes or 2D slice files -> the dataset layout every later stage reads.

Output (``out_dir``)::

    manifest.parquet                  every schema column, one row per labelled slice
    volumes/<scan_id>/image.npy       int16 HU volume [Z, H, W] (rounded, clipped to the int16 range)
    volumes/<scan_id>/mask.npy        uint8 0/1 vein mask [Z, H, W] (all zero where no mask was given)
    salt.txt                          only when no salt was given: the random salt (mode 0600)

The input formats (labels / listing CSVs) are described in :mod:`.readers.dicom`, :mod:`.readers.nifti` and
:mod:`.readers.slices`. Pseudonymization: patient ids come from an id map (CSV ``original,pseudonym``) or
are ``P-`` + a salted SHA-256 of the original key; study and scan ids are always salted hashes (``ST-``,
``SC-``) of the original keys (UIDs, accession numbers...), so no header value or original key reaches
the manifest, the logs or an error message. The salt is a secret: whoever has it can test guesses of
original ids against the pseudonyms; keeping it lets a later ingest reproduce the same ids.

Atomicity: everything is built in ``<out_dir>/.tmp-<random>/`` and moved into place (the manifest last)
only when every scan was read; on any error the temporary folder is removed and ``out_dir`` is left as
it was. ``out_dir`` must not already hold a dataset.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd

from . import schema
from .readers import LabeledScan, ReaderError, parse_anatomy, read_table

log = logging.getLogger(__name__)

SALT_FILE = "salt.txt"
MANIFEST = "manifest.parquet"


def load_id_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read an id map CSV with columns ``original,pseudonym`` (one row per patient)."""
    path = Path(path)
    out: dict[str, str] = {}
    for row in read_table(path, ("original", "pseudonym")):
        if out.setdefault(row.get("original"), row.get("pseudonym")) != row.get("pseudonym"):
            raise ReaderError(f"{row.where(path)}: the same original id is mapped twice, differently")
    return out


class Pseudonymizer:
    """Turns original keys into manifest ids (see the module docstring); never exposes the originals."""

    def __init__(
        self, salt: str, id_map: Mapping[str, str] | None = None, id_map_name: str = "the id map"
    ) -> None:
        if not salt:
            raise ValueError("the pseudonymization salt must not be empty")
        self._salt = salt.encode()
        self._id_map = dict(id_map) if id_map is not None else None
        self._id_map_name = id_map_name

    def _hash(self, *parts: str) -> str:
        h = hashlib.sha256(self._salt)
        for part in parts:
            h.update(b"\0" + part.encode())
        return h.hexdigest()[:16]

    def patient(self, original: str, where: str) -> str:
        """The patient's pseudonym; ``where`` (a path) names the input when the id map lacks it."""
        if self._id_map is None:
            return "P-" + self._hash("patient", original)
        if original not in self._id_map:
            raise ReaderError(f"{where}: patient not found in {self._id_map_name}")
        return self._id_map[original]

    def derived(self, kind: str, *parts: str) -> str:
        """A study (``ST``) or scan (``SC``) id from the original keys that identify it."""
        return f"{kind}-" + self._hash(kind, *parts)


def _write_salt(folder: Path, final: Path) -> str:
    salt = secrets.token_hex(16)
    fd = os.open(folder / SALT_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(salt + "\n")
    log.warning(
        "no --salt given: a random pseudonymization salt is saved in %s. Keep it secret (with it, patient ids "
        "can be guessed back) and keep it to reproduce the same ids on a later ingest; do not share it with "
        "the dataset.",
        final / SALT_FILE,
    )
    return salt


class DatasetBuilder:
    """Writes scans into a temporary folder inside ``out_dir`` and moves them into place on :meth:`commit`."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        for name in (MANIFEST, "volumes"):
            if (self.out_dir / name).exists():
                raise FileExistsError(f"{self.out_dir / name} exists: {self.out_dir} already holds a dataset")
        self._created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.out_dir))
        self.rows: list[dict[str, object]] = []
        self._scan_ids: set[str] = set()

    def __enter__(self) -> DatasetBuilder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.tmp.exists():  # an error, or never committed: leave out_dir as it was
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self._created and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()

    def salt(self, salt: str | None) -> str:
        """``salt``, or a new random one saved to ``salt.txt`` (0600) with a warning."""
        return salt if salt is not None else _write_salt(self.tmp, self.out_dir)

    def add(self, item: LabeledScan, ids: Pseudonymizer) -> None:
        """Store one scan's volumes and add a manifest row per labelled slice."""
        scan = item.scan
        patient = ids.patient(item.patient_key, scan.origin)
        study = ids.derived("ST", item.patient_key, item.study_key)
        scan_id = ids.derived("SC", item.patient_key, item.study_key, item.scan_key)
        if scan_id in self._scan_ids:
            raise ReaderError(f"{scan.origin}: this scan was already ingested (listed twice?)")
        self._scan_ids.add(scan_id)
        image = _to_int16(scan.image, scan.origin)
        mask = np.zeros(image.shape, np.uint8) if scan.mask is None else scan.mask.astype(np.uint8)
        folder = self.tmp / "volumes" / scan_id
        folder.mkdir(parents=True)
        np.save(folder / "image.npy", image)
        np.save(folder / "mask.npy", mask)
        numbers = item.slice_numbers or list(range(image.shape[0]))
        rows, cols = schema.patch_grid_shape(*image.shape[1:])
        for z in sorted(item.labels):
            self.rows.append(
                {
                    "patient_id": patient,
                    "study_id": study,
                    "scan_id": scan_id,
                    "slice_index": numbers[z],
                    "image_path": f"volumes/{scan_id}/image.npy",
                    "image_index": z,
                    "mask_path": f"volumes/{scan_id}/mask.npy",
                    "mask_index": z,
                    "label": item.labels[z],
                    "anatomy": item.anatomy[z],
                    "spacing_row_mm": scan.spacing_row_mm,
                    "spacing_col_mm": scan.spacing_col_mm,
                    "slice_thickness_mm": scan.slice_thickness_mm,
                    "height": image.shape[1],
                    "width": image.shape[2],
                    "patch_rows": rows,
                    "patch_cols": cols,
                    "patches": schema.patches_from_mask(mask[z]).ravel(),
                    "source": scan.source,
                }
            )
        log.info("%s: %d slice(s) stored, %d labelled", scan.origin, image.shape[0], len(item.labels))

    def commit(self) -> Path:
        """Write the manifest and move everything into ``out_dir``; returns the manifest path."""
        if not self.rows:
            raise ReaderError("nothing to ingest: no labelled slice was found")
        schema.write_manifest(pd.DataFrame(self.rows), self.tmp / MANIFEST)
        for name in ("volumes", SALT_FILE, MANIFEST):  # the manifest last: it marks a complete dataset
            if (self.tmp / name).exists():
                os.replace(self.tmp / name, self.out_dir / name)
        self.tmp.rmdir()
        frame = pd.DataFrame(self.rows)
        log.info(
            "ingested %d scan(s), %d slice(s) (%d positive), %d patient(s) into %s",
            frame.scan_id.nunique(),
            len(frame),
            int(frame.label.sum()),
            frame.patient_id.nunique(),
            self.out_dir / MANIFEST,
        )
        return self.out_dir / MANIFEST


def _to_int16(volume: np.ndarray, origin: str) -> np.ndarray:
    vol = np.asarray(volume, dtype=np.float32)
    if not np.isfinite(vol).all():
        raise ReaderError(f"{origin}: image holds NaN/inf values")
    clipped = int(np.count_nonzero((vol < -32768) | (vol > 32767)))
    if clipped:
        log.warning("%s: %d voxel(s) outside the int16 range were clipped", origin, clipped)
    return np.clip(np.rint(vol), -32768, 32767).astype(np.int16)


def _ingest(
    scans: Iterable[LabeledScan],
    out_dir: str | os.PathLike[str],
    id_map: str | os.PathLike[str] | Mapping[str, str] | None,
    salt: str | None,
) -> Path:
    mapping = load_id_map(id_map) if isinstance(id_map, (str, os.PathLike)) else id_map
    name = str(id_map) if isinstance(id_map, (str, os.PathLike)) else "the id map"
    with DatasetBuilder(out_dir) as builder:
        ids = Pseudonymizer(builder.salt(salt), mapping, name)
        for item in scans:
            builder.add(item, ids)
        return builder.commit()


def ingest_dicom(
    series_dirs_or_root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    labels_csv: str | os.PathLike[str],
    id_map: str | os.PathLike[str] | Mapping[str, str] | None = None,
    salt: str | None = None,
    anatomy: str = "femoral",
    allow_missing_masks: bool = False,
    seg: Sequence[str | os.PathLike[str]] = (),
    seg_segment: str | None = None,
) -> Path:
    """Ingest DICOM series found under ``series_dirs_or_root`` (labels CSV: :mod:`.readers.dicom`).

    ``seg`` lists DICOM SEG files or folders whose segmentations become the masks of the series they
    were drawn on (:mod:`.readers.seg`); ``seg_segment`` names the vein segment(s) (numbers or labels).

    Returns:
        Path of the written ``manifest.parquet``.
    """
    from .readers import dicom

    parse_anatomy("", anatomy, "--anatomy")
    scans = dicom.iter_scans(
        series_dirs_or_root,
        labels_csv,
        anatomy=anatomy,
        allow_missing_masks=allow_missing_masks,
        seg=seg,
        seg_segment=seg_segment,
    )
    return _ingest(scans, out_dir, id_map, salt)


def ingest_nifti(
    listing: str | os.PathLike[str] | Sequence[Mapping[str, str]],
    out_dir: str | os.PathLike[str],
    *,
    id_map: str | os.PathLike[str] | Mapping[str, str] | None = None,
    salt: str | None = None,
    anatomy: str = "femoral",
    allow_missing_masks: bool = False,
) -> Path:
    """Ingest NIfTI image/mask volumes from a listing CSV or rows (format: :mod:`.readers.nifti`)."""
    from .readers import nifti

    parse_anatomy("", anatomy, "--anatomy")
    scans = nifti.iter_scans(listing, anatomy=anatomy, allow_missing_masks=allow_missing_masks)
    return _ingest(scans, out_dir, id_map, salt)


def ingest_slices(
    labels_csv: str | os.PathLike[str] | Sequence[Mapping[str, str]],
    out_dir: str | os.PathLike[str],
    *,
    id_map: str | os.PathLike[str] | Mapping[str, str] | None = None,
    salt: str | None = None,
    anatomy: str = "femoral",
    spacing_mm: tuple[float, float] | None = None,
    slice_thickness_mm: float | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    allow_missing_masks: bool = False,
) -> Path:
    """Ingest 2D PNG/TIFF/NPY/DICOM slices listed one per row (format: :mod:`.readers.slices`)."""
    from .readers import slices

    parse_anatomy("", anatomy, "--anatomy")
    scans = slices.iter_scans(
        labels_csv,
        anatomy=anatomy,
        spacing_mm=spacing_mm,
        slice_thickness_mm=slice_thickness_mm,
        slope=slope,
        intercept=intercept,
        allow_missing_masks=allow_missing_masks,
    )
    return _ingest(scans, out_dir, id_map, salt)

"""Plan and write the phantom dataset (see the package docstring for what it holds)."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import patch_grid_shape, patches_from_mask, write_manifest
from .presets import get_preset
from .render import ScanSpec, render_scan, sample_scan

MANIFEST_NAME = "manifest.parquet"
VOLUMES_DIR = "volumes"

# Stream tags of the seed sequences, so the plan, the patients and the scans never share a stream.
_PLAN, _PATIENT, _SCAN, _NOISE = 0, 1, 2, 3


@dataclass(frozen=True)
class ScanPlan:
    """Identity and shape of one scan of the phantom dataset (indices are 1-based, as in the ids)."""

    patient: int
    study: int
    scan: int
    anatomy: str
    n_slices: int

    @property
    def patient_id(self) -> str:
        """Pseudonymous patient id, e.g. ``P0003``."""
        return f"P{self.patient:04d}"

    @property
    def study_id(self) -> str:
        """Study id, e.g. ``P0003-S1``."""
        return f"{self.patient_id}-S{self.study}"

    @property
    def scan_id(self) -> str:
        """Scan id, e.g. ``P0003-S1-C2``."""
        return f"{self.study_id}-C{self.scan}"


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key))
    )


def plan_dataset(patients: int, seed: int, slices_per_scan: int, iliac_fraction: float) -> list[ScanPlan]:
    """Patients x studies (1-4) x scans (1-3), each scan ``slices_per_scan`` x U(0.5, 1.5) slices long."""
    plans = []
    for p in range(1, patients + 1):
        rng = _rng(seed, _PLAN, p)
        for st in range(1, int(rng.integers(1, 5)) + 1):
            for sc in range(1, int(rng.integers(1, 4)) + 1):
                anatomy = "iliac" if rng.random() < iliac_fraction else "femoral"
                n = max(2, round(slices_per_scan * rng.uniform(0.5, 1.5)))
                plans.append(ScanPlan(p, st, sc, anatomy, n))
    return plans


def scan_spec(plan: ScanPlan, *, seed: int, size: int, preset: str) -> ScanSpec:
    """The sampled (not yet rendered) scan of ``plan``; deterministic in ``(seed, plan)``."""
    rng = _rng(seed, _SCAN, plan.patient, plan.study, plan.scan)
    prng = _rng(seed, _PATIENT, plan.patient)
    return sample_scan(plan.anatomy, rng, prng, plan.n_slices, size, get_preset(preset))


def render_plan(
    plan: ScanPlan, *, seed: int, size: int, preset: str, with_tissue: bool = False
) -> tuple[ScanSpec, np.ndarray, np.ndarray, np.ndarray | None]:
    """Sample and render one scan: ``(spec, int16 HU, uint8 mask, uint8 tissue map or None)``, each [Z, H, W]."""
    spec = scan_spec(plan, seed=seed, size=size, preset=preset)
    noise_rng = _rng(seed, _NOISE, plan.patient, plan.study, plan.scan)
    return (spec, *render_scan(spec, noise_rng, with_tissue=with_tissue))


def _save_volume(path: Path, array: np.ndarray) -> None:
    """Write one ``.npy`` volume (no pickle)."""
    np.save(path, array, allow_pickle=False)


def _build_scan(plan: ScanPlan, root: str, seed: int, size: int, preset: str) -> list[dict]:
    """Render ``plan`` into ``root/volumes/<scan_id>/`` and return its manifest rows."""
    spec, image, mask, _ = render_plan(plan, seed=seed, size=size, preset=preset)
    rel = f"{VOLUMES_DIR}/{plan.scan_id}"
    folder = Path(root) / rel
    folder.mkdir(parents=True)
    _save_volume(folder / "image.npy", image)
    _save_volume(folder / "mask.npy", mask)
    rows_p, cols_p = patch_grid_shape(size, size)
    labels = spec.labels()
    return [
        {
            "patient_id": plan.patient_id,
            "study_id": plan.study_id,
            "scan_id": plan.scan_id,
            "slice_index": z,
            "image_path": f"{rel}/image.npy",
            "image_index": z,
            "mask_path": f"{rel}/mask.npy",
            "mask_index": z,
            "label": int(labels[z]),
            "anatomy": plan.anatomy,
            "spacing_row_mm": spec.spacing_mm,
            "spacing_col_mm": spec.spacing_mm,
            "slice_thickness_mm": spec.thickness_mm,
            "height": size,
            "width": size,
            "patch_rows": rows_p,
            "patch_cols": cols_p,
            "patches": patches_from_mask(mask[z]).ravel(),
            "source": "phantom",
        }
        for z in range(spec.n)
    ]


def _check_args(patients: int, size: int, slices_per_scan: int, iliac_fraction: float, workers: int) -> None:
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if slices_per_scan < 2:
        raise ValueError(f"slices_per_scan must be >= 2, got {slices_per_scan}")
    if not 0.0 <= iliac_fraction <= 1.0:
        raise ValueError(f"iliac_fraction must be within [0, 1], got {iliac_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _render_all(
    plans: list[ScanPlan], root: Path, seed: int, size: int, preset: str, workers: int
) -> list[dict]:
    args = [(p, str(root), seed, size, preset) for p in plans]
    if workers == 1 or len(plans) == 1:
        chunks: Iterable[list[dict]] = (_build_scan(*a) for a in args)
        return [row for rows in chunks for row in rows]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=ctx) as pool:
        futures = [pool.submit(_build_scan, *a) for a in args]
        try:
            return [row for f in futures for row in f.result()]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # no worker writes after we clean up
            raise


def generate(
    out_dir: str | os.PathLike[str],
    *,
    patients: int = 12,
    seed: int = 0,
    size: int = 512,
    slices_per_scan: int = 64,
    preset: str = "standard",
    iliac_fraction: float = 0.5,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic DVT CT dataset to ``out_dir`` and return ``<out_dir>/manifest.parquet``.

    Args:
        out_dir: Dataset directory (created if missing).
        patients: Number of patients (each with 1-4 studies of 1-3 scans).
        seed: Random seed; the same seed gives byte-identical volumes and an identical manifest.
        size: Slice side in pixels (the field of view stays physical: coarser grids mean bigger pixels).
        slices_per_scan: Mean slices per scan (each scan draws 0.5x-1.5x this).
        preset: ``"standard"`` (realistic, not trivial) or ``"easy"`` (conspicuous clots, low noise).
        iliac_fraction: Probability that a scan is at iliac (pelvis) rather than femoral level.
        workers: Processes rendering scans in parallel (output does not depend on it).
        overwrite: Replace an existing dataset in ``out_dir`` instead of refusing.

    Raises:
        FileExistsError: ``out_dir`` already holds a dataset and ``overwrite`` is false.
        ValueError: An argument is out of range or the preset is unknown.
    """
    _check_args(patients, size, slices_per_scan, iliac_fraction, workers)
    get_preset(preset)
    out = Path(out_dir)
    manifest, volumes = out / MANIFEST_NAME, out / VOLUMES_DIR
    existing = [p.name for p in (manifest, volumes) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out}: already holds a dataset ({', '.join(existing)}); pass overwrite=True to replace it"
        )
    plans = plan_dataset(patients, seed, slices_per_scan, iliac_fraction)
    fresh = not out.exists()
    parent = out.parent if fresh else out
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_tmp_dir(parent, f".{out.name}.tmp-" if fresh else ".tmp-")
    try:
        rows = _render_all(plans, tmp, seed, size, preset, workers)
        write_manifest(pd.DataFrame(rows), tmp / MANIFEST_NAME)
        if fresh:
            os.replace(tmp, out)
        else:
            _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _make_tmp_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named directory in ``parent`` (permissions from the umask, unlike ``mkdtemp``)."""
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_in(tmp: Path, out: Path) -> None:
    """Move a finished build from ``tmp`` into the existing ``out``; the manifest is moved last.

    The previous dataset is parked in ``tmp/.old`` (deleted with ``tmp``) and put back if a move fails.
    """
    trash = tmp / ".old"
    trash.mkdir()
    parked = []
    try:
        for name in (MANIFEST_NAME, VOLUMES_DIR):  # a stale manifest never points at new volumes
            if (out / name).exists():
                os.replace(out / name, trash / name)
                parked.append(name)
        os.replace(tmp / VOLUMES_DIR, out / VOLUMES_DIR)
        os.replace(tmp / MANIFEST_NAME, out / MANIFEST_NAME)
    except BaseException:
        for name in reversed(parked):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            elif (out / name).exists():
                (out / name).unlink()
            os.replace(trash / name, out / name)
        raise

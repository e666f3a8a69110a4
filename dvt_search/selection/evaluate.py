"""The one touch of the test partition: the selected checkpoints score validation and test slices.

The run's ``splits.json`` copy is verified first: its content hash must equal ``run.json``'s
``splits_hash`` and its manifest fingerprint must match the manifest the slices are read from, so the test
slices are exactly those the search never saw. Validation predictions are kept too: operating thresholds
are chosen on them (never on test).

Prediction tables (``<run>/val_predictions.parquet``, ``<run>/test_predictions.parquet``), one row per
(winner, slice): ``family``, ``trial_id``, ``row`` (index into the partition's rows in manifest order),
``patient_id`` (the manifest's pseudonym), ``scan_id``, ``slice_index``, ``label``, ``score``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.data.dataset import SliceDataset, build_datasets
from dvt_search.data.splits import Splits, load_splits
from dvt_search.rundir.layout import RunDir, RunInfo
from dvt_search.selection.models import load_checkpoint, torch_module
from dvt_search.selection.selector import Winner

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("family", "trial_id", "row", "patient_id", "scan_id", "slice_index", "label", "score")


class SelectionError(RuntimeError):
    """The run cannot be evaluated as asked (missing manifest, split mismatch...); the message says why."""


def resolve_manifest(run_path: Path, info: RunInfo, override: str | os.PathLike[str] | None = None) -> Path:
    """The manifest the run was searched on: ``override``, else ``run.json``'s path (as written, then
    relative to the run directory)."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise SelectionError(f"{path}: manifest not found")
        return path
    record = RunDir(run_path).run_file
    if not info.manifest:
        raise SelectionError(f"{record} names no manifest; pass --manifest")
    for cand in (Path(info.manifest), run_path / info.manifest):
        if cand.is_file():
            return cand
    raise SelectionError(
        f"{record}: manifest {info.manifest!r} not found (moved or on another machine?); "
        "pass --manifest PATH to the same data"
    )


def verify_splits(run_path: Path, info: RunInfo, manifest_df: pd.DataFrame) -> Splits:
    """Load the run's ``splits.json`` against the manifest and check its hash equals ``run.json``'s."""
    run = RunDir(run_path)
    path = run.splits_file
    if not path.is_file():
        raise SelectionError(f"{path}: the run holds no copy of its splits")
    splits = load_splits(path, manifest_df=manifest_df)
    if not info.splits_hash:
        raise SelectionError(f"{run.run_file} records no splits_hash; cannot verify the test partition")
    if splits.hash != info.splits_hash:
        raise SelectionError(
            f"{path}: splits hash {splits.hash[:12]}... differs from the run record's "
            f"{info.splits_hash[:12]}...; "
            "the test partition may not be the one held out during the search"
        )
    return splits


@dataclass
class Predictions:
    """Validation and test predictions of every winner, plus what was checked while making them."""

    val: pd.DataFrame
    test: pd.DataFrame
    checks: dict[str, dict[str, Any]]  # per family: recorded vs recomputed validation metric
    extras: dict[str, dict[str, float]]  # per family: test values of family-specific metrics


#: Validation metrics every torch family reports; anything else (val_patch_auc, val_dice...) is an extra.
_GENERIC = {"val_auc", "val_loss", "val_precision", "val_recall", "val_threshold"}


def _extra_metrics(model: Any) -> list[str]:
    """Family-specific validation metrics in the model's history (``val_patch_auc``, ``val_dice``...)."""
    last = model.history[-1].metrics if model.history else {}
    return sorted(
        k for k in last if k.startswith("val_") and k not in _GENERIC and not k.startswith("val_loss_")
    )


def _frame(ds: SliceDataset, w: Winner, scores: np.ndarray) -> pd.DataFrame:
    f = ds.frame
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(ds),) or not np.isfinite(scores).all():
        raise SelectionError(f"{w.family} trial {w.trial_id}: predict returned {scores.shape} / non-finite")
    return pd.DataFrame(
        {
            "family": w.family,
            "trial_id": w.trial_id,
            "row": np.arange(len(ds), dtype=np.int64),
            "patient_id": f["patient_id"].astype(str).to_numpy(),
            "scan_id": f["scan_id"].astype(str).to_numpy(),
            "slice_index": f["slice_index"].astype(np.int64).to_numpy(),
            "label": ds.labels.astype(np.int64),
            "score": scores,
        }
    )


def predict_winners(
    run: RunDir,
    winners: Mapping[str, Winner],
    manifest_path: Path,
    splits: Splits,
    *,
    metric: str = "val_auc",
    device: str | None = None,
    batch_size: int | None = None,
) -> Predictions:
    """Load each winner's checkpoint and score the validation and test partitions once."""
    from dvt_search.stats.measures import auc

    cache: dict[tuple[int, tuple[tuple[float, float], ...]], dict[str, SliceDataset]] = {}
    val, test, checks, extras = [], [], {}, {}
    for fam, w in winners.items():
        model = load_checkpoint(run.path / w.checkpoint)
        key = (int(model.spec.image_size), tuple(tuple(x) for x in model.spec.windows))
        if key not in cache:
            cache[key] = build_datasets(manifest_path, run.splits_file, size=key[0], windows=key[1])
        ds = cache[key]
        kwargs: dict[str, Any] = {}
        if torch_module(model) is not None:
            kwargs = {"device": device or "auto", "batch_size": batch_size}
        log.info(
            "scoring %s trial %s on %d val + %d test slices", fam, w.trial_id, len(ds["val"]), len(ds["test"])
        )
        v = _frame(ds["val"], w, model.predict(ds["val"], **kwargs))
        val.append(v)
        test.append(_frame(ds["test"], w, model.predict(ds["test"], **kwargs)))
        names = _extra_metrics(model) if kwargs else []
        if names:  # e.g. the patch model's vein-detection AUC (paper 5.4): one more pass over test
            ev = model.evaluate(ds["test"], prefix="test_", **kwargs)
            extras[fam] = {
                f"test_{n[4:]}": float(ev[f"test_{n[4:]}"]) for n in names if f"test_{n[4:]}" in ev
            }
        checks[fam] = {"recorded": w.value}
        if metric == "val_auc":
            recomputed = auc(v["label"], v["score"])
            checks[fam]["recomputed"] = recomputed
            checks[fam]["agrees"] = bool(abs(recomputed - w.value) <= 1e-3)
            if not checks[fam]["agrees"]:
                log.warning("%s: recomputed val_auc %.4f != recorded %.4f", fam, recomputed, w.value)
    cols = list(PREDICTION_COLUMNS)
    empty = pd.DataFrame(columns=cols)
    return Predictions(
        val=pd.concat(val, ignore_index=True) if val else empty,
        test=pd.concat(test, ignore_index=True) if test else empty,
        checks=checks,
        extras=extras,
    )


def write_predictions(run_path: Path, preds: Predictions) -> tuple[Path, Path]:
    """Write both prediction tables atomically into the run directory."""
    run = RunDir(run_path)
    return (
        run.write_frame(run.predictions_file("val"), preds.val),
        run.write_frame(run.predictions_file("test"), preds.test),
    )


def read_predictions(run_path: str | os.PathLike[str], partition: str = "test") -> pd.DataFrame:
    """A stored prediction table (``FileNotFoundError`` telling to run ``select`` when absent)."""
    run = RunDir(run_path)
    return run.read_frame(run.predictions_file(partition))

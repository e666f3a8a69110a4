"""Deployable artifacts of the selected models (``dvt-search export RUN --out DIR``).

One directory per family winner, ``<out>/<family>/``, written atomically. It is itself a loadable family
checkpoint (``meta.json`` + the family's weight files, so ``families.get(f).load(dir)`` works) plus:

==================  =======================================================================================
(checkpoint)        the family's checkpoint files less those only training needs (the optimizer state):
                    torch families ``weights.pt`` (``torch.load(..., weights_only=True)``), SIFT-BoW-SVM
                    its pickle-free ``centers.npy`` + ``svm.npz``
(artefacts)         whatever ``Model.export`` writes: torch families ``model.ts`` (TorchScript, float32
                    ``[B, C, S, S]`` windowed images in [0, 1] -> ``[B]`` probabilities) and ``model.onnx``
                    (dynamic batch axis, where an exporter succeeds); see
                    :mod:`dvt_search.families.torch_export`
``preprocess.json`` how to turn a CT slice in HU into the model input (see :mod:`.preprocess`)
``threshold.json``  the slice threshold chosen on VALIDATION slices (``threshold``, + fixed-sensitivity
                    ones) and the scan decision: ``scan_aggregation`` (how slice scores make a scan score)
                    and ``scan_threshold``, both chosen on VALIDATION scans (the exam-level endpoint)
``metrics.json``    validation and test metrics with clustered / patient-bootstrap intervals
``MODEL_CARD.md``   intended use, data, metrics, limitations and the size of the search
``export.json``     what was exported, how (TorchScript/ONNX status and any failure reason), sha256s
==================  =======================================================================================

A failed ONNX export is recorded in ``export.json`` and the card, never fatal. What differs between
families is asked of the family (``Model.export``, ``Model.training_only_files``); ``export.json``'s
``kind`` is the family's label, for people. :mod:`.predict` opens the folder with ``Family.open_export``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from dvt_search.deploy.card import model_card
from dvt_search.deploy.preprocess import preprocess_spec
from dvt_search.families import get as get_family
from dvt_search.fsutil import atomic_directory, atomic_write_text
from dvt_search.selection.documents import read_comparison, read_selection
from dvt_search.selection.models import load_checkpoint

log = logging.getLogger(__name__)

EXPORT_FORMAT = "dvt-search-export/1"
EXPORT_FILE = "export.json"
PREPROCESS_FILE = "preprocess.json"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n")


def _copy_checkpoint(src: Path, dst: Path, skip: frozenset[str]) -> None:
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in skip:
            shutil.copy2(f, dst / f.name)


def export_winner(
    run_path: Path, family: str, selection: dict[str, Any], comparison: dict[str, Any] | None, out: Path
) -> Path:
    """Write ``<out>/<family>/`` for one selected trial (atomically) and return its path."""
    fam_choice = selection["families"][family]
    winner = fam_choice["winner"]
    ckpt = run_path / winner["checkpoint"]
    model = load_checkpoint(ckpt)
    stats = (comparison or {}).get("families", {}).get(family)
    with atomic_directory(out / family) as tmp:
        _copy_checkpoint(ckpt, tmp, model.training_only_files)
        info: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "family": family,
            "trial_id": winner["trial_id"],
            "run": selection.get("run", ""),
            "selection_metric": {
                "name": selection["metric"],
                "mode": selection["mode"],
                "value": winner["value"],
            },
            "torch": torch.__version__,
            "kind": get_family(family).kind,  # a label for people; nothing compares it
        }
        info.update(model.export(tmp))
        _write_json(tmp / PREPROCESS_FILE, preprocess_spec(model))
        _write_json(tmp / THRESHOLD_FILE, threshold_doc(stats, comparison))
        _write_json(tmp / METRICS_FILE, _metrics(winner, stats, comparison))
        atomic_write_text(tmp / CARD_FILE, model_card(family, selection, comparison, info, model))
        info["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        _write_json(tmp / EXPORT_FILE, info)
    return out / family


def threshold_doc(stats: dict[str, Any] | None, comparison: dict[str, Any] | None) -> dict[str, Any]:
    """``threshold.json``: the slice threshold (``threshold``) and the scan decision chosen on validation.

    ``scan_threshold`` / ``scan_aggregation`` are ``None`` for a comparison without the exam-level endpoint
    (format 2); readers then fall back to the highest slice probability against ``threshold``.
    """
    thresholds = stats["thresholds"] if stats else None
    exam = (stats or {}).get("exam") or {}
    scan_th = exam.get("thresholds")
    agg = exam.get("aggregation") if scan_th else None
    if agg:
        what = {
            "max": "highest slice probability",
            "mean": "mean slice probability",
            "topk": f"mean of its {agg['k']} highest slice probabilities",
        }[agg["how"]]
        scan_rule = f"a scan is positive when its {what} >= scan_threshold"
    else:
        scan_rule = "a scan is positive when its highest slice probability >= threshold"
    return {
        "threshold": None if thresholds is None else thresholds["youden"],
        "rule": None if stats is None else comparison["threshold_rule"],
        "at_sensitivity": None if thresholds is None else thresholds["at_sensitivity"],
        "slice_rule": "a slice is positive when probability >= threshold",
        "scan_threshold": None if not scan_th else scan_th["youden"],
        "scan_aggregation": None if not agg else {"how": agg["how"], "k": agg["k"]},
        "scan_threshold_rule": None if not scan_th else comparison.get("exam_rule"),
        "scan_at_sensitivity": None if not scan_th else scan_th["at_sensitivity"],
        "scan_at_specificity": None if not scan_th else scan_th["at_specificity"],
        "scan_rule": scan_rule,
    }


def _metrics(
    winner: dict[str, Any], stats: dict[str, Any] | None, comparison: dict[str, Any] | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"validation": {"selection_value": winner["value"]}, "test": None}
    if stats is not None and comparison is not None:
        doc["validation"]["auc"] = stats["val"]["auc"]
        doc["test"] = {
            **stats["test"],
            "operating_points": stats["operating_points"],
            "scan_level": stats["scan_level"],
            "calibration": {k: v for k, v in stats["calibration"].items() if k != "bins"},
            "exam": stats.get("exam"),
            "n": comparison.get("test", {}),
            "interval": f"{int(round(comparison['level'] * 100))}%; AUC: "
            f"{comparison.get('auc_interval', 'patient-bootstrap percentile')}; other rates: patient-bootstrap "
            f"percentile, stratified by patient DVT status ({comparison['n_resamples']} resamples, seed "
            f"{comparison['seed']})",
        }
    return doc


def export_run(
    run_path: str | os.PathLike[str], out: str | os.PathLike[str], families: list[str] | None = None
) -> list[Path]:
    """Export every family winner of a selected run (or only ``families``) under ``out``."""
    run_path, out = Path(run_path), Path(out)
    selection = read_selection(run_path)
    try:
        comparison: dict[str, Any] | None = read_comparison(run_path)
    except FileNotFoundError:
        comparison = None
        log.warning(
            "%s: no comparison.json (selected without --test?): exporting without test metrics", run_path
        )
    winners = [f for f, c in selection["families"].items() if c["winner"] is not None]
    if families:
        unknown = sorted(set(families) - set(winners))
        if unknown:
            raise KeyError(f"no selected model for {unknown}; selected: {winners}")
        winners = [f for f in winners if f in families]
    if not winners:
        raise ValueError(f"{run_path}: the selection holds no model to export")
    out.mkdir(parents=True, exist_ok=True)
    return [export_winner(run_path, f, selection, comparison, out) for f in winners]


def file_digest_ok(directory: str | os.PathLike[str]) -> bool:
    """Whether every file listed in ``export.json`` still has its recorded sha256."""
    d = Path(directory)
    info = json.loads((d / EXPORT_FILE).read_text())
    return all((d / n).is_file() and _sha256(d / n) == h for n, h in info["files"].items())

"""Deployable artifacts of the selected models (``dvt-search export RUN --out DIR``).

One directory per family winner, ``<out>/<family>/``, written atomically. It is itself a loadable family
checkpoint (``meta.json`` + the family's weight files, so ``families.get(f).load(dir)`` works) plus:

==================  =======================================================================================
``model.ts``        TorchScript (traced) module: float32 ``[B, C, S, S]`` windowed images in [0, 1] ->
                    ``[B]`` DVT probabilities (torch families; load with ``torch.jit.load``)
``weights.pt``      the network's ``state_dict`` (torch families; ``torch.load(..., weights_only=True)``)
``model.onnx``      the same graph in ONNX with a dynamic batch axis, where the export succeeds
``centers.npy``,    SIFT-BoW-SVM: the family's own pickle-free format (k-means centres, SVM arrays)
``svm.npz``
``preprocess.json`` how to turn a CT slice in HU into the model input (see :mod:`.preprocess`)
``threshold.json``  the operating threshold chosen on VALIDATION predictions (+ fixed-sensitivity ones)
``metrics.json``    validation and test metrics with clustered / patient-bootstrap intervals
``MODEL_CARD.md``   intended use, data, metrics, limitations and the size of the search
``export.json``     what was exported, how (TorchScript/ONNX status and any failure reason), sha256s
==================  =======================================================================================

A failed ONNX export is recorded in ``export.json`` and the card, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from dvt_search.deploy.card import model_card
from dvt_search.deploy.preprocess import preprocess_spec
from dvt_search.families.base import Model
from dvt_search.fsutil import atomic_directory
from dvt_search.selection.models import SliceProbability, load_checkpoint, torch_module
from dvt_search.selection.selector import read_selection
from dvt_search.stats.compare import read_comparison

log = logging.getLogger(__name__)

EXPORT_FORMAT = "dvt-search-export/1"
EXPORT_FILE = "export.json"
TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
PREPROCESS_FILE = "preprocess.json"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
_SKIP = {"train_state.pt"}  # optimizer state: not part of a deployable model
ONNX_OPSET = 17


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n")


def _example(model: Model, batch: int) -> torch.Tensor:
    s, c = int(model.spec.image_size), int(model.spec.in_channels)
    return torch.rand(batch, c, s, s, generator=torch.Generator().manual_seed(batch))


def export_torchscript(model: Model, path: Path) -> dict[str, Any]:
    """Trace the probability module to ``path`` and check it against eager on another batch size."""
    wrapper = SliceProbability(model).eval().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace deprecation / tracer warnings are noise here
        traced = torch.jit.trace(wrapper, _example(model, 2))
        probe = _example(model, 3)
        diff = float((traced(probe) - wrapper(probe)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"traced module differs from eager by {diff:.2e} on a batch of 3")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # TorchScript is deprecated upstream, still the format asked for
        torch.jit.save(traced, str(path))
    return {"method": "torch.jit.trace", "checked_batch_size": 3, "max_abs_diff": diff}


def export_onnx(model: Model, path: Path) -> dict[str, Any]:
    """ONNX export with a dynamic batch axis; returns ``{"ok": False, "error": ...}`` instead of raising."""
    import onnx

    wrapper = SliceProbability(model).eval().cpu()
    attempts = (("torchscript-based", {"dynamo": False}), ("dynamo", {"dynamo": True}))
    errors = []
    for name, kwargs in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper,
                    (_example(model, 2),),
                    str(path),
                    input_names=["image"],
                    output_names=["probability"],
                    dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    **kwargs,
                )
            onnx.checker.check_model(str(path))
            return {
                "ok": True,
                "exporter": name,
                "opset": ONNX_OPSET,
                "input": "image",
                "output": "probability",
            }
        except Exception as exc:  # any exporter failure is reported, not fatal
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
            for extra in path.parent.glob(f"{path.name}*.data"):
                extra.unlink()
    return {"ok": False, "error": "; ".join(errors)}


def _copy_checkpoint(src: Path, dst: Path) -> None:
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in _SKIP:
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
        _copy_checkpoint(ckpt, tmp)
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
        }
        if torch_module(model) is not None:
            info["kind"] = "torch"
            info["torchscript"] = export_torchscript(model, tmp / TORCHSCRIPT_FILE)
            info["onnx"] = export_onnx(model, tmp / ONNX_FILE)
            if not info["onnx"]["ok"]:
                log.warning("%s: ONNX export failed: %s", family, info["onnx"]["error"])
        else:
            info["kind"] = "classic"
            info["torchscript"] = None
            info["onnx"] = {"ok": False, "error": f"{family} is not a neural network (no ONNX graph)"}
        _write_json(tmp / PREPROCESS_FILE, preprocess_spec(model))
        thresholds = stats["thresholds"] if stats else None
        _write_json(
            tmp / THRESHOLD_FILE,
            {
                "threshold": None if thresholds is None else thresholds["youden"],
                "rule": None if stats is None else comparison["threshold_rule"],
                "at_sensitivity": None if thresholds is None else thresholds["at_sensitivity"],
                "slice_rule": "a slice is positive when probability >= threshold",
                "scan_rule": "a scan is positive when its highest slice probability >= threshold",
            },
        )
        _write_json(tmp / METRICS_FILE, _metrics(winner, stats, comparison))
        (tmp / CARD_FILE).write_text(model_card(family, selection, comparison, info, model))
        info["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        _write_json(tmp / EXPORT_FILE, info)
    return out / family


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
            "calibration": {k: stats["calibration"][k] for k in ("brier", "ece")},
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

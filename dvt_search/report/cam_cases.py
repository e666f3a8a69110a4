"""Mis-classified test slices of the CNN winners with their Grad-CAM maps (paper section 5.4, Fig. 5 left).

Errors are taken at the validation-chosen threshold: the most confident false positives (highest score
among label 0) and false negatives (lowest score among label 1). Maps come from
:func:`dvt_search.engine.cam.grad_cam` on the winner's network. The SIFT baseline has no gradient-based
map and is skipped with a note. Captions name the scan by a short SHA-256 tag of its id and the slice index:
scan ids may embed the patient key (the phantom's do), and no patient key belongs in a report.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from dvt_search.rundir.layout import RunDir
from dvt_search.selection.evaluate import resolve_manifest, verify_splits
from dvt_search.selection.models import load_checkpoint, torch_module


def pick_errors(frame: pd.DataFrame, threshold: float, n: int) -> pd.DataFrame:
    """Up to ``n`` errors, alternating the most confident false positives and false negatives."""
    fp = frame[(frame["label"] == 0) & (frame["score"] >= threshold)].sort_values("score", ascending=False)
    fn = frame[(frame["label"] == 1) & (frame["score"] < threshold)].sort_values("score")
    fp, fn = fp.assign(kind="FP"), fn.assign(kind="FN")
    take = []
    for i in range(n):
        for part in (fp, fn):
            if i < len(part) and len(take) < n:
                take.append(part.iloc[i])
    return pd.DataFrame(take)


def misclassified_cases(
    run_path: Path,
    selection: dict[str, Any],
    comparison: dict[str, Any],
    test: pd.DataFrame,
    *,
    manifest: str | None = None,
    per_family: int = 4,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """``({family: [case...]}, notes)``; a case holds ``image`` and ``cam`` (``[S, S]`` in [0, 1]),
    ``caption``, ``kind`` (FP/FN), ``scan_id``, ``slice_index`` and ``score``."""
    import torch

    from dvt_search.data.dataset import build_datasets
    from dvt_search.data.schema import read_manifest
    from dvt_search.engine.cam import grad_cam

    notes: list[str] = []
    run = RunDir(run_path)
    info = run.read_info()
    try:
        manifest_path = resolve_manifest(run.path, info, manifest)
        verify_splits(run.path, info, read_manifest(manifest_path))
    except Exception as exc:  # images unavailable here: the report still renders, with the reason
        return {}, [f"CAM overlays skipped: {exc}"]
    out: dict[str, list[dict[str, Any]]] = {}
    for fam, choice in selection["families"].items():
        w = choice["winner"]
        if w is None or fam not in comparison.get("families", {}):
            continue
        model = load_checkpoint(run.path / w["checkpoint"])
        module = torch_module(model)
        if module is None:
            notes.append(f"{fam}: no class activation map for a non-neural model (skipped).")
            continue
        errors = pick_errors(
            test[test["family"] == fam], comparison["families"][fam]["thresholds"]["youden"], per_family
        )
        if errors.empty:
            notes.append(f"{fam}: no mis-classified test slice at the chosen threshold.")
            continue
        spec = model.spec
        ds = build_datasets(
            manifest_path,
            run.splits_file,
            size=spec.image_size,
            windows=spec.windows,
            context_slices=getattr(spec, "context_slices", 0),
        )["test"]
        centre = getattr(spec, "context_slices", 0) * len(spec.windows)  # the slice itself, first window
        images = torch.stack([ds[int(r)]["image"] for r in errors["row"]])
        module.cpu()
        maps = grad_cam(module, images).numpy()
        out[fam] = [
            {
                "image": images[i, centre].numpy(),
                "cam": maps[i],
                "kind": r.kind,
                "scan_id": r.scan_id,
                "slice_index": int(r.slice_index),
                "score": float(r.score),
                "caption": f"{fam} · {r.kind} · score {r.score:.2f}\nscan #{scan_tag(r.scan_id)}\nslice {int(r.slice_index)}",
            }
            for i, r in enumerate(errors.itertuples())
        ]
    return out, notes


def scan_tag(scan_id: str) -> str:
    """Short, stable tag of a scan id for captions (``sha256(scan_id)[:8]``): recomputable from the manifest."""
    return hashlib.sha256(str(scan_id).encode()).hexdigest()[:8]

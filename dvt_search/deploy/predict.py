"""Score a new CT series with an exported model (``dvt-search predict --model DIR --dicom SERIES``).

The series is read by :mod:`.inputs`: a DICOM series with :mod:`dvt_search.data.readers.dicom` (ordered
by ImagePositionPatient so slice 0 is the most inferior, RescaleSlope/Intercept applied) or a NIfTI
volume (``--nifti``) in the same layout. :mod:`.scope` checks that it is what the model was trained for
(CT, axial, thigh/pelvis, HU, contrast and, for models with a vein detector, veins found where the
detector looks: ``ExportedScorer.vein_fractions``) and its warnings go into the summary. Each slice is preprocessed as
``preprocess.json`` says (:mod:`dvt_search.data.transform`, as in training), and the family scores it
through ``Family.open_export``: the TorchScript module (``model.ts``) for CNN families, the pickle-free
SIFT-BoW-SVM arrays for the baseline. The scan decision aggregates the slice probabilities as
``threshold.json``'s ``scan_aggregation`` says and compares the result with its ``scan_threshold``, both
chosen on validation scans (:mod:`.scan_rule`; an export without them keeps the highest slice probability
against the slice ``threshold``); slices are flagged against the slice ``threshold``. Batches of series:
:mod:`.worklist`.

Outputs (``--out``): ``slices.csv`` (slice_index, probability, positive), ``summary.json`` (decision,
out-of-scope ``warnings`` and the ``scope`` measures) and, for families that explain their scores (the
CNNs), ``heatmap_slice_<k>.png`` for every positive slice. CNN
heat maps are Grad-CAM maps of the eager network (rebuilt from the exported ``meta.json`` +
``weights.pt``, which hold the same weights as the TorchScript file), because Grad-CAM needs the layer
activations that a TorchScript graph does not expose.
Nothing read from the DICOM header (names, ids, dates, UIDs) is written or logged; slices are named by
their index only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.data.spec import DataSpec
from dvt_search.deploy.inputs import SeriesInput, read_dicom_folder, read_nifti_input
from dvt_search.deploy.preprocess import network_input, spec_from_preprocess
from dvt_search.deploy.scan_rule import decide, parse_scan_rule
from dvt_search.deploy.scope import check_scope
from dvt_search.families import get as get_family
from dvt_search.families.base import ExportedScorer
from dvt_search.families.deployed import context_stacks
from dvt_search.fsutil import atomic_write, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Exported:
    """An export directory (see :mod:`.export`) opened for inference.

    ``kind`` is the family's label recorded in ``export.json`` (for display; scoring asks the family).
    """

    directory: Path
    family: str
    kind: str
    preprocess: dict[str, Any]
    threshold: float
    #: the scan decision as ``threshold.json`` states it (:mod:`.scan_rule`); None: highest slice vs threshold
    scan_rule: dict[str, Any] | None = None
    _scorer: ExportedScorer | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Exported:
        """Read ``export.json``, ``preprocess.json`` and ``threshold.json`` of an export directory."""
        d = Path(directory)
        try:
            info = json.loads((d / "export.json").read_text())
            pre = json.loads((d / "preprocess.json").read_text())
            thr = json.loads((d / "threshold.json").read_text())
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{d}: not a dvt-search export ({exc.filename} missing)") from exc
        if thr.get("threshold") is None:
            raise ValueError(
                f"{d}/threshold.json holds no threshold (the run was selected without a test set)"
            )
        return cls(
            d,
            info["family"],
            str(info.get("kind", "")),
            pre,
            float(thr["threshold"]),
            parse_scan_rule(thr, d / "threshold.json"),
        )

    @property
    def rule(self) -> dict[str, Any]:
        """The scan rule (:func:`~dvt_search.deploy.scan_rule.read_scan_rule`'s form)."""
        if self.scan_rule is not None:
            return self.scan_rule
        return {"how": "max", "k": 1, "threshold": self.threshold, "legacy": True}

    @property
    def decision_threshold(self) -> tuple[float, str]:
        """The scan decision's threshold and its ``threshold.json`` key (``scan_threshold`` when present)."""
        rule = self.rule
        return rule["threshold"], "threshold" if rule["legacy"] else "scan_threshold"

    @property
    def spec(self) -> DataSpec:
        return spec_from_preprocess(self.preprocess)

    @property
    def scorer(self) -> ExportedScorer:
        """The family's scorer of this folder (:meth:`Family.open_export`), opened once."""
        if self._scorer is None:
            self._scorer = get_family(self.family).open_export(self.directory, self.spec)
        return self._scorer

    def scores(self, volume_hu: np.ndarray, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
        """Per-slice DVT probabilities of a ``[Z, H, W]`` HU volume."""
        return self.scorer.scores(volume_hu, batch_size=batch_size, device=device)

    def slices_at(self, volume_hu: np.ndarray, index: Any) -> list[np.ndarray]:
        """Slices ``index`` of a volume as the model reads them: 2-D, or with context their stacks."""
        return context_stacks(volume_hu, [int(i) for i in index], self.spec.context_slices)

    def heatmaps(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Heat maps ``[N, S, S]`` in [0, 1] (Grad-CAM for CNN families; ``None`` where the family has none).

        ``slices_hu`` as :meth:`slices_at` gives them (context stacks for a model with context).
        """
        if not slices_hu:
            return None
        return self.scorer.heatmaps(slices_hu)

    def vein_fractions(self, slices_hu: list[np.ndarray]) -> np.ndarray | None:
        """Per slice, the fraction seen as vein by the model's vein detector; ``None`` without one."""
        return self.scorer.vein_fractions(slices_hu)


def read_dicom_volume(series_dir: str | os.PathLike[str], series: str | None = None) -> np.ndarray:
    """The HU volume ``[Z, H, W]`` of one CT series under ``series_dir`` (slice 0 most inferior).

    Series are found by :mod:`dvt_search.data.readers.discovery` (UID-less files grouped by folder and
    geometry; scouts, reports, captures and non-axial images skipped with a reason). With several
    series, ``series`` picks one (1-based index or series key, as listed in the warning); without it the
    largest axial CT series is used and the choice is logged.
    """
    return read_dicom_folder(series_dir, series).volume


def overlay_png(image01: np.ndarray, heat: np.ndarray, path: Path) -> None:
    """Write a grey image with a jet heat map blended over it (no metadata besides the pixels)."""
    import cv2

    grey = np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    colour = cv2.applyColorMap(np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blend = cv2.addWeighted(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 0.6, colour, 0.4, 0.0)
    big = cv2.resize(blend, (max(256, blend.shape[1]),) * 2, interpolation=cv2.INTER_NEAREST)
    if not cv2.imwrite(str(path), big):
        raise OSError(f"{path}: cannot write PNG")


def predict_input(
    model: Exported,
    series: SeriesInput,
    out: str | os.PathLike[str],
    *,
    heatmaps: bool = True,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, Any]:
    """Check and score one read series; write ``slices.csv``, ``summary.json`` (+ heat maps); return the summary."""
    scope = check_scope(
        series.volume,
        series.spacing_rc,
        modality=series.modality,
        axial=series.axial,
        vein_detector=model.vein_fractions,
        context_slices=model.spec.context_slices,
    )
    volume = series.volume
    probs = model.scores(volume, batch_size=batch_size, device=device)
    positive = probs >= model.threshold
    scan_thr, scan_key = model.decision_threshold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"slice_index": np.arange(len(probs)), "probability": probs, "positive": positive})
    atomic_write(out / "slices.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    heat_files: list[str] = []
    idx = np.flatnonzero(positive)
    maps = model.heatmaps(model.slices_at(volume, idx)) if heatmaps else None
    if maps is not None:
        spec = model.spec
        for k, heat in zip(idx, maps):
            name = f"heatmap_slice_{int(k):04d}.png"
            overlay_png(network_input(volume[k], spec)[0], heat, out / name)
            heat_files.append(name)
    top = float(probs.max()) if len(probs) else float("nan")
    scan = decide(model.rule, probs)
    summary = {
        "family": model.family,
        "source": series.source,
        "n_slices": int(len(probs)),
        "threshold": model.threshold,
        "scan_threshold_key": scan_key,
        "max_probability": top,
        "max_slice_index": int(probs.argmax()) if len(probs) else None,
        "positive_slices": [int(i) for i in idx],
        "decision": "DVT suspected" if scan["scan_positive"] else "no DVT detected",
        **scan,
        "in_scope": scope.ok,
        "warnings": list(scope.warnings),
        "scope": scope.checks,
        "heatmaps": heat_files,
        "heatmap_method": model.scorer.heatmap_method if heatmaps else "none (not asked for)",
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    return summary


def predict_series(
    model_dir: str | os.PathLike[str],
    dicom_dir: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    device: str = "cpu",
    series: str | None = None,
    nifti: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score a DICOM series (or the NIfTI volume ``nifti``), write ``slices.csv``, ``summary.json`` and heat maps.

    ``series`` chooses among several series under ``dicom_dir`` (see :func:`read_dicom_volume`).
    """
    model = Exported.open(model_dir)
    if nifti is not None:
        read = read_nifti_input(nifti)
    elif dicom_dir is not None:
        read = read_dicom_folder(dicom_dir, series)
    else:
        raise ValueError("give a DICOM folder or a NIfTI file")
    return predict_input(model, read, out, batch_size=batch_size, device=device)


def format_summary(summary: dict[str, Any], probs: pd.DataFrame | None = None) -> str:
    """Human-readable per-slice table and decision."""
    lines = []
    if probs is not None:
        lines.append(f"{'slice':>6}  {'probability':>11}  positive")
        for r in probs.itertuples():
            lines.append(f"{r.slice_index:>6}  {r.probability:>11.4f}  {'yes' if r.positive else ''}")
    lines.extend(f"WARNING: out of scope: {w}" for w in summary.get("warnings", []))
    lines.append(
        f"{summary['family']}: {summary['decision']} (scan score {summary['scan_score']:.4f} "
        f"({summary['scan_aggregation']['how']}), scan threshold {summary['scan_threshold']:.4f}; max slice "
        f"probability {summary['max_probability']:.4f} at slice {summary['max_slice_index']}, slice threshold "
        f"{summary['threshold']:.4f}; {len(summary['positive_slices'])} of {summary['n_slices']} slices positive)"
    )
    if summary.get("warnings"):
        lines.append("the series is not what the model was trained for: do not rely on this decision")
    return "\n".join(lines)

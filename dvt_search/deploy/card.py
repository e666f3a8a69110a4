"""``MODEL_CARD.md`` of an exported model: what it is for, what it was trained and tested on, how well it
did (with intervals), what it cannot be trusted for, and how large the search behind it was."""

from __future__ import annotations

from typing import Any

from dvt_search.families.base import Model
from dvt_search.stats.bootstrap import CI
from dvt_search.stats.compare import FEW_PATIENTS


def _ci(d: dict[str, Any] | None, digits: int = 3) -> str:
    if not d:
        return "n/a"
    return CI.from_dict(d).fmt(digits)


def _brier_ref(cal: dict[str, Any]) -> str:
    if "brier_reference" not in cal:
        return ""
    return f" (no-skill reference {cal['brier_reference']:.3f}; scaled Brier {cal['scaled_brier']:.2f})"


def _exam_lines(exam: dict[str, Any] | None) -> list[str]:
    """The exam-level (scan) endpoint: the decision ``predict`` makes, with its test performance."""
    if not exam:
        return ["", "The exam-level endpoint was not recorded (comparison from an older version)."]
    if "test" not in exam:
        return ["", f"Exam level: {exam.get('note', 'not estimable')}."]
    agg, y, n = exam["aggregation"], exam["test"]["youden"], exam["counts"]["test"]
    how = f"top-{agg['k']} mean" if agg["how"] == "topk" else agg["how"]
    out = [
        "",
        "### Exam level (primary endpoint: is there a DVT in this scan?)",
        "",
        f"Scan score: the {how} of the slice probabilities; scan threshold {y['threshold']:.4g} (Youden's J). "
        "Both were chosen on validation scans and are what `predict` uses (`threshold.json`: "
        f"`scan_aggregation`, `scan_threshold`). Test: {n['n_scans']} scans ({n['n_positive_scans']} with DVT) "
        f"from {n['n_patients']} patients ({n['n_positive_patients']} with DVT).",
        "",
        "| scan-level metric | value |",
        "|---|---|",
        f"| scan AUC | {_ci(exam['test']['auc'])} |",
        f"| sensitivity | {_ci(y['sensitivity'])} |",
        f"| specificity | {_ci(y['specificity'])} |",
        f"| PPV | {_ci(y['ppv'])} |",
        f"| NPV | {_ci(y['npv'])} |",
        "",
    ]
    for op in exam["test"]["at_specificity"]:
        out.append(
            f"- At validation scan specificity {op['target']:.2f} (threshold {op['threshold']:.4g}): test "
            f"sensitivity {_ci(op['sensitivity'])}, specificity {_ci(op['specificity'])}."
        )
    return out


def _data_lines(selection: dict[str, Any]) -> list[str]:
    data = selection.get("data") or {}
    rows = data.get("partitions") or []
    if not rows:
        return ["Partition sizes were not recorded (selected without evaluating the test set)."]
    out = [
        "| partition | patients | scans | slices | DVT-positive slices |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['partition']} | {r['patients']} | {r['scans']} | {r['slices']} | "
            f"{r['positives']} ({100 * r['pos_fraction']:.1f}%) |"
        )
    sources = ", ".join(data.get("sources", [])) or "unknown"
    out += [
        "",
        f"Data source(s): {sources}. Splits are patient-disjoint (splits hash "
        f"`{str(selection.get('splits_hash', ''))[:12]}`).",
    ]
    return out


def _synthetic(selection: dict[str, Any]) -> bool:
    return "phantom" in (selection.get("data") or {}).get("sources", [])


def model_card(
    family: str,
    selection: dict[str, Any],
    comparison: dict[str, Any] | None,
    export_info: dict[str, Any],
    model: Model,
) -> str:
    """The model card text for ``family``'s selected model."""
    fc = selection["families"][family]
    w = fc["winner"]
    stats = (comparison or {}).get("families", {}).get(family)
    lvl = int(round(comparison["level"] * 100)) if comparison else 95
    lines = [
        f"# Model card: {family} (trial {w['trial_id']})",
        "",
        "## Intended use",
        "",
        "Research use only: flagging axial CT slices (and scans, by the scan rule of `threshold.json`) of the "
        "femoral veins that may show a deep vein thrombosis, for study by radiology-AI researchers. It is "
        "not a medical device and must not be used for diagnosis or to rule out DVT.",
        "",
        "## Model",
        "",
        f"- Family: `{family}`; parameters: `{w['params']}`",
        f"- Input: {len(model.spec.windows)} HU window(s) {[list(x) for x in model.spec.windows]}, "
        f"{model.spec.image_size} x {model.spec.image_size} pixels"
        + (
            f", each slice with its {model.spec.context_slices} neighbouring slice(s) on either side of the "
            f"same series ({model.spec.in_channels} channels)"
            if getattr(model.spec, "context_slices", 0)
            else ""
        )
        + " (see `preprocess.json`).",
        f"- Output: per-slice DVT probability in [0, 1]; epochs trained: {w['epochs']}"
        f" (best epoch {w['best_epoch']}).",
        f"- Artifacts: TorchScript {'yes' if export_info.get('torchscript') else 'no'}; ONNX "
        + ("yes" if export_info["onnx"]["ok"] else f"no ({export_info['onnx']['error']})")
        + ".",
        "",
        "## Search and selection",
        "",
        f"- Selected by validation `{selection['metric']}` ({selection['mode']}) = {w['value']:.4f} among "
        f"{fc['n_trials']} {family} trial(s) ({fc['n_completed']} completed, {fc['n_stopped']} stopped "
        f"early, {fc['n_failed']} failed); {selection['n_trials']} trials were searched over all families.",
        f"- Ties broken by: {selection['tie_break']}.",
        "- The test partition was used once, after selection, for the selected models only.",
        "",
        "## Data",
        "",
        *_data_lines(selection),
        "",
        "## Metrics",
        "",
    ]
    if stats is None:
        lines.append("No test-set evaluation is recorded for this run.")
    else:
        t = stats["test"]
        th = stats["thresholds"]
        n_pat = comparison["test"]["n_patients"]
        lines += [
            f"Test slices: {comparison['test']['n_slices']} from {n_pat} patients. Intervals: {lvl}%; AUC "
            "intervals clustered (Obuchowski 1997, patients as clusters), the others percentile intervals of "
            f"a patient-level bootstrap stratified by DVT status ({comparison['n_resamples']} resamples).",
            "",
        ]
        if n_pat < FEW_PATIENTS:
            lines += [
                f"**Warning: only {n_pat} test patient(s) (fewer than {FEW_PATIENTS}).** Patients, not slices, "
                "are the independent units: every figure below is indicative only.",
                "",
            ]
        lines += [
            "| metric | value |",
            "|---|---|",
            f"| validation AUC | {stats['val']['auc']:.3f} |",
            f"| test AUC | {_ci(t['auc'])} |",
            f"| test precision @ {th['youden']:.4g} | {_ci(t['precision'])} |",
            f"| test recall (sensitivity) @ {th['youden']:.4g} | {_ci(t['recall'])} |",
            f"| test specificity @ {th['youden']:.4g} | {_ci(t['specificity'])} |",
            f"| scan-level AUC (max slice score) | {_ci(stats['scan_level'].get('max'))} |",
            f"| Brier score | {stats['calibration']['brier']:.3f}{_brier_ref(stats['calibration'])} |",
            "",
            f"The threshold {th['youden']:.4g} was chosen on validation predictions "
            f"({comparison['threshold_rule']}).",
        ]
        for op in stats["operating_points"]:
            lines.append(
                f"- At validation sensitivity {op['target_sensitivity']:.2f} (threshold {op['threshold']:.4g}): "
                f"test sensitivity {_ci(op['test']['recall'])}, specificity {_ci(op['test']['specificity'])}."
            )
        lines += _exam_lines(stats.get("exam"))
    lines += [
        "",
        "## Limitations",
        "",
    ]
    if _synthetic(selection):
        lines.append(
            "- **Trained and tested on synthetic phantom CT data.** Its numbers say nothing about real "
            "patients; retrain and re-evaluate on real, representative scans before any conclusion."
        )
    lines += [
        "- Slices of one patient are correlated; intervals treat patients as the independent units "
        "(clustered AUC intervals, patient bootstrap), but the test set is small, so intervals are wide and "
        "rankings between families may not hold on new patients.",
        "- Probabilities may be poorly calibrated (see the Brier score beside its no-skill reference); use the "
        "validation-chosen threshold, "
        "and re-choose it on local validation data before use elsewhere.",
        "- Femoral-level scans only (the paper's scope); iliac anatomy, other phases, other scanners and "
        "reconstruction kernels are out of scope.",
        "- Class activation maps of such models have highlighted image edges rather than veins (paper, "
        "section 5.4): a correct score is no evidence that the model looks at the thrombus.",
    ]
    return "\n".join(lines) + "\n"

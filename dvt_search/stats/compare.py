"""The comparison of the selected models on the test partition (``<run>/comparison.json``).

Computed only from the stored validation and test predictions (:mod:`.evaluate`); thresholds come from
validation predictions and are applied unchanged to test predictions.

Per family winner: test AUC, and precision / recall / specificity at the validation Youden threshold,
each with a patient-level bootstrap percentile interval; operating points at fixed validation
sensitivities; scan-level AUC (slice scores aggregated by max / mean / top-k mean, a scan is positive when
any slice is); Brier score, expected calibration error and reliability bins.

Between winners: every pair gets a DeLong test (slices treated as independent) and a paired patient
bootstrap interval and p-value of the AUC difference; both p-value families are Holm-adjusted (over all
pairs, and separately over the overall winner's comparisons). The verdict calls a difference
statistically significant only when the Holm-adjusted patient-bootstrap p-value AND the Holm-adjusted
DeLong p-value are both below ``1 - level``: the bootstrap respects patient clustering, DeLong does not.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.rundir.layout import RunDir
from dvt_search.stats.bootstrap import CI, DEFAULT_RESAMPLES, PatientBootstrap
from dvt_search.stats.measures import (
    AGGREGATIONS,
    aggregate_scans,
    auc,
    calibration,
    choose_thresholds,
    delong_test,
    holm,
    operating_point,
)

COMPARISON_FORMAT = "dvt-search-comparison/1"
#: Below this many test patients the verdict warns that bootstrap intervals are not trustworthy.
FEW_PATIENTS = 10
DELONG_NOTE = (
    "DeLong's test assumes independent slices; slices of one patient are correlated, so its p-values are "
    "optimistic. The verdict rests on the patient-level bootstrap."
)


def _aligned(test: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-family test frames sorted by row, checked to hold the same slices in the same order."""
    out = {f: g.sort_values("row").reset_index(drop=True) for f, g in test.groupby("family", sort=False)}
    ref = None
    for fam, g in out.items():
        key = g[["row", "scan_id", "slice_index", "label"]]
        if ref is None:
            ref = key
        elif not key.equals(ref):
            raise ValueError(f"test predictions of {fam!r} do not cover the same slices as the other winners")
    return out


def _family_stats(
    val: pd.DataFrame,
    test: pd.DataFrame,
    boot: PatientBootstrap,
    scan_boot: PatientBootstrap | None,
    sensitivities: Sequence[float],
    scan_k: int,
) -> dict[str, Any]:
    th = choose_thresholds(val["label"], val["score"], sensitivities)
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    metrics = boot.metrics(y, s, th.youden)
    point = operating_point(y, s, th.youden)
    ops = []
    for target, t in th.at_sensitivity.items():
        rates = boot.rate_samples(y, s, t)
        op = operating_point(y, s, t)
        ops.append(
            {
                "target_sensitivity": target,
                "threshold": t,
                "test": {k: boot.interval(getattr(op, k), rates[k]).as_dict() for k in rates},
            }
        )
    scan: dict[str, Any] = {"k": scan_k}
    for how in AGGREGATIONS:
        agg = aggregate_scans(test, how, k=scan_k)
        scan.update(n_scans=len(agg), n_positive=int(agg["label"].sum()))
        if scan_boot is None:
            scan["note"] = "scan-level AUC undefined: all test scans have the same label"
        else:
            scan[how] = scan_boot.auc_ci(agg["label"], agg["score"]).as_dict()
    cal = calibration(y, s)
    return {
        "trial_id": str(test["trial_id"].iloc[0]),
        "thresholds": th.as_dict(),
        "val": {"auc": auc(val["label"], val["score"]), "n_slices": len(val)},
        "test": {k: v.as_dict() for k, v in metrics.items()} | {"confusion": point.as_dict()},
        "operating_points": ops,
        "scan_level": scan,
        "calibration": {"brier": cal.brier, "ece": cal.ece, "bins": cal.bins.to_dict(orient="records")},
    }


def _pairs(frames: dict[str, pd.DataFrame], boot: PatientBootstrap, alpha: float) -> list[dict[str, Any]]:
    fams = list(frames)
    y = next(iter(frames.values()))["label"].to_numpy() if fams else np.array([])
    rows = []
    for a, b in itertools.combinations(fams, 2):
        sa, sb = frames[a]["score"].to_numpy(), frames[b]["score"].to_numpy()
        ci, p_boot = boot.auc_difference(y, sa, sb)
        try:
            dl = delong_test(y, sa, sb)
            z, p = dl.z, dl.p
        except ValueError:  # fewer than 2 slices of a class: DeLong undefined
            z = p = float("nan")
        rows.append(
            {
                "a": a,
                "b": b,
                "auc_a": auc(y, sa),
                "auc_b": auc(y, sb),
                "diff": ci.estimate,
                "delong_z": z,
                "delong_p": p,
                "boot_diff": ci.as_dict(),
                "boot_p": p_boot,
            }
        )
    _adjust(rows, "", alpha)
    return rows


def _adjust(rows: list[dict[str, Any]], suffix: str, alpha: float) -> None:
    dp = holm([r["delong_p"] for r in rows])
    bp = holm([r["boot_p"] for r in rows])
    for r, d, b in zip(rows, dp, bp):
        r[f"delong_p_holm{suffix}"] = float(d)
        r[f"boot_p_holm{suffix}"] = float(b)
        r[f"significant{suffix}"] = bool(d < alpha and b < alpha)


def _vs_reference(pairs: list[dict[str, Any]], ref: str, alpha: float) -> list[dict[str, Any]]:
    rows = []
    for p in pairs:
        if ref not in (p["a"], p["b"]):
            continue
        r = {k: v for k, v in p.items() if "holm" not in k and k != "significant"}
        if p["b"] == ref:  # orient as reference minus other
            d = p["boot_diff"]
            r.update(
                a=ref,
                b=p["a"],
                auc_a=p["auc_b"],
                auc_b=p["auc_a"],
                diff=-p["diff"],
                delong_z=-p["delong_z"],
                boot_diff={**d, "estimate": -d["estimate"], "low": -d["high"], "high": -d["low"]},
            )
        rows.append(r)
    _adjust(rows, "", alpha)
    return rows


def _ci(d: dict[str, Any]) -> CI:
    return CI(d["estimate"], d["low"], d["high"], d["level"], d["n_valid"])


def verdict(doc: dict[str, Any]) -> list[str]:
    """Plain-words statements about the comparison (significance judged as in the module docstring)."""
    fams, ref = doc["families"], doc.get("reference")
    if not fams or ref is None:
        return ["No family produced a usable model, so nothing was compared on the test set."]
    lvl = int(round(doc["level"] * 100))
    n_res = doc["n_resamples"]

    def p_(v: float) -> str:
        return f"< {1 / n_res:.1g}" if v == 0 else f"= {v:.3g}"

    r = fams[ref]
    a = _ci(r["test"]["auc"])
    out = [
        f"The model chosen on validation data is {ref} (validation AUC {r['val']['auc']:.3f}); on the "
        f"held-out test slices its AUC is {a.fmt(3)} ({lvl}% patient-bootstrap interval)."
    ]
    if a.low <= 0.5:
        out.append(f"Its interval includes 0.5: on this test set {ref} is not distinguishable from chance.")
    for row in doc["vs_reference"]:
        d = _ci(row["boot_diff"])
        words = "a statistically significant" if row["significant"] else "NOT a statistically significant"
        out.append(
            f"{ref} vs {row['b']}: AUC difference {d.fmt(3)}; bootstrap p {p_(row['boot_p'])}, DeLong p "
            f"{p_(row['delong_p'])} (Holm-adjusted: bootstrap p {p_(row['boot_p_holm'])}, DeLong p "
            f"{p_(row['delong_p_holm'])}): "
            f"{words} difference."
        )
    if doc["vs_reference"] and not any(x["significant"] for x in doc["vs_reference"]):
        out.append(
            "None of the differences between the families' best models is statistically significant on this "
            "test set; the ranking may not hold on new patients."
        )
    n_pat = doc.get("test", {}).get("n_patients", 0)
    if n_pat < FEW_PATIENTS:
        out.append(
            f"Only {n_pat} patient(s) in the test set: a patient bootstrap has very few distinct resamples, so "
            "every interval and bootstrap p-value above understates the uncertainty; treat them as indicative."
        )
    out.append(DELONG_NOTE)
    return out


def compare(
    val: pd.DataFrame,
    test: pd.DataFrame,
    *,
    reference: str | None = None,
    sensitivities: Sequence[float] = (0.8, 0.9),
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    scan_k: int = 3,
) -> dict[str, Any]:
    """The full comparison document for the winners' prediction tables (see the module docstring).

    Args:
        val, test: prediction tables (:data:`dvt_search.selection.evaluate.PREDICTION_COLUMNS`).
        reference: the overall winner's family (compared against every other winner).
    """
    frames = _aligned(test)
    alpha = 1.0 - level
    doc: dict[str, Any] = {
        "format": COMPARISON_FORMAT,
        "n_resamples": n_resamples,
        "seed": seed,
        "level": level,
        "threshold_rule": "Youden's J on validation predictions (highest maximising threshold)",
        "sensitivities": list(sensitivities),
        "delong_note": DELONG_NOTE,
        "reference": reference if reference in frames else None,
        "families": {},
        "pairs": [],
        "vs_reference": [],
    }
    if not frames:
        doc["verdict"] = verdict(doc)
        return doc
    first = next(iter(frames.values()))
    doc["test"] = {
        "n_slices": len(first),
        "n_patients": int(first["patient_id"].nunique()),
        "n_scans": int(first["scan_id"].nunique()),
        "n_positive": int(first["label"].sum()),
    }
    boot = PatientBootstrap(first["patient_id"], n_resamples=n_resamples, seed=seed, level=level)
    scans = aggregate_scans(first, "max")
    two_classes = scans["label"].nunique() == 2
    scan_boot = PatientBootstrap(scans["patient_id"], n_resamples, seed, level) if two_classes else None
    for fam, t in frames.items():
        v = val[val["family"] == fam]
        doc["families"][fam] = _family_stats(v, t, boot, scan_boot, sensitivities, scan_k)
    doc["pairs"] = _pairs(frames, boot, alpha)
    if doc["reference"] is not None:
        doc["vs_reference"] = _vs_reference(doc["pairs"], doc["reference"], alpha)
    doc["verdict"] = verdict(doc)
    return doc


def write_comparison(run_path: str | os.PathLike[str], doc: dict[str, Any]) -> Path:
    """Write ``<run>/comparison.json`` atomically."""
    run = RunDir(run_path)
    return run.write_doc(run.comparison_file, doc)


def read_comparison(run_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored comparison of a run (``FileNotFoundError`` telling to run ``select`` when absent)."""
    run = RunDir(run_path)
    return run.read_doc(run.comparison_file)

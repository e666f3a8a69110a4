"""The comparison of the selected models on the test partition (``<run>/comparison.json``).

Computed only from the stored validation and test predictions (:mod:`.evaluate`); thresholds come from
validation predictions and are applied unchanged to test predictions.

Per family winner: test AUC with its clustered interval (Obuchowski 1997, patients as clusters, logit
scale, t with patients - 1 degrees of freedom; :mod:`.clustered`) and, for reference, the percentile
interval of the patient bootstrap; precision / recall / specificity at the validation Youden threshold with
percentile intervals of the patient bootstrap stratified by patient DVT status (``n_valid`` / ``n_invalid``
/ ``n_distinct`` resamples recorded); operating points at fixed validation sensitivities; scan-level AUC
(slice scores aggregated by max / mean / top-k mean, a scan is positive when any slice is; clustered
interval, scans within patients); Brier score beside its no-skill reference, scaled Brier, calibration
slope / intercept with patient-bootstrap intervals, expected calibration error and reliability bins; and
the exam-level primary endpoint (:mod:`.exam`: aggregation and scan thresholds chosen on validation scans;
test scan sensitivity, specificity, PPV and NPV; scan calibration and the decision curve).

Between winners, ONE pre-specified significance rule (:func:`significance_rule`) and ONE multiplicity
family: every pair of the families' selected models gets the clustered paired test; its p-values are
Holm-adjusted over all pairs (a comparison that is not estimable counts as p = 1 and is never
significant); a pair is significant when its Holm-adjusted clustered p-value is below ``1 - level``. The
comparisons against the overall winner (``vs_reference``) are the same rows, oriented, with the same
adjusted p-values, so the verdict can never contradict the pairs table. DeLong (slices treated as
independent) and the paired patient bootstrap are kept as labelled secondary columns (each Holm-adjusted
over the same family) and do not enter the rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dvt_search.stats.bootstrap import CI, DEFAULT_RESAMPLES, PatientBootstrap
from dvt_search.stats.clustered import clustered_auc_ci, clustered_test
from dvt_search.stats.exam import EXAM_INTERVAL, EXAM_RULE, exam_endpoint, partition_counts, scan_bootstrap
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
from dvt_search.stats.usefulness import brier_summary, recalibration

#: Format 3 adds the exam-level endpoint (``families.<f>.exam``, ``exam_rule``, ``counts``), the
#: calibration slope / intercept and the Brier reference (``families.<f>.calibration``) and
#: ``specificities``. Readers accept format 2 documents (no exam block): they say it was not recorded.
COMPARISON_FORMAT = "dvt-search-comparison/3"
#: Below this many test patients the verdict and the headline card warn that every interval and test is
#: fragile (few independent units, whatever the number of slices).
FEW_PATIENTS = 30
#: The multiplicity family of every table and of the verdict.
MULTIPLICITY_FAMILY = "all pairs of the families' selected models"
DELONG_NOTE = (
    "DeLong's test treats the slices as independent; slices of one patient are correlated, so its p-values "
    "are far too small (bench/bench_stats_validity.py measures its type-I error). It is shown as a "
    "secondary column only and does not enter the verdict, which uses the clustered (Obuchowski) test."
)


def significance_rule(alpha: float) -> str:
    """The pre-specified significance rule in words (stored in the comparison and shown in the report)."""
    return (
        "A difference in AUC between two selected models is called statistically significant when the "
        "Holm-adjusted p-value of the clustered paired test (Obuchowski 1997: patients as clusters, t with "
        f"patients - 1 degrees of freedom) is below {alpha:g}; the Holm family is {MULTIPLICITY_FAMILY}. "
        "DeLong and the patient bootstrap are secondary and do not enter the rule."
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
    scan_boot: PatientBootstrap,
    sensitivities: Sequence[float],
    specificities: Sequence[float],
    scan_k: int,
    level: float,
) -> dict[str, Any]:
    th = choose_thresholds(val["label"], val["score"], sensitivities)
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    pid = test["patient_id"].to_numpy()
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
    scan: dict[str, Any] = {"k": scan_k, "interval": "clustered (Obuchowski), scans within patients"}
    for how in AGGREGATIONS:
        agg = aggregate_scans(test, how, k=scan_k)
        scan.update(n_scans=len(agg), n_positive=int(agg["label"].sum()))
        if agg["label"].nunique() < 2:
            scan["note"] = "scan-level AUC undefined: all test scans have the same label"
        else:
            scan[how] = clustered_auc_ci(agg["label"], agg["score"], agg["patient_id"], level).as_dict()
    cal = calibration(y, s)
    test_stats = {k: v.as_dict() for k, v in metrics.items()}
    test_stats["auc_bootstrap"] = test_stats.pop("auc")
    test_stats["auc"] = clustered_auc_ci(y, s, pid, level).as_dict()
    return {
        "trial_id": str(test["trial_id"].iloc[0]),
        "thresholds": th.as_dict(),
        "val": {"auc": auc(val["label"], val["score"]), "n_slices": len(val)},
        "test": test_stats | {"confusion": point.as_dict()},
        "operating_points": ops,
        "scan_level": scan,
        "calibration": {
            **brier_summary(y, s),
            "ece": cal.ece,
            **recalibration(y, s, boot),
            "bins": cal.bins.to_dict(orient="records"),
        },
        "exam": exam_endpoint(
            val,
            test,
            scan_boot,
            sensitivities=sensitivities,
            specificities=specificities,
            k=scan_k,
            level=level,
        ),
    }


def _pairs(
    frames: dict[str, pd.DataFrame], boot: PatientBootstrap, alpha: float, level: float
) -> list[dict[str, Any]]:
    """Every pair of winners: the clustered test (primary), DeLong and the bootstrap (secondary)."""
    fams = list(frames)
    first = next(iter(frames.values())) if fams else None
    rows = []
    for a, b in itertools.combinations(fams, 2):
        y, pid = first["label"].to_numpy(), first["patient_id"].to_numpy()
        sa, sb = frames[a]["score"].to_numpy(), frames[b]["score"].to_numpy()
        ct = clustered_test(y, sa, sb, pid, level)
        ci, p_boot = boot.auc_difference(y, sa, sb)
        try:
            dl = delong_test(y, sa, sb)
            z, p = dl.z, dl.p
        except ValueError:  # fewer than 2 slices of a class: DeLong undefined
            z = p = float("nan")
        floor = boot.p_floor(ci.n_valid or 0, ci.n_distinct or 0)
        rows.append(
            {
                "a": a,
                "b": b,
                "auc_a": ct.auc_a,
                "auc_b": ct.auc_b,
                "diff": ct.diff.estimate,
                "diff_ci": ct.diff.as_dict(),
                "se": ct.se,
                "t": ct.t,
                "df": ct.df,
                "p": ct.p,
                "p_floor": ct.p_floor,
                "p_at_floor": ct.at_floor,
                "delong_z": z,
                "delong_p": p,
                "boot_diff": ci.as_dict(),
                "boot_p": p_boot,
                "boot_p_floor": floor,
                "boot_p_at_floor": bool(np.isfinite(p_boot) and p_boot <= floor),
            }
        )
    _adjust(rows, alpha)
    return rows


def _holm_family(pvalues: list[float]) -> np.ndarray:
    """Holm over the whole family: a non-estimable comparison counts as p = 1 (it stays in the family)."""
    p = np.array([v if np.isfinite(v) else 1.0 for v in pvalues], dtype=np.float64)
    adj = holm(p) if p.size else p
    return np.where(np.isfinite(pvalues), adj, np.nan) if p.size else adj


def _adjust(rows: list[dict[str, Any]], alpha: float) -> None:
    for key in ("p", "delong_p", "boot_p"):
        for r, v in zip(rows, _holm_family([r[key] for r in rows])):
            r[f"{key}_holm"] = float(v)
    for r in rows:
        r["significant"] = bool(np.isfinite(r["p_holm"]) and r["p_holm"] < alpha)


def _flip(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "estimate": -d["estimate"], "low": -d["high"], "high": -d["low"]}


def _vs_reference(pairs: list[dict[str, Any]], ref: str) -> list[dict[str, Any]]:
    """The pairs holding ``ref``, oriented as reference minus other, with the SAME adjusted p-values."""
    rows = []
    for p in pairs:
        if ref not in (p["a"], p["b"]):
            continue
        r = dict(p)
        if p["b"] == ref:
            r.update(
                a=ref,
                b=p["a"],
                auc_a=p["auc_b"],
                auc_b=p["auc_a"],
                diff=-p["diff"],
                t=-p["t"],
                delong_z=-p["delong_z"],
                diff_ci=_flip(p["diff_ci"]),
                boot_diff=_flip(p["boot_diff"]),
            )
        rows.append(r)
    return rows


def fmt_p(v: float, at_floor: bool = False, floor: float | None = None) -> str:
    """``= 0.0123``; ``= 0.25 (floor)`` when floored at the smallest value the data can support."""
    if not np.isfinite(v):
        return "not estimable"
    if at_floor and floor is not None:
        return f"= {floor:.2g} (floor: the smallest p-value these patients can support)"
    return f"= {v:.3g}"


def verdict(doc: dict[str, Any]) -> list[str]:
    """Plain-words statements about the comparison, every one drawn from the rows of the pairs table."""
    fams, ref = doc["families"], doc.get("reference")
    if not fams or ref is None:
        return ["No family produced a usable model, so nothing was compared on the test set."]
    lvl = int(round(doc["level"] * 100))
    r = fams[ref]
    a = CI.from_dict(r["test"]["auc"])
    head = (
        f"The model chosen on validation data is {ref} (validation AUC {r['val']['auc']:.3f}); on the "
        "held-out test slices"
    )
    if not np.isfinite(a.estimate):
        out = [f"{head} its AUC is undefined ({a.note or 'one class only'})."]
    elif a.estimable:
        out = [f"{head} its AUC is {a.fmt(3)} ({lvl}% clustered interval, patients as clusters)."]
        if a.low <= 0.5:
            out.append(
                f"Its interval includes 0.5: on this test set {ref} is not distinguishable from chance."
            )
    else:
        out = [
            f"{head} its AUC is {a.estimate:.3f}, but its {lvl}% clustered interval is not estimable "
            f"({a.note or 'too few patients'}): the figure carries no measure of its uncertainty."
        ]
    out += exam_words(ref, r.get("exam"))
    pairs = doc["pairs"]
    m = len(pairs)
    fam_words = f"Holm-adjusted over the {m} comparison(s) of {MULTIPLICITY_FAMILY}"
    for row in doc["vs_reference"]:
        d = CI.from_dict(row["diff_ci"])
        words = "a statistically significant" if row["significant"] else "NOT a statistically significant"
        p_raw = fmt_p(row["p"], row["p_at_floor"], row["p_floor"])
        out.append(
            f"{ref} vs {row['b']}: AUC difference {d.fmt(3)}; clustered p {p_raw} ({fam_words}: p "
            f"{fmt_p(row['p_holm'])}): {words} difference."
        )
    others = [p for p in pairs if p["significant"] and ref not in (p["a"], p["b"])]
    for p in others:
        out.append(
            f"Between two other families, {p['a']} vs {p['b']} is a statistically significant difference "
            f"(AUC difference {CI.from_dict(p['diff_ci']).fmt(3)}, {fam_words}: p {fmt_p(p['p_holm'])})."
        )
    if pairs and not any(p["significant"] for p in pairs):
        out.append(
            f"None of the {m} pairwise differences between the families' selected models is statistically "
            "significant on this test set; the ranking may not hold on new patients."
        )
    n_pat = doc.get("test", {}).get("n_patients", 0)
    if n_pat < FEW_PATIENTS:
        out.append(
            f"Only {n_pat} patient(s) in the test set (fewer than {FEW_PATIENTS}): patients are the independent "
            "units, so every interval and p-value above rests on very few of them; treat them as indicative "
            "only. " + _resample_words(doc)
        )
    out.append(doc.get("significance_rule") or significance_rule(1.0 - doc["level"]))
    out.append(DELONG_NOTE)
    return out


def exam_words(fam: str, exam: dict[str, Any] | None) -> list[str]:
    """The exam-level endpoint of ``fam`` in words (nothing for a format-2 document without it)."""
    if not exam:
        return []
    if "test" not in exam:
        return [f"Exam level (primary endpoint) for {fam}: {exam.get('note', 'not estimable')}."]
    agg, y, n = exam["aggregation"], exam["test"]["youden"], exam["counts"]["test"]
    how = f"top-{agg['k']} mean" if agg["how"] == "topk" else agg["how"]
    names = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV"}
    rates = ", ".join(f"{label} {CI.from_dict(y[k]).fmt(2)}" for k, label in names.items())
    return [
        f"Exam level (primary endpoint): {fam} scores a scan by the {how} of its slice scores (chosen on "
        f"validation scans) and calls it positive at {y['threshold']:.3g} (Youden's J on validation scans); on "
        f"the {n['n_scans']} test scans ({n['n_positive_scans']} with DVT, from {n['n_patients']} patients) it "
        f"has {rates} (TP {y['tp']}, FP {y['fp']}, FN {y['fn']}, TN {y['tn']})."
    ]


def _resample_words(doc: dict[str, Any]) -> str:
    b = doc.get("bootstrap") or {}
    if not b:
        return ""
    return (
        f"The patient bootstrap drew {b['n_resamples']} resamples of which only {b['n_distinct']} are distinct "
        f"({b['n_possible']} possible)."
    )


def compare(
    val: pd.DataFrame,
    test: pd.DataFrame,
    *,
    reference: str | None = None,
    sensitivities: Sequence[float] = (0.8, 0.9),
    specificities: Sequence[float] = (0.9,),
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    scan_k: int = 3,
) -> dict[str, Any]:
    """The full comparison document for the winners' prediction tables (see the module docstring).

    Args:
        val, test: prediction tables (:data:`dvt_search.selection.evaluate.PREDICTION_COLUMNS`).
        reference: the overall winner's family (its comparisons are listed first in the verdict).
        sensitivities, specificities: fixed operating points, chosen on validation (slice- and scan-level;
            fixed specificity at scan level only).
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
        "specificities": list(specificities),
        "exam_rule": EXAM_RULE,
        "exam_interval": EXAM_INTERVAL,
        "calibration_rule": (
            "Brier score beside its no-skill reference prevalence x (1 - prevalence) and the scaled Brier "
            "score 1 - Brier / reference; calibration slope and intercept by logistic recalibration on "
            "logit(score) (intercept with the slope fixed at 1), percentile intervals of the patient bootstrap"
        ),
        "decision_curve_rule": (
            "net benefit TP/n - FP/n x pt / (1 - pt) of calling a scan positive when its score >= pt, against "
            "treat all (prevalence - (1 - prevalence) x pt / (1 - pt)) and treat none (0), on the test scans"
        ),
        "significance_rule": significance_rule(alpha),
        "auc_interval": "clustered (Obuchowski 1997), logit scale, t with patients - 1 degrees of freedom",
        "delong_note": DELONG_NOTE,
        "few_patients": FEW_PATIENTS,
        "reference": reference if reference in frames else None,
        "families": {},
        "pairs": [],
        "vs_reference": [],
    }
    if not frames:
        doc["multiplicity"] = {"method": "holm", "family": MULTIPLICITY_FAMILY, "m": 0}
        doc["verdict"] = verdict(doc)
        return doc
    first = next(iter(frames.values()))
    doc["test"] = {
        "n_slices": len(first),
        "n_patients": int(first["patient_id"].nunique()),
        "n_positive_patients": int(first.loc[first["label"] == 1, "patient_id"].nunique()),
        "n_scans": int(first["scan_id"].nunique()),
        "n_positive": int(first["label"].sum()),
    }
    fv = val[val["family"] == next(iter(frames))]
    doc["counts"] = {"val": partition_counts(fv), "test": partition_counts(first)}
    boot = PatientBootstrap(
        first["patient_id"], n_resamples=n_resamples, seed=seed, level=level, strata=first["label"]
    )
    scan_boot = scan_bootstrap(first, n_resamples, seed, level, k=scan_k)
    doc["bootstrap"] = boot.describe()
    for fam, t in frames.items():
        v = val[val["family"] == fam]
        doc["families"][fam] = _family_stats(
            v, t, boot, scan_boot, sensitivities, specificities, scan_k, level
        )
    doc["pairs"] = _pairs(frames, boot, alpha, level)
    doc["multiplicity"] = {"method": "holm", "family": MULTIPLICITY_FAMILY, "m": len(doc["pairs"])}
    if doc["reference"] is not None:
        doc["vs_reference"] = _vs_reference(doc["pairs"], doc["reference"])
    doc["verdict"] = verdict(doc)
    return doc

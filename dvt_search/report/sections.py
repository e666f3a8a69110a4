"""The sections of the report as document blocks (:mod:`.render`), in reading order."""

from __future__ import annotations

import pandas as pd

from dvt_search.report.context import ReportContext, ci, pval
from dvt_search.report.figures import (
    calibration_figure,
    confusion_figure,
    roc_figure,
)
from dvt_search.report.render import Block, Bullets, Card, Figure, FigureGrid, Header, Heading, Para, Table
from dvt_search.selection.test_log import summary as test_log_summary
from dvt_search.stats.bootstrap import CI
from dvt_search.stats.compare import DELONG_NOTE, FEW_PATIENTS, MULTIPLICITY_FAMILY, significance_rule

#: Table 1 of the paper (test AUC, precision, recall) per family.
PAPER_TABLE1: dict[str, list[tuple[str, float, float, float]]] = {
    "sift_bow_svm": [("SIFT baseline", 0.55, 0.56, 0.72)],
    "vgg16": [("VGG-16", 0.50, 0.54, 0.40)],
    "densenet161": [("no dropout", 0.51, 0.60, 0.60), ("dropout 0.2", 0.66, 0.63, 0.88)],
    "multitask_unet": [("Multitask ResNetUNet", 0.69, 0.68, 0.73)],
}
PAPER_PATCH_VEIN_AUC = 0.9
MULTITASK = "multitask_unet"
PATCH = "patch_resnet50"


def paper_numbers(fam: str) -> str:
    rows = PAPER_TABLE1.get(fam)
    if not rows:
        return f"vein-patch AUC {PAPER_PATCH_VEIN_AUC}" if fam == PATCH else "—"
    return "; ".join(
        f"{a:.2f} / {p:.2f} / {r:.2f}" + (f" ({n})" if len(rows) > 1 else "") for n, a, p, r in rows
    )


def few_test_patients(c: ReportContext) -> int | None:
    """The number of test patients when below :data:`FEW_PATIENTS` (None otherwise or when not tested)."""
    n = (c.comparison.get("test") or {}).get("n_patients")
    return n if n is not None and n < FEW_PATIENTS else None


def header(c: ReportContext) -> list[Block]:
    sel, comp = c.selection, c.comparison
    ov = sel.get("overall")
    few = few_test_patients(c)
    cards = []
    if ov:
        cards.append(Card("selected model", ov["family"], f"trial {ov['trial_id']}"))
        cards.append(Card(f"validation {c.metric_label}", f"{ov['value']:.3f}", "used for selection"))
        st = c.stats(ov["family"])
        if st:
            a = CI.from_dict(st["test"]["auc"])
            detail = (
                f"{round(comp['level'] * 100)}% CI [{a.low:.3f}, {a.high:.3f}] (clustered)"
                if a.estimable
                else "interval not estimable"
            )
            if few is not None:
                detail += f" · only {few} test patients: indicative only"
            cards.append(Card("test AUC", f"{a.estimate:.3f}", detail))
            y = ((st.get("exam") or {}).get("test") or {}).get("youden")
            if y:
                npv = CI.from_dict(y["npv"])
                cards.append(
                    Card(
                        "exam-level NPV (primary)",
                        "n/a" if npv.estimate != npv.estimate else f"{npv.estimate:.2f}",
                        f"sensitivity {CI.from_dict(y['sensitivity']).fmt(2)} · specificity "
                        f"{CI.from_dict(y['specificity']).fmt(2)} at the validation scan threshold",
                    )
                )
    else:
        cards.append(Card("selected model", "none", "no family produced a usable trial"))
    cards.append(Card("trials searched", str(sel["n_trials"]), f"{len(c.families)} families"))
    if c.test_log:
        log = test_log_summary(c.test_log)
        detail = (
            f"touched {log['n_distinct']} times with different settings or winners: see the log"
            if log["touched_more_than_once"]
            else "one evaluation" + (" (repeats reproduced it)" if log["n_evaluations"] > 1 else "")
        )
        cards.append(Card("test-set evaluations", str(log["n_evaluations"]), detail))
    if comp.get("test"):
        t = comp["test"]
        detail = f"{t['n_scans']} scans, {t['n_patients']} patients"
        if few is not None:
            detail += f" (fewer than {FEW_PATIENTS}: too few for firm conclusions)"
        cards.append(Card("test set", f"{t['n_slices']} slices", detail))
    return [
        Header(
            f"DVT detection — run {c.run_name}",
            f"Model selection and comparison report · {sel['created']}",
            cards,
        )
    ]


def verdict(c: ReportContext) -> list[Block]:
    lines = c.comparison.get("verdict") or [
        "The test set was not evaluated (the run was selected with --no-test)."
    ]
    vs = c.comparison.get("vs_reference", [])
    pairs = c.comparison.get("pairs", [])
    if not vs:
        head, kind = (
            "Only one model was evaluated on the test set: there is no comparison to judge.",
            "verdict-warn",
        )
    elif any(r.get("significant") for r in vs):
        head, kind = (
            "At least one difference to the selected model is statistically significant.",
            "verdict-ok",
        )
    elif any(p.get("significant") for p in pairs):
        head, kind = (
            "No difference to the selected model is statistically significant; a difference between two "
            "other families is (see the pairwise table).",
            "verdict-warn",
        )
    else:
        head, kind = (
            "No difference between the families' selected models is statistically significant.",
            "verdict-warn",
        )
    few = few_test_patients(c)
    if few is not None:
        head += f" Only {few} test patients: every figure below is indicative only."
        kind = "verdict-warn"
    return [Heading("Verdict", anchor="verdict"), Para(head, kind), Bullets(lines, "verdict")]


def table1(c: ReportContext) -> list[Block]:
    rows, hl = [], None
    ov = c.selection.get("overall")
    for i, fam in enumerate(c.families):
        fc = c.selection["families"][fam]
        if ov and ov["family"] == fam:
            hl = i
        st = c.stats(fam)
        if fc["winner"] is None or st is None:
            val = f"{fc['winner']['value']:.3f}" if fc["winner"] else "—"
            rows.append(
                [
                    fam,
                    str(fc["n_trials"]),
                    val,
                    fc["note"] or "not evaluated",
                    "",
                    "",
                    "",
                    "",
                    paper_numbers(fam),
                ]
            )
            continue
        t = st["test"]
        rows.append(
            [
                fam,
                str(fc["n_trials"]),
                f"{fc['winner']['value']:.3f}",
                ci(t["auc"]),
                ci(t["precision"]),
                ci(t["recall"]),
                ci(t["specificity"]),
                f"{st['thresholds']['youden']:.3g}",
                paper_numbers(fam),
            ]
        )
    lvl = round(c.comparison.get("level", 0.95) * 100)
    comp = c.comparison
    boot = comp.get("bootstrap") or {}
    resamples = (
        f"{boot['n_resamples']} resamples stratified by patient DVT status, {boot['n_distinct']} distinct"
        if boot
        else "patient-level bootstrap"
    )
    caption = (
        f"Test metrics of each family's model selected on validation data. AUC with its {lvl}% clustered "
        "interval (Obuchowski 1997, patients as clusters, logit scale, t with patients − 1 degrees of freedom); "
        f"precision, recall and specificity at the threshold chosen on validation (Youden's J) with {lvl}% "
        f"percentile intervals of the patient bootstrap ({resamples}). 'Not estimable' marks an interval the "
        "data cannot support (too few patients, or a perfect or zero-width result). Paper: Table 1 of the "
        "paper, on its own data and split (AUC / precision / recall)."
    )
    headers = [
        "family",
        "trials",
        f"val {c.metric_label}",
        "test AUC",
        "precision",
        "recall",
        "specificity",
        "threshold",
        "paper",
    ]
    return [
        Heading("Table 1 reproduced: classification per family", anchor="table1"),
        Table(headers, rows, caption=caption, highlight=hl),
        *[Para(n, "note") for n in undefined_resamples(c)],
    ]


def undefined_resamples(c: ReportContext) -> list[str]:
    """One line per family listing the bootstrap intervals that had resamples where they were undefined."""
    out = []
    for fam in c.families:
        st = c.stats(fam)
        if not st:
            continue
        parts = [
            f"{k} {d['n_invalid']}"
            for k, d in st["test"].items()
            if isinstance(d, dict) and d.get("n_invalid")
        ]
        if parts:
            n = c.comparison["n_resamples"]
            out.append(
                f"{fam}: resamples (of {n}) in which a statistic was undefined and which its interval "
                f"therefore omits: {', '.join(parts)}."
            )
    return out


def comparisons(c: ReportContext) -> list[Block]:
    comp = c.comparison
    pairs = comp.get("pairs", [])
    if not pairs:
        return []
    alpha = 1 - comp["level"]
    rows = [
        [
            f"{p['a']} − {p['b']}",
            ci(p["diff_ci"], 3),
            pval(p["p"], p["p_floor"], p["p_at_floor"]),
            pval(p["p_holm"]),
            "yes" if p["significant"] else "no",
            f"{pval(p['delong_p'], p['p_floor'], p['delong_p'] <= p['p_floor'])} "
            f"(Holm {pval(p['delong_p_holm'], p['p_floor'], p['delong_p_holm'] <= p['p_floor'])})",
            f"{ci(p['boot_diff'], 3)}; p {pval(p['boot_p'], p['boot_p_floor'], p['boot_p_at_floor'])}",
        ]
        for p in pairs
    ]
    m = (comp.get("multiplicity") or {}).get("m", len(pairs))
    caption = (
        f"All pairs of selected models on the same test slices. Primary: the clustered paired test "
        f"(Obuchowski 1997, patients as clusters) with its {round(comp['level'] * 100)}% interval of the AUC "
        f"difference; Holm adjustment over ONE family: {MULTIPLICITY_FAMILY} (m = {m}), the same family as "
        f"the verdict. Significant = Holm-adjusted clustered p < {alpha:.2f}; the last two columns are "
        "secondary and do not enter it: DeLong (slices treated as independent) and the paired patient "
        "bootstrap (difference [interval]; p). '(floor)' marks a p-value raised to the smallest value the data "
        "can support (clustered and DeLong: 2^(1 − patients); bootstrap: the distinct resamples)."
    )
    return [
        Heading("Pairwise AUC comparisons", anchor="pairs"),
        Table(
            [
                "pair",
                "AUC difference [CI], clustered",
                "clustered p",
                "Holm",
                "significant",
                "DeLong p (secondary)",
                "bootstrap (secondary)",
            ],
            rows,
            caption=caption,
        ),
        Para(comp.get("significance_rule") or significance_rule(alpha), "note"),
        Para(DELONG_NOTE, "note"),
    ]


def performance(c: ReportContext) -> list[Block]:
    fams = [f for f in c.families if c.stats(f)]
    if not fams:
        return []
    aucs = {f: ci(c.stats(f)["test"]["auc"]) for f in fams}
    bins = {f: pd.DataFrame(c.stats(f)["calibration"]["bins"]) for f in fams}
    figs = [
        Figure(
            "roc",
            roc_figure(c.test, aucs, c.palette),
            "ROC curves of all selected models on the test slices (paper Fig. 5 right shows the patch model's).",
        ),
        Figure("calibration", calibration_figure(bins, c.palette), "Reliability curves on the test slices."),
        Figure(
            "confusion",
            confusion_figure({f: c.stats(f)["test"]["confusion"] for f in fams}),
            "Confusion matrices at the validation-chosen thresholds (paper Fig. 2 layout).",
            wide=len(fams) > 1,
        ),
    ]
    ops, scan = [], []
    for f in fams:
        st = c.stats(f)
        for op in st["operating_points"]:
            t = op["test"]
            ops.append(
                [
                    f,
                    f"{op['target_sensitivity']:.2f}",
                    f"{op['threshold']:.3g}",
                    ci(t["recall"]),
                    ci(t["specificity"]),
                    ci(t["precision"]),
                ]
            )
        sl = st["scan_level"]
        scan.append(
            [
                f,
                ci(sl.get("max")),
                ci(sl.get("mean")),
                ci(sl.get("topk")),
                str(sl.get("n_scans", "")),
                f"{st['calibration']['brier']:.3f}",
                f"{st['calibration']['ece']:.3f}",
            ]
        )
    first = c.stats(fams[0])["scan_level"]
    return [
        Heading("Curves, confusion matrices and calibration", anchor="figures"),
        FigureGrid(figs),
        Heading("Operating points at fixed sensitivity", 3),
        Table(
            [
                "family",
                "val sensitivity",
                "threshold",
                "test sensitivity",
                "test specificity",
                "test precision",
            ],
            ops,
            caption="Thresholds reaching the target sensitivity on VALIDATION predictions, applied to test.",
        ),
        Heading("Scan-level AUC and calibration", 3),
        Table(
            [
                "family",
                "scan AUC (max)",
                "scan AUC (mean)",
                f"scan AUC (top-{first['k']} mean)",
                "scans",
                "Brier",
                "ECE",
            ],
            scan,
            caption="A scan is positive when any of its slices is; its score aggregates its slice "
            "scores. Scan-level AUC intervals are clustered (Obuchowski; scans within patients). "
            + first.get("note", ""),
        ),
    ]

"""Report sections about errors, the search itself, the data and the methods (see :mod:`.report`)."""

from __future__ import annotations

from dvt_search.report.context import ReportContext, ci, hours
from dvt_search.report.figures import (
    cam_figure,
    decision_curve_figure,
    history_figure,
    importance_figure,
    learning_curves_figure,
    multitask_losses_figure,
)
from dvt_search.report.render import Block, Bullets, Figure, FigureGrid, Heading, Para, Table
from dvt_search.report.sections import MULTITASK, PAPER_PATCH_VEIN_AUC, PATCH
from dvt_search.stats.compare import DELONG_NOTE, FEW_PATIENTS, MULTIPLICITY_FAMILY, significance_rule


def _brier_words(fam: str, level: str, cal: dict) -> str:
    b, ref = cal["brier"], cal["brier_reference"]
    if round(b, 3) == round(ref, 3):
        rel = "about equal to"
    else:
        rel = "below (better than)" if b < ref else "above (worse than)"
    return (
        f"{fam} ({level}): Brier {b:.3f}, {rel} the no-skill reference {ref:.3f} of always predicting the "
        f"prevalence {cal['prevalence']:.3f}."
    )


def _useful_words(fam: str, dc: dict) -> str:
    ranges = dc.get("useful") or []
    if not ranges:
        return (
            f"{fam}: on the test scans its net benefit is nowhere above both treat-all and treat-none over "
            f"threshold probabilities {dc['thresholds'][0]:.2f}–{dc['thresholds'][-1]:.2f}."
        )
    spans = ", ".join(f"{a:.2f}" if a == b else f"{a:.2f}–{b:.2f}" for a, b in ranges)
    return (
        f"{fam}: net benefit above both treat-all and treat-none at threshold probabilities {spans} "
        "(test scans)."
    )


def usefulness(c: ReportContext) -> list[Block]:
    """Calibration against its no-skill reference, recalibration slope / intercept and the decision curve."""
    fams = [f for f in c.families if c.stats(f)]
    if not fams or "brier_reference" not in c.stats(fams[0])["calibration"]:
        return []
    rows, words, curves = [], [], {}
    for f in fams:
        st = c.stats(f)
        levels = [("slices", st["calibration"])]
        exam = st.get("exam") or {}
        if exam.get("calibration"):
            levels.append(("scans", exam["calibration"]))
        for level, cal in levels:
            rows.append(
                [
                    f,
                    level,
                    f"{cal['brier']:.3f}",
                    f"{cal['brier_reference']:.3f}",
                    "n/a" if cal["scaled_brier"] != cal["scaled_brier"] else f"{cal['scaled_brier']:.2f}",
                    ci(cal["slope"]),
                    ci(cal["intercept"]),
                ]
            )
            words.append(_brier_words(f, level, cal))
        if exam.get("decision_curve"):
            curves[f] = exam["decision_curve"]
            words.append(_useful_words(f, exam["decision_curve"]))
    lvl = round(c.comparison.get("level", 0.95) * 100)
    blocks: list[Block] = [
        Heading("Calibration and clinical usefulness", anchor="usefulness"),
        Table(
            [
                "family",
                "unit",
                "Brier",
                "no-skill reference",
                "scaled Brier",
                "calibration slope",
                "calibration intercept",
            ],
            rows,
            caption=f"{c.comparison.get('calibration_rule', '')}. Slope 1 and intercept 0 are ideal; a slope "
            f"below 1 means over-confident (too extreme) scores. {lvl}% intervals; scans are scored by the "
            "aggregation chosen on validation (exam-level section).",
        ),
        Bullets(words),
    ]
    if curves:
        blocks.append(
            FigureGrid(
                [
                    Figure(
                        "decision_curve",
                        decision_curve_figure(curves, c.palette),
                        f"Decision curve on the test scans: {c.comparison.get('decision_curve_rule', '')}.",
                    )
                ]
            )
        )
    return blocks


def error_analysis(c: ReportContext) -> list[Block]:
    blocks: list[Block] = [Heading("Error analysis", anchor="errors")]
    fig = cam_figure([case for fam in c.families for case in c.cases.get(fam, [])])
    if fig is not None:
        blocks.append(
            FigureGrid(
                [
                    Figure(
                        "cam",
                        fig,
                        "Grad-CAM of the most confident mis-classified test slices "
                        "(FP = false positive, FN = false negative; paper Fig. 5 left).",
                        wide=True,
                    )
                ]
            )
        )
    blocks += [Para(n, "note") for n in c.cam_notes]
    patch = c.winner(PATCH)
    if patch is None:
        blocks.append(
            Para(
                "No patch vein-detection model was selected in this run, so the paper's patch AUC "
                f"({PAPER_PATCH_VEIN_AUC}) is not reproduced here.",
                "note",
            )
        )
        return blocks
    lb = c.leaderboard.set_index("trial_id")
    val = (
        lb.loc[patch["trial_id"], "best_val_patch_auc"]
        if "best_val_patch_auc" in lb.columns
        else float("nan")
    )
    test = c.selection.get("test", {}).get("extras", {}).get(PATCH, {}).get("test_patch_auc", float("nan"))
    fmt = lambda v: "n/a" if v != v else f"{v:.3f}"  # noqa: E731
    blocks.append(
        Table(
            ["", "validation", "test", "paper (test)"],
            [["patch vein-detection AUC", fmt(val), fmt(test), f"{PAPER_PATCH_VEIN_AUC}"]],
            caption="Vein presence per 32×32 block, all blocks of all slices pooled (paper section 5.4).",
        )
    )
    return blocks


def multitask(c: ReportContext) -> list[Block]:
    fig = multitask_losses_figure(c.curves(MULTITASK)) if MULTITASK in c.families else None
    if fig is None:
        return []
    return [
        Heading("Multitask loss components", anchor="multitask"),
        FigureGrid(
            [
                Figure(
                    "multitask_losses",
                    fig,
                    "Training loss parts of the multitask trials per epoch "
                    "(paper Fig. 3); the selected trial bold, others faint.",
                )
            ]
        ),
    ]


def search(c: ReportContext) -> list[Block]:
    lb = c.leaderboard
    rows = []
    for fam in c.families:
        fc = c.selection["families"][fam]
        g = lb[lb["family"] == fam]
        rows.append(
            [
                fam,
                str(fc["n_trials"]),
                str(fc["n_completed"]),
                str(fc["n_stopped"]),
                str(fc["n_failed"]),
                str(fc["n_unfinished"]),
                hours(g["cpu_s"].sum()),
                hours(g["gpu_s"].sum()),
                hours(g["wall_s"].sum()),
            ]
        )
    rows.append(
        [
            "total",
            str(c.selection["n_trials"]),
            "",
            "",
            "",
            "",
            hours(lb["cpu_s"].sum()),
            hours(lb["gpu_s"].sum()),
            hours(lb["wall_s"].sum()),
        ]
    )
    blocks: list[Block] = [
        Heading("The search", anchor="search"),
        Table(
            [
                "family",
                "trials",
                "completed",
                "stopped early",
                "failed",
                "unfinished",
                "CPU-hours",
                "GPU-hours",
                "wall-hours",
            ],
            rows,
            caption=f"Ties between trials were broken by: {c.selection['tie_break']}.",
        ),
    ]
    curves = {f: c.curves(f) for f in c.families}
    metric = c.selection["metric"]
    figs = [
        Figure(
            "learning_curves",
            learning_curves_figure(curves, c.palette, metric),
            f"Validation {metric} per epoch of every trial (selected trial bold).",
            wide=True,
        )
    ]
    notes = []
    for fam in c.families:
        h = c.history.get(fam)
        if h is None:
            continue
        fig = history_figure(h, c.palette[fam])
        if fig is not None:
            figs.append(Figure(f"history_{fam}", fig, f"{fam}: Optuna optimisation history."))
        fig = importance_figure(h, c.palette[fam])
        if fig is not None:
            figs.append(
                Figure(f"importance_{fam}", fig, f"{fam}: parameter importance by {h.importance_method}.")
            )
        else:
            notes.append(f"{fam}: {h.importance_method or 'no parameter importances'}.")
    if not c.history:
        notes.append("No Optuna journal in this run: optimisation history and importances are not shown.")
    return [*blocks, FigureGrid(figs), *[Para(n, "note") for n in notes]]


def data(c: ReportContext) -> list[Block]:
    d = c.selection.get("data") or {}
    parts = d.get("partitions") or []
    blocks: list[Block] = [Heading("Data and splits", anchor="data")]
    if not parts:
        return [*blocks, Para("Not recorded (the test set was not evaluated).", "note")]
    rows = [
        [
            p["partition"],
            str(p["patients"]),
            str(p["scans"]),
            str(p["slices"]),
            f"{100 * p['slice_fraction']:.1f}%",
            str(p["positives"]),
            f"{100 * p['pos_fraction']:.1f}%",
            str(p.get("positive_scans", "n/a")),
            str(p.get("positive_patients", "n/a")),
        ]
        for p in parts
    ]
    caption = (
        f"Patient-disjoint splits (hash {str(c.selection.get('splits_hash', ''))[:12]}…); anatomy: "
        f"{', '.join(d.get('anatomy', []))}; data source(s): {', '.join(d.get('sources', []))}."
    )
    blocks.append(
        Table(
            [
                "partition",
                "patients",
                "scans",
                "slices",
                "share of slices",
                "DVT slices",
                "DVT share",
                "DVT scans",
                "DVT patients",
            ],
            rows,
            caption=caption,
        )
    )
    if "phantom" in d.get("sources", []):
        blocks.append(
            Para(
                "These results come from synthetic phantom CT data: they demonstrate the pipeline, not "
                "clinical performance.",
                "verdict-warn",
            )
        )
    return blocks


def methods(c: ReportContext) -> list[Block]:
    comp = c.comparison
    items = [
        f"Selection used validation {c.selection['metric']} only ({c.selection['mode']}); the test partition was "
        "scored once, afterwards, for the selected models only.",
        "Failed, unfinished and checkpoint-less trials were never selected.",
    ]
    if comp.get("families"):
        lvl = round(comp["level"] * 100)
        boot = comp.get("bootstrap") or {}
        distinct = (
            f"; {boot['n_distinct']} of them distinct ({boot['n_possible']} possible), and resamples in which "
            "a statistic is undefined are counted (n_invalid in the comparison file, listed under Table 1), "
            "never dropped silently"
            if boot
            else ""
        )
        items += [
            f"AUC intervals: {lvl}% clustered intervals (Obuchowski 1997: patients as clusters, slices within a "
            "patient correlated; logit scale, t with patients − 1 degrees of freedom). An interval the data "
            "cannot support is printed as not estimable, never as a zero-width interval.",
            f"Other intervals: {lvl}% percentile intervals from {comp['n_resamples']} patient-level bootstrap "
            f"resamples (seed {comp['seed']}), stratified by patient DVT status; all slices of a drawn patient "
            f"enter a resample{distinct}. Bootstrap p-values are floored at the resolution the resamples allow.",
            comp.get("significance_rule") or significance_rule(1 - comp["level"]),
            f"Multiplicity: one Holm family, {MULTIPLICITY_FAMILY} "
            f"(m = {(comp.get('multiplicity') or {}).get('m', len(comp.get('pairs', [])))}), used by the "
            "verdict and the pairwise table alike. Clustered p-values are floored at 2^(1 − patients), the "
            "smallest p-value an exact patient-level sign-flip test could reach.",
            f"Fewer than {FEW_PATIENTS} test patients are flagged in the headline and the verdict: patients, not "
            "slices, are the independent units.",
            f"Thresholds: {comp['threshold_rule']}; fixed-sensitivity thresholds {comp['sensitivities']} are also "
            "chosen on validation.",
            DELONG_NOTE,
        ]
        if comp.get("exam_rule"):
            items += [
                f"Exam level (primary endpoint): {comp['exam_rule']}; fixed specificities "
                f"{comp.get('specificities')}. Intervals: {comp['exam_interval']}.",
                f"Calibration: {comp['calibration_rule']}. Decision curve: {comp['decision_curve_rule']}.",
            ]
    if c.test_log:
        items.append(
            "Test once, recorded: every evaluation of the test set is appended to the run's log (settings, "
            "models, a hash of the test predictions); a repeat with other settings or winners is refused "
            "without --force (see 'Test-set evaluations')."
        )
    return [Heading("Methods", anchor="methods"), Bullets(items)]

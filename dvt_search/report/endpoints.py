"""Report sections of the exam-level primary endpoint and of the test set's evaluations (see :mod:`.build`)."""

from __future__ import annotations

from dvt_search.report.context import ReportContext, ci
from dvt_search.report.render import Block, Heading, Para, Table
from dvt_search.report.sections import few_test_patients
from dvt_search.selection.test_log import summary as test_log_summary


def _agg_name(agg: dict) -> str:
    return f"top-{agg['k']} mean" if agg["how"] == "topk" else agg["how"]


def _rate_cells(op: dict) -> list[str]:
    return [ci(op["sensitivity"]), ci(op["specificity"]), ci(op["ppv"]), ci(op["npv"])]


def _counts_rows(c: ReportContext) -> list[list[str]]:
    """Patients / DVT patients / scans / DVT scans / slices / DVT slices per partition."""
    parts = (c.selection.get("data") or {}).get("partitions") or []
    if parts and "positive_scans" in parts[0]:
        return [
            [
                p["partition"],
                str(p["patients"]),
                str(p["positive_patients"]),
                str(p["scans"]),
                str(p["positive_scans"]),
                str(p["slices"]),
                str(p["positives"]),
            ]
            for p in parts
        ]
    counts = c.comparison.get("counts") or {}
    return [
        [
            name,
            str(n["n_patients"]),
            str(n["n_positive_patients"]),
            str(n["n_scans"]),
            str(n["n_positive_scans"]),
            str(n["n_slices"]),
            str(n["n_positive"]),
        ]
        for name, n in counts.items()
    ]


def exam(c: ReportContext) -> list[Block]:
    """The exam-level (scan) primary endpoint: operating point chosen on validation scans, NPV first."""
    fams = [f for f in c.families if c.stats(f)]
    if not fams:
        return []
    blocks: list[Block] = [
        Heading("Exam level: is there a DVT in this scan? (primary endpoint)", anchor="exam")
    ]
    if not any(c.stats(f).get("exam") for f in fams):
        return [
            *blocks,
            Para(
                "Not recorded: this comparison was made by an older version (no exam-level endpoint); run "
                "`dvt-search select` again to add it.",
                "note",
            ),
        ]
    main, fixed, notes = [], [], []
    hl = None
    ov = c.selection.get("overall")
    for f in fams:
        e = c.stats(f).get("exam") or {}
        if "test" not in e:
            notes.append(f"{f}: {e.get('note', 'exam-level endpoint not estimable')}.")
            continue
        if ov and ov["family"] == f:
            hl = len(main)
        agg, t = e["aggregation"], e["test"]
        vals = ", ".join(
            f"{_agg_name({'how': h, 'k': agg['k']})} {v:.3f}" for h, v in agg["val_auc"].items() if v == v
        )
        y = t["youden"]
        main.append(
            [
                f,
                f"{_agg_name(agg)} (val scan AUC {vals})",
                f"{y['threshold']:.3g}",
                ci(t["auc"]),
                *_rate_cells(y),
                f"{y['tp']} / {y['fp']} / {y['fn']} / {y['tn']}",
            ]
        )
        for kind, rows in (("sensitivity", t["at_sensitivity"]), ("specificity", t["at_specificity"])):
            for op in rows:
                fixed.append(
                    [f, f"val {kind} {op['target']:.2f}", f"{op['threshold']:.3g}", *_rate_cells(op)]
                )
    comp = c.comparison
    lvl = round(comp.get("level", 0.95) * 100)
    caption = (
        f"Pre-specified on validation scans only: {comp.get('exam_rule', '')}. Test intervals ({lvl}%): "
        f"{comp.get('exam_interval', '')}. NPV = TN / (TN + FN), the rule-out figure. The threshold in this "
        "table is the one exported with the model (threshold.json: scan_threshold) and used by predict."
    )
    rates = ["sensitivity", "specificity", "PPV", "NPV"]
    blocks += [
        Table(
            [
                "family",
                "scan score (chosen on validation)",
                "scan threshold",
                "test scan AUC",
                *rates,
                "TP / FP / FN / TN",
            ],
            main,
            caption=caption,
            highlight=hl,
        ),
        *[Para(n, "note") for n in notes],
    ]
    if fixed:
        blocks += [
            Heading("Exam-level operating points at fixed validation sensitivity or specificity", 3),
            Table(
                ["family", "chosen at", "threshold", *[f"test {r}" for r in rates]],
                fixed,
                caption="Thresholds reaching the target sensitivity (highest such threshold) or keeping the "
                "target specificity (lowest such threshold) on VALIDATION scans, applied unchanged to test "
                "scans: e.g. 'val specificity 0.90' reads as sensitivity at fixed specificity.",
            ),
        ]
    counts = _counts_rows(c)
    if counts:
        blocks.append(
            Table(
                ["partition", "patients", "DVT patients", "scans", "DVT scans", "slices", "DVT slices"],
                counts,
                caption="A scan is DVT-positive when any of its slices is; a patient when any of its scans is.",
            )
        )
    few = few_test_patients(c)
    if few is not None:
        blocks.append(
            Para(
                f"Only {few} test patients: exam-level rates rest on very few independent patients and their "
                "intervals on few distinct resamples; an interval printed as not estimable carries no "
                "measure of uncertainty.",
                "verdict-warn",
            )
        )
    return blocks


def test_evaluations(c: ReportContext) -> list[Block]:
    """Every recorded evaluation of the test set, with a warning when it was touched more than once."""
    log = c.test_log
    if not log:
        return []
    s = test_log_summary(log)
    rows = []
    for r in log:
        st = r.get("settings") or {}
        fams = ", ".join(f"{f} {t}" for f, t in sorted((r.get("families") or {}).items()))
        how = (
            "forced"
            if r.get("forced")
            else ("repeat of #" + str(r["reproduces"]) if r.get("reproduces") else "")
        )
        if r.get("reproduces") and not r.get("same_predictions", True):
            how += " (test predictions differ!)"
        if r.get("reconstructed"):
            how = (how + "; " if how else "") + "reconstructed from selection/comparison"
        rows.append(
            [
                str(r.get("n")),
                str(r.get("time")),
                f"{st.get('metric')} ({st.get('mode')})",
                str(st.get("sensitivities")),
                str(st.get("specificities")),
                str(st.get("n_resamples")),
                str(st.get("seed")),
                fams,
                str(r.get("predictions_sha256") or "")[:12],
                how,
            ]
        )
    if s["touched_more_than_once"]:
        para = Para(
            f"Warning: the test set was evaluated {s['n_evaluations']} times, {s['n_distinct']} of them with "
            f"different settings, winners or predictions ({s['n_forced']} forced). This report shows the last "
            "evaluation; any choice made after seeing an earlier test result makes the test figures optimistic.",
            "verdict-warn",
        )
    elif s["n_evaluations"] > 1:
        para = Para(
            f"The test set was evaluated {s['n_evaluations']} times, every repeat with the same settings and "
            "winners and identical test predictions: they reproduce the first evaluation, so it informed one "
            "choice only.",
            "note",
        )
    else:
        para = Para("The test set was evaluated once.", "note")
    return [
        Heading("Test-set evaluations", anchor="test-log"),
        para,
        Table(
            [
                "#",
                "time",
                "metric",
                "sensitivities",
                "specificities",
                "resamples",
                "seed",
                "models",
                "predictions sha256",
                "note",
            ],
            rows,
            caption="Every evaluation of the test set, from the run's append-only log. A repeat with identical "
            "settings and winners is allowed and reproduces the same numbers; anything else needs --force.",
        ),
    ]

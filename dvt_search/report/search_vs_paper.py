"""Report section: did the search beat the paper's hand-tuning? (``selection.json`` ``search_vs_paper``)."""

from __future__ import annotations

import math
from typing import Any

from dvt_search.report.context import ReportContext, ci, pval
from dvt_search.report.render import Block, Bullets, Heading, Para, Table

NO_PAPER = (
    "This run holds no paper-configuration trials (it was searched before they were enqueued, or with "
    "--no-paper-trial), so the search cannot be compared with the paper's hand-tuning."
)


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _gap(side: dict[str, Any] | None) -> str:
    if not side:
        return "n/a"
    g = side.get("val_minus_test")
    return f"{g:+.3f}" if isinstance(g, (int, float)) and math.isfinite(g) else "n/a"


def _row(fam: str, e: dict[str, Any]) -> list[str]:
    w, p, t = e.get("winner"), e.get("paper"), e.get("test")
    outside = ", ".join(e.get("paper_outside_space") or []) or "—"
    if e.get("status") == "the paper setting is the selected model":
        p = w
    return [
        fam,
        str(e.get("n_trials", "")),
        f"{w['trial_id']}" if w else "—",
        f"{e['paper_trial_id']}" if e.get("paper_trial_id") else "—",
        outside,
        f"{_num(w['val_auc']) if w else 'n/a'} / {_num(p['val_auc']) if p else 'n/a'}",
        ci(w.get("test_auc"), 3) if w else "n/a",
        ci(p.get("test_auc"), 3) if p else "n/a",
        ci(t["diff"], 3) if t else "n/a",
        f"{pval(t['p'], t['p_floor'], t['at_floor'])} (Holm {pval(e.get('p_holm', math.nan))})"
        if t
        else "n/a",
        ("yes" if e.get("significant") else "no") if t else "—",
        f"{_gap(w)} / {_gap(p)}",
        e.get("status", ""),
    ]


def _curse(fam: str, e: dict[str, Any]) -> str | None:
    w, p = e.get("winner"), e.get("paper")
    if not w or not w.get("test_auc"):
        return None
    line = (
        f"{fam}: the winner is the best of {e['n_trials']} trial(s) on validation (AUC {_num(w['val_auc'])}), "
        f"so that figure is biased upward (winner's curse); on test it scores {_num(w['test_auc']['estimate'])} "
        f"(validation − test {_gap(w)})."
    )
    if p and p.get("test_auc"):
        line += (
            f" The paper setting, fixed in advance, scores {_num(p['val_auc'])} on validation and "
            f"{_num(p['test_auc']['estimate'])} on test (gap {_gap(p)})."
        )
    if e.get("status") == "the paper setting is the selected model":
        line += " The search selected the paper setting itself: it found nothing better on validation."
    return line


def search_vs_paper(c: ReportContext) -> list[Block]:
    """Per family: searched winner vs the paper's setting on test, with the clustered paired test."""
    doc = c.selection.get("search_vs_paper")
    head = Heading("Search vs the paper's hand-tuning", anchor="search-vs-paper")
    lb = c.leaderboard
    has_paper = (
        len(lb) and "paper_config" in lb.columns and lb["paper_config"].fillna(False).astype(bool).any()
    )
    if not has_paper:
        return [head, Para(NO_PAPER, "note")]
    if not doc:
        return [
            head,
            Para(
                "The test set was not evaluated, so the searched winners were not compared with the paper "
                "settings (the paper-configuration trials are marked in the leaderboard).",
                "note",
            ),
        ]
    fams = doc["families"]
    rows = [_row(f, e) for f, e in fams.items()]
    lvl = round(doc.get("level", 0.95) * 100)
    m = doc["multiplicity"]["m"]
    caption = (
        "Per family: the trial selected on validation (winner) against the trial that ran the paper's "
        "configuration (paper setting; 'outside space' lists the paper values the searched space cannot "
        "represent: the trial ran them, Optuna was not told them). Test AUC with its "
        f"{lvl}% clustered interval; difference = winner − paper setting with the clustered paired test "
        f"(Obuchowski 1997, patients as clusters), Holm-adjusted over ONE family: {doc['multiplicity']['family']} "
        f"(m = {m}); significant = Holm-adjusted p < {1 - doc.get('level', 0.95):.2f}. The last column but one "
        "is validation − test AUC of each."
    )
    headers = [
        "family",
        "trials",
        "winner",
        "paper trial",
        "outside space",
        "val AUC winner / paper",
        "test AUC winner",
        "test AUC paper",
        "difference [CI]",
        "clustered p",
        "significant",
        "val − test winner / paper",
        "status",
    ]
    curse = [line for f, e in fams.items() if (line := _curse(f, e))]
    return [
        head,
        Para(doc["note"], "note"),
        Table(headers, rows, caption=caption),
        *([Heading("Winner's curse", 3), Bullets(curse)] if curse else []),
    ]

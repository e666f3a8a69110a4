"""The scan (exam-level) decision of an exported model, as ``threshold.json`` records it.

``scan_aggregation`` (max / mean / top-k mean of the slice probabilities) and ``scan_threshold`` were both
chosen on VALIDATION scans by ``dvt-search select`` (:mod:`dvt_search.stats.exam`). Exports from before
the exam-level endpoint hold neither: their scan decision stays the highest slice probability against the
slice ``threshold`` (reported as ``legacy``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from dvt_search.stats.measures import aggregate_scores


def read_scan_rule(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"how", "k", "threshold", "legacy"}`` of the export's ``threshold.json``."""
    f = Path(directory) / "threshold.json"
    return parse_scan_rule(json.loads(f.read_text()), f)


def parse_scan_rule(doc: dict[str, Any], f: str | os.PathLike[str]) -> dict[str, Any]:
    """The scan rule of a ``threshold.json`` document ``doc`` read from ``f`` (named in errors)."""
    agg, thr = doc.get("scan_aggregation"), doc.get("scan_threshold")
    if agg is None or thr is None:
        if doc.get("threshold") is None:
            raise ValueError(f"{f} holds no threshold (the run was selected without a test set)")
        return {"how": "max", "k": 1, "threshold": float(doc["threshold"]), "legacy": True}
    return {"how": str(agg["how"]), "k": int(agg.get("k", 3)), "threshold": float(thr), "legacy": False}


def scan_decision(directory: str | os.PathLike[str], probabilities: np.ndarray) -> dict[str, Any]:
    """The scan score, threshold and decision of one series' slice probabilities."""
    return decide(read_scan_rule(directory), probabilities)


def decide(rule: dict[str, Any], probabilities: np.ndarray) -> dict[str, Any]:
    """:func:`scan_decision` with a rule already read (:func:`read_scan_rule`)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    score = aggregate_scores(probs, rule["how"], rule["k"]) if probs.size else float("nan")
    what = {"max": "highest slice probability", "mean": "mean slice probability"}.get(
        rule["how"], f"mean of the {rule['k']} highest slice probabilities"
    )
    source = "slice threshold (export without a scan threshold)" if rule["legacy"] else "scan_threshold"
    return {
        "scan_score": score,
        "scan_threshold": rule["threshold"],
        "scan_aggregation": {"how": rule["how"], "k": rule["k"]},
        "scan_positive": bool(probs.size and score >= rule["threshold"]),
        "scan_rule": f"DVT suspected when the {what} >= the {source} chosen on validation",
    }

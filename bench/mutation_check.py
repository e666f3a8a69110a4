"""Deliberate-bug check: do the statistics and selection tests catch the seven bugs a reviewer named?

Each mutation below is one small, deliberate bug, written as an exact text replacement in one module. For
each, this script copies the package and the tests into a temporary folder, applies that one replacement,
runs the tests written to catch it (``tests/stats/test_guard_*.py``, ``tests/selection/test_guard_*.py``) and
reports **caught** (the tests failed) or **MISSED** (they passed). The unmutated copy is run first and must
pass; a mutation whose text is no longer in its module (the code moved) is reported **stale** so the list is
kept honest. The seven named bugs come first; ``4b`` is a second site of bug 4 (the bootstrap percentiles).

    python bench/mutation_check.py                 # all mutations, their targeted tests (~1-2 min)
    python bench/mutation_check.py --only 2,3      # some of them
    python bench/mutation_check.py --tests tests/stats tests/selection/test_selector.py
                                                   # does another test selection catch them?
    python bench/mutation_check.py --list          # print the mutations
    make mutants                                   # the same as the first line

Exit status 1 when a mutation was missed or stale (or the baseline failed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUARD = "tests/stats/test_guard_compare.py"
LEVEL = "tests/stats/test_guard_intervals.py"
TIE = "tests/selection/test_guard_tie_break.py"


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    id: str
    bug: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "1",
        "thresholds picked on test",
        "dvt_search/stats/compare.py",
        'th = choose_thresholds(val["label"], val["score"], sensitivities)',
        'th = choose_thresholds(test["label"], test["score"], sensitivities)',
        (f"{GUARD}::test_thresholds_come_from_validation_never_from_test",),
    ),
    Mutation(
        "2",
        "DeLong-only significance",
        "dvt_search/stats/compare.py",
        'r["significant"] = bool(np.isfinite(r["p_holm"]) and r["p_holm"] < alpha)',
        'r["significant"] = bool(np.isfinite(r["delong_p_holm"]) and r["delong_p_holm"] < alpha)',
        (f"{GUARD}::test_significance_is_the_clustered_test_not_delong",),
    ),
    Mutation(
        "3",
        "raw p-values ignoring Holm",
        "dvt_search/stats/compare.py",
        'r["significant"] = bool(np.isfinite(r["p_holm"]) and r["p_holm"] < alpha)',
        'r["significant"] = bool(np.isfinite(r["p"]) and r["p"] < alpha)',
        (f"{GUARD}::test_significance_uses_holm_adjusted_not_raw_p_values",),
    ),
    Mutation(
        "4",
        "an 80% interval labelled 95% (clustered AUC interval)",
        "dvt_search/stats/clustered.py",
        "q = float(sps.t.ppf(0.5 + level / 2.0, c.df))\n    half = q",
        "q = float(sps.t.ppf(0.9, c.df))\n    half = q",
        (f"{LEVEL}::test_clustered_auc_interval_has_the_stated_level",),
    ),
    Mutation(
        "5",
        "Table 1 metrics at 0.5 instead of Youden",
        "dvt_search/stats/compare.py",
        "metrics = boot.metrics(y, s, th.youden)\n    point = operating_point(y, s, th.youden)",
        "metrics = boot.metrics(y, s, 0.5)\n    point = operating_point(y, s, 0.5)",
        (f"{GUARD}::test_table1_metrics_are_at_the_validation_youden_threshold_not_at_half",),
    ),
    Mutation(
        "6",
        "tie-break order swapped (parameters before compute seconds)",
        "dvt_search/selection/selector.py",
        'rows.sort_values(["_key", "cost_s", "_n_params", "epochs", "trial_id"]',
        'rows.sort_values(["_key", "_n_params", "cost_s", "epochs", "trial_id"]',
        (TIE,),
    ),
    Mutation(
        "7",
        "slice-level instead of patient-level bootstrap",
        "dvt_search/stats/compare.py",
        'boot = PatientBootstrap(\n        first["patient_id"],',
        'boot = PatientBootstrap(\n        first["row"].astype(str),',
        (f"{GUARD}::test_bootstrap_resamples_patients_not_slices",),
    ),
    Mutation(
        "4b",
        "an 80% interval labelled 95% (bootstrap percentiles)",
        "dvt_search/stats/bootstrap.py",
        "a = (1.0 - self.level) / 2.0",
        "a = 0.1",
        (f"{LEVEL}::test_bootstrap_percentile_interval_has_the_stated_level",),
    ),
)

COPIED = ("dvt_search", "tests", "search_spaces", "pyproject.toml")


def _copy_tree(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dst / name)


def _pytest(root: Path, tests: list[str], timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - t0, "timed out"
    tail = (out.stdout + out.stderr).strip().splitlines()
    return out.returncode, time.perf_counter() - t0, tail[-1] if tail else ""


def _imports_copy(root: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", "import dvt_search; print(dvt_search.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip()).resolve().is_relative_to(root.resolve())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated mutation ids (default: all)")
    ap.add_argument("--tests", nargs="+", help="run these test paths for every mutation instead of its own")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run (default: 600)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(
                f"{m.id:>3}  {m.bug}\n     {m.path}: {m.old!r}\n  -> {m.new!r}\n     tests: {' '.join(m.tests)}"
            )
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="dvt-mutants-") as tmp:
        root = Path(tmp)
        _copy_tree(root)
        if not _imports_copy(root):
            print(
                "the copy's dvt_search is not the one imported (an installed package shadows it)",
                file=sys.stderr,
            )
            return 2
        all_tests = sorted({t for m in chosen for t in (args.tests or m.tests)})
        rc, secs, tail = _pytest(root, all_tests, args.timeout)
        print(f"baseline (no mutation): {'pass' if rc == 0 else 'FAIL'} in {secs:.0f} s ({tail})", flush=True)
        if rc != 0:
            return 1
        for m in chosen:
            target = root / m.path
            original = target.read_text()
            n = original.count(m.old)
            if n != 1:
                results.append({"id": m.id, "bug": m.bug, "result": "stale", "why": f"site found {n} times"})
                print(f"{m.id:>3} {m.bug}: STALE (site found {n} times in {m.path})", flush=True)
                continue
            target.write_text(original.replace(m.old, m.new))
            try:
                rc, secs, tail = _pytest(root, list(args.tests or m.tests), args.timeout)
            finally:
                target.write_text(original)
            result = "caught" if rc == 1 else ("MISSED" if rc == 0 else f"error (pytest exit {rc})")
            results.append(
                {"id": m.id, "bug": m.bug, "result": result, "seconds": round(secs, 1), "pytest": tail}
            )
            print(f"{m.id:>3} {m.bug}: {result} in {secs:.0f} s ({tail})", flush=True)
    print("\n| # | deliberate bug | result |\n|---|---|---|")
    for r in results:
        print(f"| {r['id']} | {r['bug']} | {r['result']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["result"] == "caught" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

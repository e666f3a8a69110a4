"""Validity of the comparison statistics on clustered slices: type-I error and interval coverage.

A simulation with a patient random effect (slices of one patient share it), under a TRUE NULL of equal AUC:
two models with identically distributed scores (``delta * label + patient effect + slice noise``, the
patient effects independent between the models) are scored on the same slices of ``n`` patients (half of
them DVT-positive, a run of positive slices each; defaults: patient sd 1.5, 30 slices of which 12 positive,
score shift 1.2). For 10 and 30 patients it prints

* the type-I error at nominal 5% of the report's significance rule
  (:func:`~dvt_search.stats.compare.significance_rule`: the clustered Obuchowski test, t with I-1 df;
  with two models Holm changes nothing), of DeLong alone
  (slices treated as independent), of the stratified patient bootstrap alone and of the former rule
  (Holm bootstrap AND DeLong, unstratified bootstrap);
* the coverage of the 95% AUC interval of the report (clustered, logit, t with I-1 df) against the true
  AUC (the large-sample limit of the pooled AUC, from one simulation of 20,000 patients), beside the former
  percentile bootstrap (unstratified) and the stratified percentile bootstrap; a non-estimable interval
  counts as a miss, and how many there were is printed.

Monte Carlo standard errors are printed beside each figure. Figures only, never asserted.

    PYTHONPATH=. python bench/bench_stats_validity.py --quick      # 800 replicates per size, B = 200 (~1.5 min)
    PYTHONPATH=. python bench/bench_stats_validity.py              # 4,000 per size, B = 2,000 (~50 min)

The bootstrap dominates the cost (~0.2 s per replicate at 10 patients, ~0.5 s at 30 with B = 2,000 on one
core); ``--resamples 100`` gives the clustered and DeLong figures with many replicates in minutes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from dvt_search.stats.bootstrap import PatientBootstrap
from dvt_search.stats.clustered import clustered_auc_ci, clustered_test
from dvt_search.stats.compare import significance_rule
from dvt_search.stats.measures import auc, delong_test


@dataclass(frozen=True)
class Design:
    """The simulated test set: score shift of a positive slice, patient-effect sd, slices per patient."""

    delta: float = 1.2
    patient_sd: float = 1.5  # sd of the patient random effect (independent between the two models)
    slices: int = 30
    pos_run: int = 12  # positive slices of a DVT-positive patient


def simulate(
    n_patients: int, rng: np.random.Generator, d: Design
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, two null-equivalent score vectors and the patient of each slice."""
    n_pos = n_patients // 2
    pid = np.repeat(np.arange(n_patients), d.slices)
    y = np.zeros(pid.size, dtype=int)
    for p in range(n_pos):
        start = p * d.slices + rng.integers(0, d.slices - d.pos_run + 1)
        y[start : start + d.pos_run] = 1
    scores = []
    for _ in range(2):
        u = rng.normal(0.0, d.patient_sd, n_patients)[pid]
        scores.append(d.delta * y + u + rng.normal(0.0, 1.0, pid.size))
    return y, scores[0], scores[1], pid.astype(str)


def true_auc(rng: np.random.Generator, d: Design) -> float:
    y, a, _, _ = simulate(20_000, rng, d)
    return auc(y, a)


def _rate(x: list[bool]) -> str:
    p = float(np.mean(x))
    return f"{100 * p:5.1f}% (MC se {100 * np.sqrt(p * (1 - p) / len(x)):.1f})"


def run(n_patients: int, reps: int, n_boot: int, theta: float, seed: int, d: Design) -> dict[str, list[bool]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[bool]] = {
        k: []
        for k in (
            "rule",
            "delong",
            "boot",
            "old_rule",
            "cov_clustered",
            "cov_percentile",
            "cov_stratified",
            "ne_clustered",
        )
    }
    for r in range(reps):
        y, a, b, pid = simulate(n_patients, rng, d)
        ct = clustered_test(y, a, b, pid)
        out["rule"].append(bool(ct.p < 0.05))
        dl = delong_test(y, a, b).p
        out["delong"].append(dl < 0.05)
        strat = PatientBootstrap(pid, n_boot, seed=r, strata=y)
        _, p_strat = strat.auc_difference(y, a, b)
        out["boot"].append(p_strat < 0.05)
        plain = PatientBootstrap(pid, n_boot, seed=r)
        _, p_plain = plain.auc_difference(y, a, b)
        out["old_rule"].append(p_plain < 0.05 and dl < 0.05)
        ci = clustered_auc_ci(y, a, pid)
        out["ne_clustered"].append(not ci.estimable)
        out["cov_clustered"].append(bool(ci.estimable and ci.low <= theta <= ci.high))
        for key, boot in (("cov_percentile", plain), ("cov_stratified", strat)):
            pc = boot.auc_ci(y, a)
            out[key].append(bool(pc.estimable and pc.low <= theta <= pc.high))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="800 replicates per size, 200 resamples (< 2 min)")
    ap.add_argument("--reps", type=int, default=None, help="replicates per patient count")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples per replicate")
    ap.add_argument("--patients", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--patient-sd", type=float, default=1.5, help="sd of the patient random effect (default 1.5)"
    )
    ap.add_argument(
        "--slices", type=int, default=30, help="slices per patient, 40%% of them positive (default 30)"
    )
    args = ap.parse_args()
    reps = args.reps or (800 if args.quick else 4000)
    n_boot = args.resamples or (200 if args.quick else 2000)
    d = Design(patient_sd=args.patient_sd, slices=args.slices, pos_run=max(1, round(0.4 * args.slices)))
    theta = true_auc(np.random.default_rng(12345), d)
    print(f"significance rule: {significance_rule(0.05)}")
    print(
        f"model: delta {d.delta}, patient sd {d.patient_sd}, {d.slices} slices/patient, {d.pos_run} positive per "
        f"DVT patient, half the patients positive; true AUC {theta:.4f}; {reps} replicates, B = {n_boot}"
    )
    for n in args.patients:
        t0 = time.perf_counter()
        o = run(n, reps, n_boot, theta, args.seed + n, d)
        print(f"\n{n} patients ({time.perf_counter() - t0:.0f} s)")
        print(f"  type-I error at nominal 5%: rule (clustered t) {_rate(o['rule'])}")
        print(f"                              DeLong alone      {_rate(o['delong'])}")
        print(f"                              bootstrap alone   {_rate(o['boot'])}  (stratified)")
        print(
            f"                              former rule       {_rate(o['old_rule'])}  (bootstrap AND DeLong)"
        )
        print(f"  95% AUC interval coverage:  clustered logit-t {_rate(o['cov_clustered'])}", end="")
        print(f"  ({sum(o['ne_clustered'])} not estimable, counted as misses)")
        print(f"                              percentile        {_rate(o['cov_percentile'])}  (former)")
        print(f"                              stratified perc.  {_rate(o['cov_stratified'])}")


if __name__ == "__main__":
    main()

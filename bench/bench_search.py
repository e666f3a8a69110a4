"""Benchmarks of the distributed search (figures only; nothing is asserted).

(a) Per-trial overhead, ``direct`` (the engine inside the Tune trial) vs ``ray-train`` (a TorchTrainer per
    trial): the driver-measured wall time of each trial minus the trial's own fit time (sum of the
    engine's per-epoch ``wall_s``). Trials run one at a time with every CPU.
(b) TPE + ASHA vs random search (FIFO, full budget) on the phantom, over several seeds: the epochs TPE+ASHA
    spends until its best ``val_auc`` reaches the best one random search found with its whole budget.
    Trials run one at a time, so "epochs spent" has one order (trial by trial). Every run uses the same
    splits; the two searches of a seed use different sampler seeds.
(p) The same ``ray-train`` overhead as (a), with Ray's 2 s poll of the Train workers
    (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2`` for the job) vs the trial's own 0.5 s
    (``runtime/trainable.TRAIN_POLL_S``); each in its own Ray session, one after the other.
(c) A SIFT-BoW-SVM search with the shared descriptor cache (pre-warmed once) vs ``--no-sift-cache``
    (every trial extracts its own descriptors): search wall time.

Defaults take about 10 minutes on 2 cores; ``--tiny`` is a smoke run (about 3 minutes).

    .venv/bin/python bench/bench_search.py [--tiny] [--parts abc] (p: also the Train poll) [--family multitask_unet] [--seeds 3]
        [--trials 6] [--epochs 3] [--sift-trials 50] [--data MANIFEST] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _quiet_run(opts: Any) -> float:
    """Run one search with its progress output swallowed; returns its wall time."""
    from dvt_search.runtime.driver import run_search

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_search(opts)
    return time.perf_counter() - t0


def _options(args: argparse.Namespace, name: str, **kw: Any) -> Any:
    from dvt_search.runtime.driver import SearchOptions

    base = dict(
        manifest=args.data,
        splits=args.splits,
        storage=args.out,
        name=name,
        size=args.size,
        space_dir=args.space_dir,
        seed=0,
        max_concurrent=1,
        cpus_per_trial=float(os.cpu_count() or 1),
        include_dashboard=False,
        progress_every_s=1e9,
    )
    base.update(kw)
    return SearchOptions(**base)


def _overhead_rows(args: argparse.Namespace, name: str, trainer: str) -> dict[str, Any]:
    """One search of ``--trials-a`` one-epoch trials; each trial's wall time minus its own fit time."""
    from dvt_search.rundir.layout import RunDir

    opts = _options(args, name, families=[args.family], trials=args.trials_a, max_epochs=1, trainer=trainer)
    _quiet_run(opts)
    run = RunDir(args.out / opts.name)
    rows = []
    for rec in run.trials(args.family):
        fit = sum(r.get("wall_s", 0.0) for r in run.read_epochs(args.family, rec.trial_id))
        rows.append((rec.wall_s, fit))
    over = [w - f for w, f in rows]
    print(
        f"({name}) trial wall {', '.join(f'{w:.1f}' for w, _ in rows)} s | fit "
        f"{', '.join(f'{f:.1f}' for _, f in rows)} s | median overhead {statistics.median(over):.1f} s",
        flush=True,
    )
    return {
        "trials": len(rows),
        "wall_s": [round(w, 2) for w, _ in rows],
        "fit_s": [round(f, 2) for _, f in rows],
        "median_overhead_s": round(statistics.median(over), 2),
    }


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """(a) wall per trial minus fit time, direct vs ray-train."""
    return {
        trainer: _overhead_rows(args, f"overhead-{trainer}", trainer) for trainer in ("direct", "ray-train")
    }


def train_poll(args: argparse.Namespace) -> dict[str, Any]:
    """(p) ray-train overhead with Ray's 2 s Train worker poll vs the trial's own (own Ray session each)."""
    import ray

    out = {}
    for label, env in (("ray_2s", {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}), ("trial_default", {})):
        ray.shutdown()
        ray.init(
            num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR",
            runtime_env={"env_vars": env} if env else None,
        )  # fmt: skip
        out[label] = _overhead_rows(args, f"poll-{label}", "ray-train")
    return out


def _history(run: Any, family: str) -> list[float]:
    """``val_auc`` of every epoch in the order they were trained (trial by trial; one trial at a time)."""
    recs = sorted(run.trials(family), key=lambda r: r.optuna_number)
    return [row["val_auc"] for r in recs for row in run.read_epochs(family, r.trial_id)]


def tpe_vs_random(args: argparse.Namespace) -> dict[str, Any]:
    """(b) epochs TPE+ASHA needs to reach random search's best val AUC."""
    from dvt_search.rundir.layout import RunDir

    results = []
    for seed in range(args.seeds):
        common = dict(families=[args.family], trials=args.trials, max_epochs=args.epochs)
        random_opts = _options(
            args, f"random-{seed}", sampler="random", scheduler="fifo", seed=seed, **common
        )
        tpe_opts = _options(
            args,
            f"tpe-asha-{seed}",
            sampler="tpe",
            seed=1000 + seed,  # TPE's random start-up must not replay the random search's first draws
            scheduler="asha",
            startup_trials=args.tpe_startup,
            grace_period=1,
            reduction_factor=args.reduction_factor,
            **common,
        )
        t_random, t_tpe = _quiet_run(random_opts), _quiet_run(tpe_opts)
        rand_hist = _history(RunDir(args.out / random_opts.name), args.family)
        tpe_hist = _history(RunDir(args.out / tpe_opts.name), args.family)
        target = max(rand_hist)
        reached = next((i + 1 for i, _ in enumerate(tpe_hist) if max(tpe_hist[: i + 1]) >= target), None)
        row = {
            "seed": seed,
            "random_best": round(target, 4),
            "random_epochs": len(rand_hist),
            "random_wall_s": round(t_random, 1),
            "tpe_asha_best": round(max(tpe_hist), 4),
            "tpe_asha_epochs": len(tpe_hist),
            "tpe_asha_wall_s": round(t_tpe, 1),
            "tpe_asha_epochs_to_reach": reached,
        }
        results.append(row)
        reach = f"{reached} epochs" if reached else f"not reached (best {max(tpe_hist):.3f})"
        print(
            f"(b) seed {seed}: random best {target:.3f} in {len(rand_hist)} epochs ({t_random:.0f} s) | "
            f"TPE+ASHA reached it after {reach}, spent {len(tpe_hist)} epochs in total ({t_tpe:.0f} s)",
            flush=True,
        )
    return {"family": args.family, "trials": args.trials, "epochs": args.epochs, "seeds": results}


def sift_cache(args: argparse.Namespace) -> dict[str, Any]:
    """(c) a SIFT search with vs without the shared descriptor cache."""
    out = {}
    for cached in (True, False):
        opts = _options(
            args,
            f"sift-{'cache' if cached else 'nocache'}",
            families=["sift_bow_svm"],
            trials=args.sift_trials,
            max_epochs=1,
            size=args.sift_size,
            sift_cache=cached,
            cpus_per_trial=1.0,
            max_concurrent=None,
        )
        wall = _quiet_run(opts)
        out["cache" if cached else "no_cache"] = round(wall, 1)
        print(
            f"(c) SIFT search, {args.sift_trials} trials at {args.sift_size}^2, "
            f"{'with' if cached else 'without'} the descriptor cache: {wall:.1f} s",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="smoke run: minimal trials, epochs and seeds")
    p.add_argument("--parts", default="abc", help="which parts to run (a, b, c; p: the Train poll)")
    p.add_argument("--data", type=Path, help="manifest (default: a generated phantom)")
    p.add_argument("--phantom-size", type=int, default=256)
    p.add_argument("--family", default="multitask_unet")
    p.add_argument("--size", type=int, default=32, help="CNN input side")
    p.add_argument("--trials-a", type=int, default=3, help="(a) trials per trainer")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=6, help="(b) trials per search")
    p.add_argument("--epochs", type=int, default=3, help="(b) epoch budget")
    p.add_argument("--tpe-startup", type=int, default=3, help="(b) random trials before TPE")
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--sift-trials", type=int, default=50)
    p.add_argument("--sift-size", type=int, default=256)
    p.add_argument("--space-dir", type=Path, default=REPO / "search_spaces")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.tiny:
        args.trials_a, args.seeds, args.trials, args.epochs, args.sift_trials = 2, 1, 3, 2, 4
        args.phantom_size, args.sift_size, args.tpe_startup = 64, 64, 2
    import ray

    from dvt_search.data.phantom import generate

    with tempfile.TemporaryDirectory(prefix="dvt-bench-search-") as tmp:
        args.out = Path(tmp) / "runs"
        if args.data is None:
            args.data = generate(
                Path(tmp) / "phantom",
                patients=6,
                seed=0,
                size=args.phantom_size,
                slices_per_scan=6,
                preset="easy",
            )
        from dvt_search.data.schema import read_manifest
        from dvt_search.data.splits import make_splits

        args.splits = make_splits(read_manifest(args.data), seed=0).save(
            Path(tmp) / "splits.json"
        )  # one split for all
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        figures: dict[str, Any] = {"cpus": os.cpu_count()}
        t0 = time.perf_counter()
        if "a" in args.parts:
            figures["overhead"] = overhead(args)
        if "b" in args.parts:
            figures["tpe_asha_vs_random"] = tpe_vs_random(args)
        if "c" in args.parts:
            figures["sift_cache"] = sift_cache(args)
        if "p" in args.parts:
            figures["train_poll"] = train_poll(args)
        figures["total_s"] = round(time.perf_counter() - t0, 1)
        ray.shutdown()
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

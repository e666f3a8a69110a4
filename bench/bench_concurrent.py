"""Benchmark: every family's study at once vs one family after another, on a simulated GPU cluster.

One run measures both, side by side, on the same cluster and the same tiny trials (figures only; nothing is
asserted):

* cluster: ``ray.cluster_utils.Cluster``, a ``CPU: 0`` head, 2 "GPU" nodes ``{CPU: 2, GPU: 1}`` (fake GPU
  resources: nothing touches a device) and 1 CPU node ``{CPU: 4}``;
* families (the test plug-ins, ``tests/support/dvt_test_plugins.py``): ``scripted`` as the CPU-only
  family (SIFT's place: longer trials, no GPU) and two GPU families ``scripted_gpu`` / ``scripted_gpu_b``
  (1 CPU + 1 GPU per trial); every trial sleeps ``epoch_s`` per epoch, ASHA stops the weaker ones;
* makespan: first trial start to last trial end, from the trial records (``started_at`` / ``ended_at``);
* GPU idle fraction: ``1 - GPU-seconds reserved by trials / (GPUs x the time while trials remain)``, the
  GPU-seconds being each GPU trial's span in its record times its GPUs.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_concurrent.py [--trials 4] [--epochs 2] [--json OUT]

About 7-10 minutes on 2 shared cores (defaults), longer under load.

Measured (2 shared cores, load average 20-30 from other work; ``--cpu-epoch-s 20 --gpu-epoch-s 10``, 4
trials x 2 epochs per family, one run, side by side):

    mode        makespan  GPU idle (while trials remain)
    concurrent   164.9 s   19.0 %
    sequential   218.3 s   48.9 %     -> 1.32x shorter concurrent

Same command on an idle machine (2 cores, nothing else running):

    concurrent    98.5 s   19.5 %
    sequential   166.2 s   50.1 %     -> 1.69x shorter concurrent

With the defaults (``--cpu-epoch-s 6 --gpu-epoch-s 3``) the host is the bottleneck: each trial's fixed
cost (a new process, imports) is CPU work on the 2 real cores behind the simulated 8, and starting many
trials at once stretches every one of them (trial spans 50-78 s concurrent vs 25-47 s sequential); that
run measured 312 s concurrent (23% GPU idle) and was stopped in its sequential half. The issue's goals
(>= 1.5x, GPU idle <= 10%) were not reached on this host; the idle that remains is the gap between one
GPU trial's end and the next one's start (a new trial process), and the last family's ASHA tail.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUPPORT = REPO / "tests" / "support"
FAMILIES = ("scripted", "scripted_gpu", "scripted_gpu_b")
GPUS = 2


def _spaces(directory: Path, cpu_epoch_s: float, gpu_epoch_s: float) -> Path:
    sys.path.insert(0, str(SUPPORT))
    from dvt_testkit_runtime import write_spaces

    quality = {"quality": {"type": "float", "low": 0.0, "high": 1.0}}
    return write_spaces(
        directory,
        {
            "scripted": {"params": quality, "fixed": {"epoch_s": cpu_epoch_s}},
            "scripted_gpu": {"params": quality, "fixed": {"epoch_s": gpu_epoch_s}},
            "scripted_gpu_b": {"params": quality, "fixed": {"epoch_s": gpu_epoch_s}},
        },
    )


def measure(run_dir: Path, wall_s: float) -> dict[str, Any]:
    """Makespan and GPU-idle fraction of one finished search, from its trial records."""
    from dvt_search.rundir import RunDir

    run = RunDir(run_dir)
    records = run.trials()
    starts = [r.started_at for r in records if r.started_at is not None]
    ends = [r.ended_at for r in records if r.ended_at is not None]
    span = max(ends) - min(starts)
    # Per trial the GPUs it reserved: the run records how each family's trials were run.
    gpus = {"scripted": 0.0, "scripted_gpu": 1.0, "scripted_gpu_b": 1.0}
    gpu_s = sum((r.ended_at - r.started_at) * gpus[r.family] for r in records if r.started_at and r.ended_at)
    return {
        "trials": {f: len(run.trials(f)) for f in FAMILIES},
        "finished": sorted(run.read_info().state.finished_families),
        "makespan_s": round(span, 1),
        "driver_wall_s": round(wall_s, 1),
        "gpu_seconds_reserved": round(gpu_s, 1),
        "gpu_idle_fraction": round(1.0 - gpu_s / (GPUS * span), 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4, help="trials per family (default 4)")
    ap.add_argument("--epochs", type=int, default=2, help="epoch budget of a full trial (default 2)")
    ap.add_argument(
        "--cpu-epoch-s", type=float, default=6.0, help="seconds per epoch, CPU family (default 6)"
    )
    ap.add_argument(
        "--gpu-epoch-s", type=float, default=3.0, help="seconds per epoch, GPU families (default 3)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(SUPPORT), str(REPO), os.environ.get("PYTHONPATH")])
    )
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray.cluster_utils import Cluster

    from dvt_search.data.phantom import generate
    from dvt_search.runtime.driver import SearchOptions, run_search

    out = Path(tempfile.mkdtemp(prefix="bench-concurrent-"))
    manifest = generate(out / "data", patients=6, seed=0, size=64, slices_per_scan=6, preset="easy")
    spaces = _spaces(out / "spaces", args.cpu_epoch_s, args.gpu_epoch_s)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(GPUS):
        cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, logging_level="WARNING")
    figures: dict[str, Any] = {
        "cluster": "CPU:0 head + 2 x {CPU: 2, GPU: 1} + 1 x {CPU: 4}",
        "args": vars(args),
    }
    try:
        for mode in ("concurrent", "sequential"):
            opts = SearchOptions(
                manifest=manifest, storage=out / "runs", name=mode, families=[",".join(FAMILIES)],
                trials=args.trials, max_epochs=args.epochs, size=32, space_dir=spaces,
                plugins=["dvt_test_plugins"], cpus_per_trial=1.0, gpus_per_trial=1.0, reduction_factor=2.0,
                include_dashboard=False, progress_every_s=1e9, families_sequential=(mode == "sequential"),
            )  # fmt: skip
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_search(opts)
            figures[mode] = measure(out / "runs" / mode, time.perf_counter() - t0)
            print(mode, json.dumps(figures[mode]), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    figures["speedup_makespan"] = round(
        figures["sequential"]["makespan_s"] / figures["concurrent"]["makespan_s"], 2
    )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

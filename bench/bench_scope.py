"""Benchmark of the out-of-scope checks (:func:`dvt_search.deploy.scope.check_scope`) on a phantom series.

A phantom femoral scan of ``--slices`` slices at ``--size`` pixels is rendered once; printed: seconds per
``check_scope`` call (at most 64 slices are measured per series, whatever its length) and ms per measured
slice, wall and CPU time of this process. Figures only.

    .venv/bin/python bench/bench_scope.py [--size 512] [--slices 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dvt_search.data.phantom import ScanPlan, render_plan
from dvt_search.deploy.scope import check_scope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec, image, _, _ = render_plan(
        ScanPlan(1, 1, 1, "femoral", args.slices), seed=0, size=args.size, preset="standard"
    )
    vol = image.astype(np.float32)
    for r in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        report = check_scope(vol, (spec.spacing_mm, spec.spacing_mm), modality="CT")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n = report.checks["slices_measured"]
        print(
            f"run {r + 1}: {len(vol)} slices of {args.size}^2 ({n} measured): {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU, {1000 * wall / n:.1f} ms per measured slice; in scope: {report.ok}"
        )


if __name__ == "__main__":
    main()

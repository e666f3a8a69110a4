"""Phantom rendering speed: slices per second on one core, per slice size, anatomy and preset.

Renders whole scans in this process (OpenCV pinned to one thread), then times ``generate`` end to end
(rendering + .npy writes + manifest) at each size. Figures only; nothing is asserted.

    .venv/bin/python bench/bench_phantom.py                  # 512^2 and 128^2, ~1 min
    .venv/bin/python bench/bench_phantom.py --sizes 512 256 128 64 --slices 48
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

from dvt_search.data.phantom import generate, plan_dataset, render_plan
from dvt_search.data.schema import read_manifest


def render_rate(size: int, anatomy: str, preset: str, slices: int, scans: int) -> float:
    """Slices per second rendering ``scans`` scans of ``anatomy`` in this process."""
    frac = 1.0 if anatomy == "iliac" else 0.0
    plans = plan_dataset(patients=scans, seed=0, slices_per_scan=slices, iliac_fraction=frac)[:scans]
    render_plan(plans[0], seed=0, size=size, preset=preset)  # warm-up (imports, caches)
    start = time.perf_counter()
    total = 0
    for plan in plans:
        total += render_plan(plan, seed=0, size=size, preset=preset)[1].shape[0]
    return total / (time.perf_counter() - start)


def generate_rate(size: int, slices: int, patients: int, workers: int) -> tuple[float, int]:
    """(slices per second, slices) of ``generate`` end to end, writes included."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = generate(
            Path(tmp) / "ds", patients=patients, size=size, slices_per_scan=slices, workers=workers
        )
        elapsed = time.perf_counter() - start
        rows = len(read_manifest(manifest))
    return rows / elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 128])
    parser.add_argument("--slices", type=int, default=32, help="mean slices per scan")
    parser.add_argument("--scans", type=int, default=3, help="scans rendered per configuration")
    parser.add_argument("--patients", type=int, default=2, help="patients in the end-to-end generate run")
    parser.add_argument("--workers", type=int, default=1, help="workers of the end-to-end generate run")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    print(f"{'size':>6} {'anatomy':<9} {'preset':<9} {'slices/s (1 core)':>18} {'ms/slice':>9}")
    for size in args.sizes:
        for anatomy in ("femoral", "iliac"):
            for preset in ("standard", "easy"):
                rate = render_rate(size, anatomy, preset, args.slices, args.scans)
                print(f"{size:>6} {anatomy:<9} {preset:<9} {rate:>18.1f} {1000 / rate:>9.2f}")
    print(f"\n{'size':>6} {'slices':>7} {'workers':>8} {'generate slices/s (render + write)':>36}")
    for size in args.sizes:
        rate, rows = generate_rate(size, args.slices, args.patients, args.workers)
        print(f"{size:>6} {rows:>7} {args.workers:>8} {rate:>36.1f}")


if __name__ == "__main__":
    main()

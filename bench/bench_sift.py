"""Benchmark of the SIFT-BoW-SVM baseline: extraction speed and what the descriptor cache saves.

(a) OpenCV SIFT detect+compute, ms per slice on ONE core (``cv2.setNumThreads(1)``), at two sizes.
(b) Wall time of N fits with different (k, C) with the descriptor cache (the first fit extracts, the
    others reuse) versus without it (every fit extracts), side by side with the ratio. BLAS/OpenMP and
    OpenCV run ``--threads`` threads (default 1: on a loaded 2-core machine more threads than free cores
    make k-means an order of magnitude slower through spin-waiting).

Slices are synthetic CT-like thigh cross-sections (air, fat, muscle, femur, femoral vessels, one in two
with a thrombus-density vein; noise SD 15 HU) windowed at L40/W400, or a generated phantom with
``--phantom``. Defaults finish in well under 3 minutes on 2 cores.

    .venv/bin/python bench/bench_sift.py [--fits 10] [--fit-size 512] [--train-slices 48] [--phantom]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import sklearn.cluster  # noqa: F401  (load its OpenMP runtime before threadpool_limits applies)
import sklearn.svm  # noqa: F401
from threadpoolctl import threadpool_limits

from dvt_search.families import sift_features as sf
from dvt_search.families.base import DataSpec, FitData
from dvt_search.families.sift_bow_svm import SiftBowSvm


def ct_like_slice(size: int, rng: np.random.Generator, thrombus: bool) -> np.ndarray:
    """One synthetic thigh slice in HU (float32 [size, size])."""
    hu = np.full((size, size), -1000.0, np.float32)
    c, s = size / 2, size / 512

    def ellipse(cx: float, cy: float, ax: float, ay: float, value: float) -> None:
        cv2.ellipse(hu, (int(cx), int(cy)), (max(1, int(ax)), max(1, int(ay))), 0, 0, 360, value, -1)

    jitter = rng.uniform(-10, 10, 8) * s
    ellipse(c + jitter[0], c + jitter[1], 200 * s, 150 * s, -90)  # subcutaneous fat
    ellipse(c + jitter[2], c + jitter[3], 170 * s, 125 * s, 50)  # muscle
    for side in (-1, 1):
        bx, by = c + side * 70 * s + jitter[4], c + 20 * s + jitter[5]
        ellipse(bx, by, 22 * s, 22 * s, 1200)  # cortical femur
        ellipse(bx, by, 14 * s, 14 * s, 250)  # marrow
        vx, vy = bx - side * 25 * s, by - 55 * s + jitter[6]
        ellipse(vx + side * 12 * s, vy, 4 * s, 4 * s, 180)  # femoral artery
        ellipse(vx, vy, 5.5 * s, 5 * s, 50 if (thrombus and side == 1) else 130)  # femoral vein
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    return hu


def window_u8(hu: np.ndarray, level: float = 40, width: float = 400) -> np.ndarray:
    return (np.clip((hu - (level - width / 2)) / width, 0, 1) * 255).round().astype(np.uint8)


class SyntheticSlices:
    """Pre-windowed synthetic slices exposing the SliceDataset attributes the family uses."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n) % 2
        self.images = [window_u8(ct_like_slice(size, rng, bool(y))) for y in self.labels]
        self.cache_key = f"bench-synthetic-{n}-{size}-{seed}"

    def __len__(self) -> int:
        return len(self.images)

    def window_u8(self, i: int) -> np.ndarray:
        return self.images[i]


def phantom_datasets(root: Path, size: int, n_train: int, n_val: int) -> tuple[object, object]:
    from dvt_search.data.dataset import SliceDataset
    from dvt_search.data.phantom import generate
    from dvt_search.data.schema import read_manifest

    manifest = generate(root, patients=2, seed=0, size=size, slices_per_scan=(n_train + n_val) // 2)
    frame = read_manifest(manifest)
    return (
        SliceDataset(frame.iloc[:n_train], root, size=size),
        SliceDataset(frame.iloc[n_train : n_train + n_val], root, size=size),
    )


def extraction_ms(images: list[np.ndarray], repeats: int) -> tuple[float, float, float]:
    """Median wall ms, mean CPU ms and mean keypoints per slice (one OpenCV thread)."""
    params = sf.SiftParams()
    sf.extract_slice(images[0], params)  # warm-up
    walls, counts = [], []
    cpu = time.process_time()
    for _ in range(repeats):
        for im in images:
            t = time.perf_counter()
            counts.append(len(sf.extract_slice(im, params)))
            walls.append(time.perf_counter() - t)
    cpu_ms = 1000 * (time.process_time() - cpu) / len(walls)
    return 1000 * float(np.median(walls)), cpu_ms, float(np.mean(counts))


def timed_fits(
    train: object, val: object, configs: list[dict], size: int, cache: Path | None
) -> list[tuple[float, float]]:
    """(wall s, process CPU s) of each fit; a fresh in-process LRU, then the cache in ``cache`` or none."""
    sf.clear_memory_cache()
    times = []
    for cfg in configs:
        model = SiftBowSvm.build(cfg, DataSpec(image_size=size))
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(FitData(train, val, cache_dir=cache), 1, use_cache=cache is not None)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 128], help="slice sizes for (a)")
    ap.add_argument("--time-slices", type=int, default=8, help="slices per size for (a)")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the slices for (a)")
    ap.add_argument("--fits", type=int, default=10, help="fits per mode for (b)")
    ap.add_argument("--fit-size", type=int, default=512)
    ap.add_argument("--train-slices", type=int, default=48)
    ap.add_argument("--val-slices", type=int, default=16)
    ap.add_argument("--phantom", action="store_true", help="use a generated phantom, not synthetic slices")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV and BLAS/OpenMP threads for (b)")
    args = ap.parse_args()
    data = "phantom" if args.phantom else "synthetic"
    print(f"opencv {cv2.__version__}; data: {data}; (a) one thread, (b) {args.threads} thread(s)")
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Both measurements (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-sift-") as tmp:
        cv2.setNumThreads(1)
        print("(a) SIFT detect+compute per slice, one core")
        for size in args.sizes:
            if args.phantom:
                ds, _ = phantom_datasets(Path(tmp) / f"phantom{size}", size, args.time_slices, 2)
            else:
                ds = SyntheticSlices(args.time_slices, size, seed=1)
            images = [ds.window_u8(i) for i in range(args.time_slices)]
            wall_ms, cpu_ms, kp = extraction_ms(images, args.repeats)
            print(
                f"    {size:4d}^2: {wall_ms:7.1f} ms wall, {cpu_ms:7.1f} ms CPU per slice ({kp:.0f} keypoints)"
            )

        if args.phantom:
            train, val = phantom_datasets(
                Path(tmp) / "fit", args.fit_size, args.train_slices, args.val_slices
            )
        else:
            train = SyntheticSlices(args.train_slices, args.fit_size, seed=2)
            val = SyntheticSlices(args.val_slices, args.fit_size, seed=3)
        cv2.setNumThreads(args.threads)
        rng = np.random.default_rng(0)
        configs = [
            {"k": int(k), "svm_c": float(c)}
            for k, c in zip(rng.integers(10, 60, args.fits), 10 ** rng.uniform(-2, 2, args.fits))
        ]
        print(
            f"(b) {args.fits} fits with different (k, C) on {len(train)}+{len(val)} slices of {args.fit_size}^2"
        )
        cached = timed_fits(train, val, configs, args.fit_size, Path(tmp) / "cache")
        uncached = timed_fits(train, val, configs, args.fit_size, None)
        print(f"    {'fit':>4} {'k':>4} {'C':>8}   cache wall/cpu s   no-cache wall/cpu s")
        for i, (cfg, a, b) in enumerate(zip(configs, cached, uncached)):
            print(
                f"    {i + 1:4d} {cfg['k']:4d} {cfg['svm_c']:8.3g}   {a[0]:7.2f} / {a[1]:6.2f}"
                f"      {b[0]:7.2f} / {b[1]:6.2f}"
            )
        for label, col in (("wall", 0), ("cpu", 1)):
            with_cache, without = (sum(t[col] for t in ts) for ts in (cached, uncached))
            later = sum(t[col] for t in uncached[1:]) / max(sum(t[col] for t in cached[1:]), 1e-9)
            print(
                f"    total {label}: cache {with_cache:.1f} s, no cache {without:.1f} s, "
                f"ratio {without / with_cache:.1f}x (fits 2..{len(configs)}: {later:.1f}x)"
            )


if __name__ == "__main__":
    main()

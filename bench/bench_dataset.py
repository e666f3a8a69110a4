"""Benchmark of the slice data path: SliceDataset items per second on ONE core, and slice read costs.

Rows of the table:

* raw reads: ``io.load_slice`` of one 512^2 slice from an int16 ``.npy`` volume (memory-mapped, copied
  out so the pixels are really read) versus from a 16-bit PNG file (decoded each time), image only;
* dataset items (image + mask read, resize, windowing, patch targets, tensors) at 512^2 and 256^2, with one
  and three HU windows, with and without the full augmentation (flip, rotation, zoom, shift, jitter, noise).

Volumes are synthetic CT-like thigh sections written to a temp dir (so the page cache is warm: this
measures CPU cost, not disk). ``torch`` and OpenCV are pinned to one thread; items/s per core comes from
process CPU time (robust to other load on the machine), wall time is printed beside it. Figures only.

    .venv/bin/python bench/bench_dataset.py [--scans 4] [--slices-per-scan 32] [--items 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from dvt_search.data.augment import Augment
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.io import clear_cache, load_slice
from dvt_search.data.schema import patches_from_mask

SIDE = 512
FULL_AUG = Augment(
    hflip_p=0.5,
    rotation_deg=15,
    scale_range=(0.9, 1.1),
    translate_frac=0.05,
    intensity_jitter_hu=20,
    noise_sd_hu=10,
)


def synthetic_volume(z: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An int16 HU volume of a thigh-like section and its vein mask, ``[z, 512, 512]``."""
    image = np.full((z, SIDE, SIDE), -1000, np.int16)
    mask = np.zeros((z, SIDE, SIDE), np.uint8)
    c = SIDE // 2
    for k in range(z):
        sl = image[k]
        cv2.ellipse(sl, (c, c), (200, 150), 0, 0, 360, -90, -1)
        cv2.ellipse(sl, (c, c), (170, 125), 0, 0, 360, 50, -1)
        for side in (-1, 1):
            bx = c + side * 70
            cv2.circle(sl, (bx, c + 20), 22, 1200, -1)
            cv2.circle(sl, (bx, c + 20), 14, 250, -1)
            cv2.circle(sl, (bx - side * 25, c - 35), 6, 130, -1)
            cv2.circle(mask[k], (bx - side * 25, c - 35), 6, 1, -1)
        sl += rng.normal(0, 15, sl.shape).astype(np.int16)
    return image, mask


def build_store(root: Path, scans: int, z: int, png_slices: int) -> tuple[pd.DataFrame, list[Path]]:
    """Write ``scans`` npy volumes (+ a few 16-bit PNG copies of slices); return manifest rows and PNGs."""
    rng = np.random.default_rng(0)
    rows, pngs = [], []
    for s in range(scans):
        image, mask = synthetic_volume(z, rng)
        d = root / "volumes" / f"scan{s}"
        d.mkdir(parents=True)
        np.save(d / "image.npy", image)
        np.save(d / "mask.npy", mask)
        for k in range(z):
            if len(pngs) < png_slices:
                pngs.append(d / f"slice{k:03d}.png")
                cv2.imwrite(str(pngs[-1]), (image[k].astype(np.int32) + 1024).astype(np.uint16))
            rows.append(
                {
                    "patient_id": f"P{s}",
                    "scan_id": f"scan{s}",
                    "slice_index": k,
                    "image_path": f"volumes/scan{s}/image.npy",
                    "image_index": k,
                    "mask_path": f"volumes/scan{s}/mask.npy",
                    "mask_index": k,
                    "label": k % 2,
                    "anatomy": "femoral",
                    "patches": patches_from_mask(mask[k]).ravel(),
                }
            )
    return pd.DataFrame(rows), pngs


def per_item_ms(fn: Callable[[int], object], n: int, total: int) -> tuple[float, float]:
    """(CPU, wall) milliseconds per call of ``fn(i)``, ``n`` calls cycling through ``total`` items."""
    for i in range(min(8, total)):
        fn(i)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i % total)
    return (time.process_time() - c0) * 1000.0 / n, (time.perf_counter() - t0) * 1000.0 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=4)
    ap.add_argument("--slices-per-scan", type=int, default=32)
    ap.add_argument("--items", type=int, default=256, help="timed items per row")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        root = Path(tmp)
        df, pngs = build_store(root, args.scans, args.slices_per_scan, png_slices=64)
        n = len(df)
        clear_cache()
        npy = [str(root / p) for p in df["image_path"]]
        results = [
            (
                "read .npy memmap slice (image)",
                per_item_ms(lambda i: np.array(load_slice(npy[i], i % args.slices_per_scan)), args.items, n),
            ),
            (
                "read 16-bit PNG slice (image)",
                per_item_ms(lambda i: load_slice(pngs[i]), args.items, len(pngs)),
            ),
        ]
        configs = [
            ("512, 1 window", 512, ((40, 400),), None),
            ("512, 3 windows", 512, ("soft_tissue", "venous", "bone"), None),
            ("512, 1 window, augmented", 512, ((40, 400),), FULL_AUG),
            ("512, 3 windows, augmented", 512, ("soft_tissue", "venous", "bone"), FULL_AUG),
            ("256 (resized), 1 window", 256, ((40, 400),), None),
            ("256 (resized), 1 window, augmented", 256, ((40, 400),), FULL_AUG),
        ]
        for name, size, windows, aug in configs:
            ds = SliceDataset(df, root, size=size, windows=windows, augment=aug, seed=0)
            results.append((f"dataset item {name}", per_item_ms(ds.__getitem__, args.items, n)))
    print(
        f"one core, {n} slices of {SIDE}^2 in {args.scans} int16 .npy volumes, {args.items} timed items per row"
    )
    print(f"{'what':<48}{'cpu ms':>9}{'items/s/core':>14}{'wall ms':>9}")
    for name, (cpu, wall) in results:
        print(f"{name:<48}{cpu:>9.3f}{1000.0 / cpu:>14.0f}{wall:>9.3f}")


if __name__ == "__main__":
    main()

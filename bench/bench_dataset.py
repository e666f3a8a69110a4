"""Benchmark of the slice data path: SliceDataset items per second on ONE core, and slice read costs.

Rows of the table:

* raw reads: ``io.load_slice`` of one 512^2 slice from an int16 ``.npy`` volume (memory-mapped, copied
  out so the pixels are really read) versus from a 16-bit PNG file (decoded each time), image only;
* dataset items (image + mask read, resize, windowing, patch targets, tensors) at 512^2 and 256^2, with one
  and three HU windows, with and without the full augmentation (flip, rotation, zoom, shift, jitter, noise).

* loader items/s per core, before -> after: the float32 reference item (``old_item``: what training
  workers shipped before, image + mask + patches) versus the compact item workers ship now
  (:class:`~dvt_search.data.compact.CompactSlices`: int16 HU, uint8 mask only for mask families,
  augmentation draws), both windowed/augmented as configured;
* per family at 512^2, batch 32 (``--feed``): bytes per sample and main-process CPU per batch through 2
  loader workers, three columns: ``f32`` the float32 reference items (before issue 10), ``item`` the
  compact per-item DataLoader (int16 HU + uint8 mask, default collate; the state before the ring and the
  packing) and ``now`` the training path (:func:`~dvt_search.engine.device.make_loader` of the compact
  view: HU + mask packed in one 16-bit word, whole batches through the shared-memory ring of
  :mod:`dvt_search.data.ring`). Main-process CPU = the fetch plus the move to the device as the loop does
  it (``prepare_batch``, no transform); the per-item columns add one copy of the batch standing in for
  ``pin_memory`` (pageable shared memory must be copied to pinned memory for CUDA), the ring needs none
  (it is registered as pinned memory on CUDA, so the copy to the GPU is a DMA out of the slot). The
  device transform's own cost on CPU tensors is printed beside it (on a GPU it runs as kernels).

Measured in one run (2 cores shared with other jobs, load ~7; ``--scans 2 --items 64``): bytes/sample
2,098,188 (f32) -> 524,380 for every family (4.00x; the mask families' per-item compact items were
786,524, 2.67x); main-process CPU ms/batch f32 95.3 -> item 13.9-23.4 -> now 0.51-1.03 (every family
<= 5 ms; vgg16 0.82, densenet161 0.72, multitask_unet 0.51, patch_resnet50 1.03). Loader items/s per core
(mask shipped, reference item -> compact item) 306 -> 2,011 at 512^2 with one window, augmented.

Volumes are synthetic CT-like thigh sections written to a temp dir (so the page cache is warm: this
measures CPU cost, not disk). ``torch`` and OpenCV are pinned to one thread; items/s per core comes from
process CPU time (robust to other load on the machine), wall time is printed beside it. Figures only.

    .venv/bin/python bench/bench_dataset.py [--scans 4] [--slices-per-scan 32] [--items 256] [--feed-batches 6]
        [--feed-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dvt_search.data.augment import Augment
from dvt_search.data.compact import CompactSlices
from dvt_search.data.dataset import SliceDataset
from dvt_search.data.io import clear_cache, load_slice
from dvt_search.data.schema import patches_from_mask
from dvt_search.engine.device import make_loader
from dvt_search.engine.loop import prepare_batch

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


#: Family -> (ships a mask, derives patch targets): the families' ``batch_targets`` at 0.2.
FAMILIES = {
    "vgg16": (False, False),
    "densenet161": (False, False),
    "multitask_unet": (True, False),
    "patch_resnet50": (True, True),
}


def old_item(ds: SliceDataset, i: int) -> dict[str, torch.Tensor]:
    """Before: the float32 reference item every training worker shipped (image, mask, patches, label)."""
    return ds[i]


class OldItems(torch.utils.data.Dataset):
    """The "before" training dataset: :func:`old_item` of every row."""

    def __init__(self, ds: SliceDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return old_item(self.ds, i)


def item_bytes(item: dict[str, torch.Tensor]) -> int:
    """Bytes of one sample as shipped (every tensor of the item)."""
    return sum(v.numel() * v.element_size() for v in item.values())


def main_process_ms(loader: Iterable[dict[str, torch.Tensor]], batches: int, pin_copy: bool) -> float:
    """Main-process CPU ms per batch of ``loader``: the fetch, the move to the (CPU) device as the
    training loop does it (:func:`~dvt_search.engine.loop.prepare_batch` without the device transform),
    and with ``pin_copy`` one copy of every tensor standing in for ``pin_memory`` (the per-item
    DataLoader's batches are pageable shared memory that CUDA needs pinned first; the ring is pinned in
    place, so it needs none)."""
    it = iter(loader)
    next(it)  # workers started and warm
    cpu = torch.device("cpu")
    total = 0.0
    for _ in range(batches):
        c0 = time.process_time()
        b = next(it)
        if pin_copy:
            b = {k: v.clone() for k, v in b.items()}
        b = prepare_batch(b, cpu, False, None)
        total += time.process_time() - c0
    del it, b
    return total * 1000.0 / batches


def feed_rows(df: pd.DataFrame, root: Path, batches: int, batch: int) -> list[str]:
    """Per family at 512^2, batch 32: bytes/sample and main-process ms/batch, before -> after.

    Columns: ``f32`` the float32 reference items (before issue 10), ``item`` the compact per-item
    DataLoader (int16 HU + uint8 mask, default collate: the state before the ring and the packing),
    ``now`` what training uses (:func:`~dvt_search.engine.device.make_loader` of the compact view:
    packed HU + mask through the shared-memory batch ring).
    """
    lines = [
        f"per family, 512^2, batch {batch}, 1 window, augmented, 2 loader workers ({batches} timed batches)",
        f"{'':<16}{'bytes/sample':^30}{'main-process CPU ms/batch':^34}",
        f"{'family':<16}{'f32':>10}{'item':>10}{'now':>10}{'f32':>9}{'item':>8}{'now':>8}{'f32/now':>9}"
        f"{'B ratio':>9}{'device tf ms (CPU)':>20}",
    ]
    need = batches + 2
    sub = df.iloc[np.arange(need * batch) % len(df)].reset_index(drop=True)
    ds = SliceDataset(sub, root, size=512, windows=((40, 400),), augment=FULL_AUG, seed=0)

    def per_item(dataset: torch.utils.data.Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=batch, num_workers=2, shuffle=False, prefetch_factor=2)

    f32_ms = main_process_ms(per_item(OldItems(ds)), batches, pin_copy=True)
    f32_b = item_bytes(old_item(ds, 0))
    for fam, (mask, patches) in FAMILIES.items():
        item_view = CompactSlices(ds, with_mask=mask, patches=patches, pack=False)
        item_ms = main_process_ms(per_item(item_view), batches, pin_copy=True)
        item_b = item_bytes(item_view[0])
        view = CompactSlices(ds, with_mask=mask, patches=patches)
        gen = torch.Generator().manual_seed(0)
        ring = make_loader(
            view, batch, shuffle=True, generator=gen, num_workers=2, persistent=True, ring=True
        )
        now_ms = main_process_ms(ring, batches, pin_copy=False)
        now_b = item_bytes(view[0])
        raw = torch.utils.data.default_collate([view[i] for i in range(batch)])
        view.batch_transform(raw)
        c0 = time.process_time()
        view.batch_transform(raw)
        tf_ms = (time.process_time() - c0) * 1000.0
        lines.append(
            f"{fam:<16}{f32_b:>10,}{item_b:>10,}{now_b:>10,}{f32_ms:>9.2f}{item_ms:>8.2f}{now_ms:>8.2f}"
            f"{f32_ms / max(now_ms, 1e-6):>9.1f}{f32_b / now_b:>9.2f}{tf_ms:>20.1f}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=4)
    ap.add_argument("--slices-per-scan", type=int, default=32)
    ap.add_argument("--items", type=int, default=256, help="timed items per row")
    ap.add_argument(
        "--feed-batches", type=int, default=6, help="timed batches of 32 per family row (0 = skip)"
    )
    ap.add_argument("--feed-only", action="store_true", help="only the per-family feed table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        root = Path(tmp)
        df, pngs = build_store(root, args.scans, args.slices_per_scan, png_slices=64)
        n = len(df)
        clear_cache()
        results: list[tuple[str, tuple[float, float]]] = []
        pairs: list[tuple[str, float, float]] = []
        if not args.feed_only:
            npy = [str(root / p) for p in df["image_path"]]
            results += [
                (
                    "read .npy memmap slice (image)",
                    per_item_ms(
                        lambda i: np.array(load_slice(npy[i], i % args.slices_per_scan)), args.items, n
                    ),
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
                before = per_item_ms(lambda i, ds=ds: old_item(ds, i), args.items, n)
                results.append((f"dataset item {name}", before))
                compact = CompactSlices(ds, with_mask=True)
                after = per_item_ms(compact.__getitem__, args.items, n)
                results.append((f"compact item (+mask) {name}", after))
                pairs.append((name, before[0], after[0]))
        feed = feed_rows(df, root, args.feed_batches, 32) if args.feed_batches > 0 else []
    if results:
        print(
            f"one core, {n} slices of {SIDE}^2 in {args.scans} int16 .npy volumes, {args.items} timed items per row"
        )
        print(f"{'what':<48}{'cpu ms':>9}{'items/s/core':>14}{'wall ms':>9}")
        for name, (cpu, wall) in results:
            print(f"{name:<48}{cpu:>9.3f}{1000.0 / cpu:>14.0f}{wall:>9.3f}")
        print()
        print(f"{'loader items/s per core (mask shipped)':<48}{'before':>9}{'after':>9}{'ratio':>7}")
        for name, b, a in pairs:
            print(f"{name:<48}{1000.0 / b:>9.0f}{1000.0 / a:>9.0f}{b / a:>7.1f}")
    if feed:
        print()
        print("\n".join(feed))


if __name__ == "__main__":
    main()

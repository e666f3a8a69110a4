"""Benchmark of the resident dataset: training-loader items/s per core, store vs resident, and the memory.

For each slice side (the demo's 64, then 256 and 512), a store of synthetic CT-like volumes (int16 ``.npy``,
the page cache warm: this measures CPU cost, not disk) is read through the engine's training loader
(:func:`dvt_search.engine.device.make_loader`, shuffled, batch 32, in the main process) two ways:

* store: :class:`~dvt_search.data.compact.CompactSlices` items (a slice read, the int16 conversion, the
  augmentation draws) collated by torch;
* resident: :class:`~dvt_search.data.resident.ResidentSlices` of the same view (loaded once; one gather
  per key per batch, the same draws).

Both with the full augmentation's draws and a mask (the multitask / patch families' batches). Items/s per
core come from process CPU time (torch pinned to one thread); the resident memory and its load time are
printed beside them, with the memory the paper's 29k femoral slices would take at that side (2 bytes per
pixel: HU and mask packed in one word; with ``--context k`` each slice is still held once, the stacks
gathered by index). Figures only, no assertions. Under a minute on 2 CPU cores.

    .venv/bin/python bench/bench_resident.py [--scans 2] [--slices 48] [--sizes 64,256,512] [--epochs 3]
        [--context 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dataset import FULL_AUG, build_store  # noqa: E402

from dvt_search.data.compact import CompactSlices  # noqa: E402
from dvt_search.data.dataset import SliceDataset  # noqa: E402
from dvt_search.data.resident import GIB, ResidentSlices, item_bytes  # noqa: E402
from dvt_search.engine.device import make_loader  # noqa: E402

PAPER_SLICES = 29_000


def resize_store(root: Path, side: int) -> None:
    """Shrink every volume of the store in place to ``side`` x ``side`` (area for HU, max for the mask)."""
    if side == 512:
        return
    for path in root.glob("volumes/*/*.npy"):
        vol = np.load(path)
        if path.name == "mask.npy":
            out = np.stack([(cv2.resize(s.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) > 0)
                            for s in vol]).astype(np.uint8)  # fmt: skip
        else:
            out = np.stack([cv2.resize(s.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
                            for s in vol]).round().astype(np.int16)  # fmt: skip
        np.save(path, out)


def items_per_cpu_s(dataset, batch: int, epochs: int) -> tuple[float, float]:
    """(items per CPU second, items per wall second) over ``epochs`` shuffled epochs."""
    gen = torch.Generator()
    loader = make_loader(dataset, batch, shuffle=True, generator=gen, num_workers=0)
    n = 0
    gen.manual_seed(0)
    for _ in loader:  # warm-up epoch (page cache, allocator)
        pass
    c0, t0 = time.process_time(), time.perf_counter()
    for epoch in range(epochs):
        gen.manual_seed(epoch + 1)
        dataset.set_epoch(epoch + 1)
        for b in loader:
            n += int(b["label"].shape[0])
    return n / (time.process_time() - c0), n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scans", type=int, default=2)
    p.add_argument("--slices", type=int, default=48, help="slices per scan")
    p.add_argument("--sizes", default="64,256,512")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--context", type=int, default=0, help="context slices k (each slice is held once)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(
        f"{args.scans * args.slices} slices, batch {args.batch}, augmentation draws + mask (packed), "
        f"{args.context} context slices, 1 thread"
    )
    print(f"{'side':>5}{'store it/s/core':>17}{'resident it/s/core':>20}{'ratio':>7}{'resident MiB':>14}"
          f"{'load s':>8}{'29k slices GiB':>16}")  # fmt: skip
    for side in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-resident-") as tmp:
            root = Path(tmp)
            frame, _ = build_store(root, args.scans, args.slices, png_slices=0)
            resize_store(root, side)
            view = CompactSlices(
                SliceDataset(frame, root, size=side, augment=FULL_AUG, seed=0, context_slices=args.context),
                with_mask=True,
            )
            store_cpu, _ = items_per_cpu_s(view, args.batch, args.epochs)
            t0 = time.perf_counter()
            resident = ResidentSlices(view)
            load_s = time.perf_counter() - t0
            res_cpu, _ = items_per_cpu_s(resident, args.batch, args.epochs)
            print(
                f"{side:>5}{store_cpu:>17.0f}{res_cpu:>20.0f}{res_cpu / store_cpu:>7.1f}"
                f"{resident.nbytes / 1024**2:>14.1f}{load_s:>8.2f}{PAPER_SLICES * item_bytes(view) / GIB:>16.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

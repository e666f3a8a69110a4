"""GPU check of the data path (figures only): does the loader keep the GPU busy?

Per torch family at ``--size`` (512) and ``--batch`` (32), bf16 autocast + channels_last as the engine does:

(1) synthetic: img/s of ``train_step`` on ONE batch that already lives on the device (the network's own
    speed: no loader, no host-to-device copy, no device transform);
(2) real trial: img/s of ``TorchModel.fit`` on a phantom store through the real data path (compact batches,
    packed HU + mask for the mask families, written by ``--loader-workers`` persistent workers into the
    pinned shared-memory batch ring, the device transform, validation each epoch): the
    engine's ``img_per_s``, median of the epochs after the first. Reported as real / synthetic (goal >= 0.95;
    0.48 for the multitask model before this data path);
(3) memory probe (``--gpus-per-trial auto``): per family, the peak GPU memory of a few real training steps
    at ``--size`` / ``--batch`` (:func:`dvt_search.engine.memory.probe_peak_bytes`, what the search
    measures once per run) and the share of this GPU ``auto`` would give one trial (``gpu_share``);
    skipped without CUDA;
(4) resident vs store: (2) for ``--pack-family`` with its compact slices resident (``--resident-on``:
    pinned host memory or the GPU) against the store path (the (2) figure), img/s each;
(5) packing: ``--pack`` processes (4: as trials at 0.25 GPU each) each running (2) for ``--pack-family`` at
    ``--pack-batch`` at the same time on the one GPU, against one such process alone: aggregate img/s ratio.
    Plain processes stand in for Ray trials (Ray is not needed; a Tune trial at 0.25 GPU is such a process);
(6) feed (``feed``): per family, main-process CPU ms per batch of the training loader as the loop uses
    it (fetch + ``prepare_batch`` to the device, no transform; ``process_time``, so the pinning thread
    counts) for the per-item compact DataLoader (int16 HU + uint8 mask, ``pin_memory``) against the
    shared-memory batch ring of the training path (packed words, pinned in place), and bytes per sample
    (goal <= 5 ms per batch; CPU figures in ``bench/bench_dataset.py --feed``).

No Ray or Optuna needed (torch + torchvision + this package). ``--quick`` is the one short GPU call (2
timed epochs, a small store); ``--dry-run`` runs every step on the CPU at 32^2 in under a minute (a
smoke test of this script, not a measurement).

    python bench/gpu_feed_check.py --quick [--families vgg16,densenet161,multitask_unet,patch_resnet50]
        [--size 512] [--batch 32] [--epochs 3] [--loader-workers 4] [--pack 4] [--json OUT]
        [--resident-on host|device] [--skip synthetic,real,probe,resident,pack,feed]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TORCH_FAMILIES = "vgg16,densenet161,multitask_unet,patch_resnet50"
#: per-family knobs of the check (the paper's VGG-16 classifier head; the rest at their defaults)
PARAMS: dict[str, dict[str, Any]] = {"vgg16": {"head": "classifier"}}


def make_store(root: Path, size: int, patients: int, slices: int) -> Path:
    from dvt_search.data.phantom import generate

    return generate(root / "ph", patients=patients, seed=0, size=size, slices_per_scan=slices, preset="easy")


def datasets(manifest: Path, size: int, limit: int = 0) -> tuple[Any, Any, Any]:
    """Train/val slice datasets of the store (patient-disjoint); ``limit`` > 0 caps each (dry runs)."""
    from dvt_search.data.dataset import SliceDataset, spec_for
    from dvt_search.data.schema import manifest_root, read_manifest

    df = read_manifest(manifest)
    patients = sorted(df["patient_id"].unique())
    val_ids = set(patients[-max(1, len(patients) // 4) :])
    root = manifest_root(manifest)
    train_rows, val_rows = df[~df["patient_id"].isin(val_ids)], df[df["patient_id"].isin(val_ids)]
    if limit > 0:
        train_rows, val_rows = train_rows.head(limit), val_rows.head(max(2, limit // 2))
    train = SliceDataset(train_rows, root, size=size)
    val = SliceDataset(val_rows, root, size=size)
    return train, val, spec_for(train)


def synthetic_img_s(name: str, spec: Any, batch: int, device: str, steps: int) -> float:
    """img/s of train_step on one device-resident batch."""
    import torch

    from dvt_search import families
    from dvt_search.engine.loop import train_step
    from dvt_search.engine.optim import build_optimizer

    model = families.get(name).build({**PARAMS.get(name, {}), "batch_size": batch}, spec)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    module = model.module.to(dev)
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(module, model.loop_config())
    s = spec.image_size
    image = torch.rand(batch, spec.in_channels, s, s, device=dev)
    if cuda:
        image = image.contiguous(memory_format=torch.channels_last)
    mask = (torch.rand(batch, 1, s, s, device=dev) > 0.98).float()
    g = -(-s // 32)
    batch_d = {
        "image": image,
        "label": (torch.arange(batch, device=dev) % 2).float(),
        "mask": mask,
        "patches": torch.nn.functional.max_pool2d(mask, 32, 32, ceil_mode=True).reshape(batch, 1, g, g),
    }
    module.train()

    def run(n: int) -> None:
        for _ in range(n):
            train_step(module, model, batch_d, optimizer, device=dev, amp=cuda)
        if cuda:
            torch.cuda.synchronize()

    run(max(2, steps // 4))  # warm-up (cuDNN autotuning)
    t0 = time.perf_counter()
    run(steps)
    return batch * steps / (time.perf_counter() - t0)


def real_img_s(
    name: str,
    manifest: str,
    size: int,
    batch: int,
    device: str,
    epochs: int,
    workers: int,
    limit: int = 0,
    resident_gb: float = 0.0,
    resident_on: str = "host",
):
    """Steady img/s of a real fit (median of epochs 2..) and the epochs' figures (``resident_gb`` > 0:
    the compact slices held in memory when they fit)."""
    import torch

    from dvt_search import families
    from dvt_search.families.base import FitData

    if device == "cpu":
        torch.set_num_threads(1)
    train, val, spec = datasets(Path(manifest), size, limit)
    model = families.get(name).build({**PARAMS.get(name, {}), "batch_size": batch}, spec)
    data = FitData(
        train=train, val=val, num_workers=workers, resident_budget_gb=resident_gb, resident_on=resident_on
    )
    reports = model.fit(data, epochs, device=device)
    values = [r.metrics["img_per_s"] for r in reports]
    return statistics.median(values[1:] if len(values) > 1 else values), values


def probe(name: str, spec: Any, batch: int) -> dict[str, Any]:
    """Measured peak GPU bytes of ``name`` at ``batch`` and the ``auto`` share of this GPU."""
    import torch

    from dvt_search import families
    from dvt_search.engine.memory import GIB, PackingError, gpu_memory_bytes, gpu_share, probe_peak_bytes

    model = families.get(name).build({**PARAMS.get(name, {}), "batch_size": batch}, spec)
    peak = probe_peak_bytes(model, batch, device="cuda", steps=3)
    total, _ = gpu_memory_bytes("cuda")
    del model
    torch.cuda.empty_cache()
    try:
        share: float | str = gpu_share(peak, total, what=f"{name} at batch size {batch}")
    except PackingError as exc:
        share = str(exc)
    return {"peak_gib": peak / GIB, "gpu_gib": total / GIB, "auto_share": share}


def feed_cpu_ms(
    name: str, manifest: str, size: int, batch: int, device: str, workers: int, limit: int, batches: int
) -> dict[str, Any]:
    """Main-process CPU ms per batch and bytes per sample: per-item DataLoader vs the batch ring."""
    import torch
    from torch.utils.data import DataLoader

    from dvt_search import families
    from dvt_search.data.compact import CompactSlices
    from dvt_search.engine.device import make_loader
    from dvt_search.engine.loop import prepare_batch

    train, _, spec = datasets(Path(manifest), size, limit)
    model = families.get(name).build({**PARAMS.get(name, {}), "batch_size": batch}, spec)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    ring_view = model.training_view(train)
    item_view = CompactSlices(
        model.input_view(train),
        with_mask=model.uses_masks,
        patches="patches" in model.batch_targets,
        pack=False,
    )

    def measure(loader: Any) -> float:
        it = iter(loader)
        next(it)  # workers started
        n = max(1, min(batches, len(loader) - 1))
        total = 0.0
        for _ in range(n):
            c0 = time.process_time()
            prepare_batch(next(it), dev, False, None)
            total += time.process_time() - c0
        if cuda:
            torch.cuda.synchronize()
        del it
        return total * 1000.0 / n

    plain = DataLoader(item_view, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=cuda)
    gen = torch.Generator().manual_seed(0)
    ring = make_loader(
        ring_view, batch, shuffle=True, generator=gen, num_workers=workers, pin_memory=cuda, persistent=True,
        ring=True,
    )  # fmt: skip

    def nbytes(item: dict) -> int:
        return sum(v.numel() * v.element_size() for v in item.values())

    return {
        "item_ms": measure(plain),
        "ring_ms": measure(ring),
        "item_bytes": nbytes(item_view[0]),
        "ring_bytes": nbytes(ring_view[0]),
        "ring_pinned": bool(getattr(getattr(ring, "ring", None), "pinned", False)),
    }


def _pack_worker(args: tuple, queue: Any) -> None:
    try:
        queue.put(real_img_s(*args)[0])
    except Exception as exc:  # report, do not hang the parent
        queue.put(f"error: {type(exc).__name__}: {exc}")


def packed_img_s(n: int, args: tuple) -> list[float]:
    """Per-process steady img/s of ``n`` real fits running at the same time (spawned processes)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_pack_worker, args=(args, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    errors = [r for r in results if isinstance(r, str)]
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the short GPU call: 2 timed epochs, small store")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke run at 32^2 (not a measurement)")
    p.add_argument("--families", default=TORCH_FAMILIES)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4, help="epochs of each real fit (the first is warm-up)")
    p.add_argument("--patients", type=int, default=8)
    p.add_argument("--slices", type=int, default=32, help="slices per scan of the phantom store")
    p.add_argument("--steps", type=int, default=20, help="timed synthetic steps")
    p.add_argument("--loader-workers", type=int, default=4)
    p.add_argument("--pack", type=int, default=4, help="processes sharing the GPU (as 1/pack GPU trials)")
    p.add_argument("--pack-family", default="multitask_unet")
    p.add_argument("--pack-batch", type=int, default=8)
    p.add_argument("--resident-on", choices=("host", "device"), default="host")
    p.add_argument(
        "--skip", default="", help="comma list of parts to skip: synthetic,real,probe,resident,pack,feed"
    )
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if args.dry_run:
        torch.set_num_threads(1)
        args.size, args.batch, args.pack_batch, args.epochs = 32, 4, 4, 1
        args.patients, args.slices, args.steps, args.loader_workers, args.pack = 2, 4, 2, 1, 2
        args.families = args.pack_family = "patch_resnet50"  # the fastest on a CPU; mask + patch path
    elif args.quick:
        args.epochs, args.patients, args.slices, args.steps = 3, 4, 32, 12
    elif device == "cpu":
        print("no CUDA device: use --dry-run for a CPU smoke run", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    limit = 8 if args.dry_run else 0
    out: dict[str, Any] = {"device": device, "size": args.size, "batch": args.batch, "families": {}}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="gpu-feed-") as tmp:
        manifest = make_store(Path(tmp), args.size, args.patients, args.slices)
        _, _, spec = datasets(manifest, args.size, limit)
        print(
            f"{device} {out.get('gpu', '')}: {args.size}^2, batch {args.batch}, {args.loader_workers} workers"
        )
        print(f"{'family':<16}{'synthetic img/s':>16}{'real img/s':>12}{'real/synthetic':>16}")
        for name in args.families.split(","):
            row: dict[str, Any] = {}
            if "synthetic" not in skip:
                row["synthetic"] = synthetic_img_s(name, spec, args.batch, device, args.steps)
            if "real" not in skip:
                row["real"], row["real_epochs"] = real_img_s(
                    name,
                    str(manifest),
                    args.size,
                    args.batch,
                    device,
                    args.epochs,
                    args.loader_workers,
                    limit,
                )
            if "synthetic" in row and "real" in row:
                row["ratio"] = row["real"] / row["synthetic"]
            out["families"][name] = row
            print(
                f"{name:<16}{row.get('synthetic', float('nan')):>16.1f}{row.get('real', float('nan')):>12.1f}"
                f"{row.get('ratio', float('nan')):>16.2f}",
                flush=True,
            )
        if "feed" not in skip:
            print(
                f"{'family':<16}{'item ms/batch':>14}{'ring ms/batch':>14}{'item B/sample':>15}"
                f"{'ring B/sample':>15}  (main-process CPU, {args.loader_workers} workers)"
            )
            out["feed"] = {}
            for name in args.families.split(","):
                row = out["feed"][name] = feed_cpu_ms(
                    name, str(manifest), args.size, args.batch, device, args.loader_workers, limit,
                    args.steps,
                )  # fmt: skip
                print(
                    f"{name:<16}{row['item_ms']:>14.2f}{row['ring_ms']:>14.2f}{row['item_bytes']:>15,}"
                    f"{row['ring_bytes']:>15,}"
                    + ("" if row["ring_pinned"] or device != "cuda" else "  (ring NOT pinned)"),
                    flush=True,
                )
        if "probe" not in skip:
            if device != "cuda":
                print("probe: skipped (no CUDA device: GPU memory cannot be measured)")
            else:
                print(f"{'family':<16}{'peak GiB':>10}{'GPU GiB':>9}{'auto share':>12}  (batch {args.batch})")
                out["probe"] = {}
                for name in args.families.split(","):
                    row = out["probe"][name] = probe(name, spec, args.batch)
                    share = row["auto_share"]
                    print(
                        f"{name:<16}{row['peak_gib']:>10.2f}{row['gpu_gib']:>9.1f}"
                        f"{share if isinstance(share, str) else f'{share:g}':>12}",
                        flush=True,
                    )
        if "resident" not in skip:
            base = out["families"].get(args.pack_family, {}).get("real")
            if base is None:
                base = real_img_s(
                    args.pack_family, str(manifest), args.size, args.batch, device, args.epochs,
                    args.loader_workers, limit,
                )[0]  # fmt: skip
            res = real_img_s(
                args.pack_family, str(manifest), args.size, args.batch, device, args.epochs, 0, limit,
                resident_gb=64.0, resident_on=args.resident_on,
            )[0]  # fmt: skip
            out["resident"] = {
                "family": args.pack_family,
                "store": base,
                "resident": res,
                "on": args.resident_on,
            }
            print(
                f"resident ({args.resident_on}) vs store, {args.pack_family} batch {args.batch}: "
                f"{res:.1f} vs {base:.1f} img/s = {res / base:.2f}x",
                flush=True,
            )
        if "pack" not in skip:
            job = (
                args.pack_family,
                str(manifest),
                args.size,
                args.pack_batch,
                device,
                args.epochs,
                max(1, args.loader_workers // args.pack),
                limit,
            )
            alone = packed_img_s(1, job)
            packed = packed_img_s(args.pack, job)
            out["packing"] = {
                "family": args.pack_family,
                "batch": args.pack_batch,
                "alone": alone[0],
                "packed_each": packed,
                "ratio": sum(packed) / alone[0],
            }
            print(
                f"packing {args.pack_family} batch {args.pack_batch}: 1 process {alone[0]:.1f} img/s; "
                f"{args.pack} at once {sum(packed):.1f} img/s in all = {sum(packed) / alone[0]:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

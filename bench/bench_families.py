"""Throughput of every CNN family: training step and inference, images per second.

Runs standalone with torch + torchvision + this repository (no Ray, Optuna, scikit-learn or OpenCV are
imported), e.g. on a bare GPU machine::

    python bench/bench_families.py                      # CUDA when present: 512^2, bf16, channels_last
    python bench/bench_families.py --device cpu         # CPU: 128^2, fp32
    python bench/bench_families.py --device cuda --compile

The training step is the engine's own (:func:`dvt_search.engine.loop.train_step`: autocast forward, the
family's loss, backward, Adam step) on a synthetic batch already on the device; inference is a forward
pass under ``torch.inference_mode``. Each row is timed over ``--steps`` steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dvt_search.engine.device import autocast, resolve_device  # noqa: E402
from dvt_search.engine.loop import train_step  # noqa: E402
from dvt_search.engine.optim import LoopConfig, build_optimizer  # noqa: E402
from dvt_search.families.base import DataSpec  # noqa: E402
from dvt_search.families.densenet161 import DenseNet161  # noqa: E402
from dvt_search.families.multitask_unet import MultitaskUNet  # noqa: E402
from dvt_search.families.patch_resnet50 import PatchResNet50  # noqa: E402
from dvt_search.families.vgg16 import VGG16  # noqa: E402

#: (label, family, params, CUDA batch, CPU batch); CUDA batches as in the design notes.
CASES: list[tuple[str, Any, dict[str, Any], int, int]] = [
    ("vgg16 classifier", VGG16, {"head": "classifier"}, 32, 8),
    ("vgg16 gap", VGG16, {"head": "gap"}, 32, 8),
    ("densenet161", DenseNet161, {}, 32, 8),
    ("densenet161", DenseNet161, {}, 10, 8),
    ("multitask_unet", MultitaskUNet, {}, 32, 8),
    ("patch_resnet50", PatchResNet50, {}, 32, 8),
]


def synthetic_batch(
    batch: int, size: int, device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, size, size, generator=g)
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.99).float()
    cells = -(-size // 32)
    patches = torch.nn.functional.adaptive_max_pool2d(mask, cells)
    out = {
        "image": image.to(device),
        "mask": mask.to(device),
        "patches": patches.to(device),
        "label": (torch.arange(batch) % 2).float().to(device),
    }
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


class SyntheticSlices(torch.utils.data.Dataset):
    """In-memory slices following the dataset contract; positives hold a bright disc."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = 0.4 * torch.rand(n, 1, size, size, generator=g)
        self.labels = (torch.arange(n) % 2).float()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.masks = torch.zeros(n, 1, size, size)
        for i in range(n):
            cy, cx = torch.randint(size // 8, size - size // 8, (2,), generator=g).tolist()
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 16) ** 2).float()
            self.masks[i, 0] = disc
            if self.labels[i]:
                self.images[i, 0] += 0.5 * disc
        self.patches = torch.nn.functional.adaptive_max_pool2d(self.masks, -(-size // 32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[i],
            "mask": self.masks[i],
            "patches": self.patches[i],
            "label": self.labels[i],
            "index": torch.tensor(i),
        }


def fit_case(family: Any, params: dict[str, Any], batch: int, size: int, device: torch.device) -> str:
    """Two epochs of the family's real ``fit`` (engine loop, loader, validation) plus a CPU reload."""
    import tempfile

    import numpy as np

    from dvt_search.families.base import FitData

    model = family.build({**params, "batch_size": batch, "schedule": "none"}, DataSpec(image_size=size))
    data = FitData(train=SyntheticSlices(4 * batch, size, 0), val=SyntheticSlices(2 * batch, size, 1))
    reports = model.fit(data, 2, device=str(device))
    m = reports[-1].metrics
    with tempfile.TemporaryDirectory() as tmp:
        loaded = family.load(model.save(tmp + "/ckpt"))
        same = np.abs(loaded.predict(data.val, device="cpu") - model.predict(data.val)).max()
    return (
        f"fit img/s {m['img_per_s']:.1f}, epoch {m['wall_s']:.1f}s, train_loss {m['train_loss']:.3f}, "
        f"val_auc {m['val_auc']:.3f}; CPU-reloaded predictions differ by <= {same:.2e}"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(
    family: Any, params: dict[str, Any], batch: int, size: int, device: torch.device, args: argparse.Namespace
) -> dict[str, float]:
    cuda = device.type == "cuda"
    model = family.build({**params, "batch_size": batch}, DataSpec(image_size=size))
    module = model.module.to(device)
    if cuda:
        module.to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(module, LoopConfig())
    net = torch.compile(module) if args.compile else module
    data = synthetic_batch(batch, size, device, cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    module.train()
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            _sync(device)
            t0 = time.perf_counter()
        train_step(net, model, data, optimizer, device=device, amp=cuda)
    _sync(device)
    train = batch * args.steps / (time.perf_counter() - t0)
    module.eval()
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                _sync(device)
                t0 = time.perf_counter()
            with autocast(device, cuda):
                net(data["image"])
        _sync(device)
    infer = batch * args.steps / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    params_m = sum(p.numel() for p in module.parameters()) / 1e6
    del model, module, net, optimizer, data
    if cuda:
        torch.cuda.empty_cache()
    return {"train": train, "infer": infer, "mem": mem, "params": params_m}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--size", type=int, help="image side (default 512 on CUDA, 128 on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--only", nargs="*", help="case labels to run (default all)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the module")
    parser.add_argument("--fit", action="store_true", help="also run two epochs of each family's real fit")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (512 if cuda else 128)
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"# {name}; torch {torch.__version__}; {size}x{size}; {'bf16 autocast + channels_last' if cuda else 'fp32'}"
        f"{'; torch.compile' if args.compile else ''}; {args.steps} timed steps after {args.warmup} warm-up"
    )
    header = (
        f"{'case':<18} {'batch':>5} {'params M':>8} {'train img/s':>11} {'infer img/s':>11} {'peak GiB':>8}"
    )
    print(header)
    print("-" * len(header))
    done: set[tuple[str, int]] = set()
    for label, family, params, gpu_batch, cpu_batch in CASES:
        batch = gpu_batch if cuda else cpu_batch
        if (args.only and label not in args.only) or (label, batch) in done:
            continue
        done.add((label, batch))
        try:
            r = bench_case(family, params, batch, size, device, args)
        except torch.OutOfMemoryError:
            print(f"{label:<18} {batch:>5} out of memory")
            torch.cuda.empty_cache()
            continue
        print(
            f"{label:<18} {batch:>5} {r['params']:>8.1f} {r['train']:>11.1f} {r['infer']:>11.1f} {r['mem']:>8.1f}",
            flush=True,
        )
    if args.fit:
        print("# engine fit (synthetic in-memory data, 4 batches per epoch; bf16 + channels_last on CUDA)")
        for label, family, params, gpu_batch, cpu_batch in CASES:
            if (args.only and label not in args.only) or (label, 0) in done:
                continue
            done.add((label, 0))
            print(
                f"{label:<18} {fit_case(family, params, gpu_batch if cuda else cpu_batch, size, device)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

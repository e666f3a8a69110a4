"""Benchmark: checkpoint bytes of one trial, before -> after lean checkpoints, for VGG-16 and DenseNet-161.

A real model of each family (VGG-16 with the paper's classifier head; DenseNet-161) at a small input size
(parameter counts, hence checkpoint bytes, do not depend on it: VGG-16 pools to 7x7 before its
classifier, DenseNet-161 pools globally) takes one real
Adam step on random input, so its ``train_state.pt`` holds real Adam moments. Then a trial of ``--epochs``
epochs is saved epoch by epoch through :class:`~dvt_search.runtime.checkpoints.TrialCheckpoints`
(``keep=2``, as the default ``--keep-checkpoints``) with a validation-AUC sequence whose best epochs are
not the latest:

* before: the 0.1 store (every kept checkpoint full: weights + optimizer state) — ``OldCheckpoints``
  below, the old store kept here as a reference, not in the package;
* after: lean checkpoints (only the latest keeps ``train_state.pt``).

Printed per family: bytes written per epoch, bytes the trial holds on the storage at the end, and the
bytes of the run record's checkpoint copy (before: the whole best checkpoint; after: weights only).
Writes go to a temporary directory (``--dir``, default the system temp dir): about 2 x epochs x 1.6 GB for
VGG-16. Figures only.

    .venv/bin/python bench/bench_checkpoints.py [--epochs 4] [--families vgg16,densenet161]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from dvt_search import families
from dvt_search.data.spec import DataSpec
from dvt_search.engine.optim import build_optimizer
from dvt_search.runtime.checkpoints import TrialCheckpoints

AUCS = [0.60, 0.80, 0.75, 0.70, 0.72, 0.71, 0.69, 0.68]  # best epoch 2, then 5: the latest is rarely best


class OldCheckpoints(TrialCheckpoints):
    """Before: every kept checkpoint keeps its training state (no stripping)."""

    @staticmethod
    def _strip(directory: Path, names: frozenset[str]) -> None:
        return None


def dir_bytes(path: Path, skip: frozenset[str] = frozenset()) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name not in skip)


def trained_model(name: str, size: int):
    family = families.get(name)
    model = family.build({"batch_size": 2}, DataSpec(image_size=size))
    optimizer, scheduler = build_optimizer(model.module, model.loop_config())
    out = model.module(torch.randn(2, 1, size, size))
    loss, _ = model.compute_loss(out, {"label": torch.tensor([0.0, 1.0])})
    loss.backward()
    optimizer.step()
    scheduler.step()
    model.train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    return family, model


def run_trial(store_cls: type, root: Path, model, family, epochs: int) -> tuple[float, int, int, float]:
    store = store_cls(root, keep=2)
    written = 0
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        path = store.save(model, epoch, {"val_auc": AUCS[epoch - 1]})
        written += dir_bytes(path)
    seconds = (time.perf_counter() - t0) / epochs
    held = dir_bytes(root)
    best = max(range(1, epochs + 1), key=lambda e: (AUCS[e - 1], e))
    skip = family.training_only_files if store_cls is TrialCheckpoints else frozenset()
    record = dir_bytes(root / f"epoch_{best:04d}", skip)
    return written / epochs, held, record, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="input side of the models (heads are size-free)")
    ap.add_argument("--families", default="vgg16,densenet161")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: system temp dir)")
    args = ap.parse_args()
    if not 1 <= args.epochs <= len(AUCS):
        ap.error(f"--epochs must be in 1..{len(AUCS)}")
    torch.manual_seed(0)
    gib = 1024**3
    print(f"trial of {args.epochs} epochs, keep=2 best + latest, input {args.size}^2 (CPU)")
    print(
        f"{'family':<13}{'params M':>9}{'GiB written/epoch':>19}{'held before':>13}{'after':>8}"
        f"{'ratio':>7}{'record before':>15}{'after':>8}{'ratio':>7}{'s/save':>8}"
    )
    for name in args.families.split(","):
        family, model = trained_model(name.strip(), args.size)
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-", dir=args.dir) as tmp:
            w0, h0, r0, _ = run_trial(OldCheckpoints, Path(tmp) / "before", model, family, args.epochs)
            shutil.rmtree(Path(tmp) / "before")
            w1, h1, r1, s1 = run_trial(TrialCheckpoints, Path(tmp) / "after", model, family, args.epochs)
        assert w0 == w1  # the latest is written in full either way
        print(
            f"{name:<13}{model.n_params() / 1e6:>9.1f}{w1 / gib:>19.2f}{h0 / gib:>13.2f}{h1 / gib:>8.2f}"
            f"{h0 / h1:>7.2f}{r0 / gib:>15.2f}{r1 / gib:>8.2f}{r0 / r1:>7.2f}{s1:>8.2f}"
        )
        del model


if __name__ == "__main__":
    main()

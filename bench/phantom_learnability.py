"""Is the phantom learnable, and not trivially? Train a tiny CNN on CPU and print the validation AUC.

For each preset a fresh femoral-level phantom is generated, windowed (soft tissue, W400/L40) and
split patient-disjointly (75 % / 25 % of patients). A four-layer CNN with global max pooling trains
for a few epochs; the script prints the validation AUC after every epoch. Defaults: ``easy`` at 64^2
(32 patients), ``standard`` at 128^2 (48 patients; at 64^2 the femoral vein is under two pixels wide
and only the largest clots stay visible). Expected: ``easy`` learns fast (AUC > ~0.85);
``standard`` is clearly above chance but far from 1.

    .venv/bin/python bench/phantom_learnability.py                 # both presets, ~2 min on 2 idle cores
    .venv/bin/python bench/phantom_learnability.py --preset standard --size 64 --patients 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from dvt_search.data.phantom import generate
from dvt_search.data.schema import read_manifest


def load(manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft-tissue windowed images ``float32 [N, 1, S, S]``, labels and patient ids of every slice."""
    df = read_manifest(manifest)
    volumes = {p: np.load(manifest.parent / p, mmap_mode="r") for p in df["image_path"].unique()}
    images = np.stack([volumes[r.image_path][r.image_index] for r in df.itertuples()]).astype(np.float32)
    windowed = np.clip((images - (40 - 200)) / 400.0, 0.0, 1.0)
    return windowed[:, None], df["label"].to_numpy(np.float32), df["patient_id"].to_numpy()


def tiny_cnn() -> nn.Module:
    """Four conv blocks and a global max pool (a small lesion anywhere makes the slice positive)."""
    layers: list[nn.Module] = []
    width = 1
    for out in (16, 32, 48, 64):
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        if out != 64:
            layers.append(nn.MaxPool2d(2))
        width = out
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, 1))


#: Per-preset defaults: (phantom and network size, patients).
DEFAULTS = {"easy": (64, 32), "standard": (128, 48)}


def run(preset: str, args: argparse.Namespace) -> list[float]:
    """Generate, train, and return the validation AUC after each epoch."""
    torch.manual_seed(args.seed)
    size = args.size or DEFAULTS[preset][0]
    patients = args.patients or DEFAULTS[preset][1]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = generate(
            Path(tmp) / "ds",
            patients=patients,
            seed=args.seed,
            size=size,
            slices_per_scan=args.slices,
            preset=preset,
            iliac_fraction=args.iliac_fraction,
        )
        x, y, pid = load(manifest)
        gen_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    val_p = set(rng.choice(np.unique(pid), size=max(1, patients // 4), replace=False))
    val = np.array([p in val_p for p in pid])
    xt, yt, xv, yv = torch.from_numpy(x[~val]), torch.from_numpy(y[~val]), torch.from_numpy(x[val]), y[val]
    print(
        f"[{preset}] {size}x{size}, {patients} patients, {len(y)} slices ({y.mean():.0%} positive), "
        f"train {len(yt)} / val {len(yv)}, "
        f"generated+loaded in {gen_s:.1f}s"
    )
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    aucs = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(yt))
        for i in range(0, len(perm), args.batch):
            idx = perm[i : i + args.batch]
            xb = xt[idx]
            flip = torch.rand(len(idx)) < 0.5  # left-right flip: clots occur in either leg
            xb[flip] = xb[flip].flip(-1)
            opt.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            scores = torch.cat([model(xv[i : i + 256]).squeeze(1) for i in range(0, len(xv), 256)]).numpy()
        aucs.append(float(roc_auc_score(yv, scores)))
        print(
            f"[{preset}] epoch {epoch + 1}: loss {loss.item():.3f}  val AUC {aucs[-1]:.3f}  ({time.perf_counter() - t0:.1f}s)"
        )
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=("standard", "easy", "both"), default="both")
    parser.add_argument("--patients", type=int, default=None, help="default: 32 (easy), 48 (standard)")
    parser.add_argument("--slices", type=int, default=12, help="mean slices per scan")
    parser.add_argument(
        "--size", type=int, default=None, help="slice size; default: 64 (easy), 128 (standard)"
    )
    parser.add_argument("--iliac-fraction", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    presets = ("easy", "standard") if args.preset == "both" else (args.preset,)
    t0 = time.perf_counter()
    results = {p: run(p, args) for p in presets}
    print(f"\n{'preset':<10}{'best val AUC':>14}{'last val AUC':>14}")
    for p, aucs in results.items():
        print(f"{p:<10}{max(aucs):>14.3f}{aucs[-1]:>14.3f}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

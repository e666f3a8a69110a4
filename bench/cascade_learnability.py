"""Does the vein cascade learn the phantom? Fit it with its defaults and print val / test AUC per epoch.

A fresh femoral phantom is generated, split with the project's patient-disjoint rule
(:func:`dvt_search.data.splits.make_splits`), and the cascade trains on ``train`` with its default knobs
(``--set KEY=VALUE`` overrides one); after every epoch the script prints the epoch's train loss,
validation AUC and stage-1 Dice, and the test AUC of the same weights, with wall seconds. AUCs come with
a patient-clustered 95 % interval (:func:`dvt_search.stats.clustered.clustered_auc_ci`).

    .venv/bin/python bench/cascade_learnability.py                        # easy, 64^2, 12 patients
    .venv/bin/python bench/cascade_learnability.py --preset standard --size 128 --patients 16 --epochs 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from dvt_search import families
from dvt_search.data.dataset import SliceDataset, spec_for
from dvt_search.data.phantom import generate
from dvt_search.data.schema import read_manifest
from dvt_search.data.splits import make_splits
from dvt_search.families.base import FitData
from dvt_search.stats.clustered import clustered_auc_ci


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="easy")
    ap.add_argument("--size", type=int, default=64, help="phantom (store) slice side")
    ap.add_argument(
        "--net-size", type=int, default=64, help="the run's network size (the cascade reads native)"
    )
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--slices-per-scan", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="knob overrides (YAML values)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = generate(
            Path(tmp) / "ph",
            patients=args.patients,
            seed=args.seed,
            size=args.size,
            slices_per_scan=args.slices_per_scan,
            preset=args.preset,
            iliac_fraction=0.0,
        )
        df = read_manifest(manifest)
        splits = make_splits(df, seed=args.seed)
        data = {
            p: SliceDataset(splits.select(df, p), manifest.parent, size=args.net_size)
            for p in ("train", "val", "test")
        }
        print(
            f"phantom {args.preset} {args.size}^2, {args.patients} patients: "
            + ", ".join(
                f"{p} {len(d)} slices / {d.frame['patient_id'].nunique()} patients" for p, d in data.items()
            )
            + f" ({time.perf_counter() - t0:.1f} s)"
        )
        model = families.get("vein_cascade").build(params, spec_for(data["train"]))
        print(f"vein_cascade: {model.n_params()} parameters; knobs {params or 'defaults'}")

        def ci(d: SliceDataset, scores: np.ndarray) -> str:
            c = clustered_auc_ci(d.labels, scores, d.patient_ids, 0.95)
            return f"{c.estimate:.3f} [{c.low:.3f}, {c.high:.3f}]"

        t_fit = time.perf_counter()

        def report(r, m) -> bool:
            test = m.predict(data["test"])
            val = m.predict(data["val"])
            print(
                f"epoch {r.epoch}: train_loss {r.metrics['train_loss']:.3f}  val AUC {ci(data['val'], val)}  "
                f"test AUC {ci(data['test'], test)}  val_dice {r.metrics['val_dice']:.3f}  "
                f"{r.metrics['img_per_s']:.0f} img/s  ({time.perf_counter() - t_fit:.0f} s)"
            )
            return False

        model.fit(FitData(train=data["train"], val=data["val"]), args.epochs, report)


if __name__ == "__main__":
    main()

"""GPU check of the search runtime (figures only): what Ray costs a CNN trial, and what packing buys.

(1) img/s of the raw engine loop vs one Ray Train trial (``--trainer ray-train``, 1 GPU worker) on the
    same phantom at 512^2: median training img/s of epochs 2.. (the engine's ``img_per_s``), and the trial's
    wall time vs its own fit time.
(2) Aggregate img/s of 4 small trials packed on one GPU (``--gpus-per-trial 0.25``, engine inside the Tune
    trial) vs one such trial alone (``--gpus-per-trial 1``): sum of the per-trial steady-state img/s, and
    training images / wall time of the whole search.
(3) Fixed cost per one-GPU ``direct`` trial (issue 9: <= 5 s beyond its own training): ``--fixed-trials``
    trials one after another (FIFO, one at a time, one GPU each), with a fresh process per trial
    (``--no-reuse-actors``) and with the trial process re-used; per trial after the first, the time from the
    previous trial's end to this one's end minus this trial's own fit (the epochs' ``wall_s``), and the
    record span minus the fit. Part (1)'s Ray Train trial is the "before" of ``--trainer auto``.

Needs Ray and Optuna importable (on the lab's GPU machine: ``bash ../shared/tools/gpu_carry.sh`` packs them).
Without CUDA (``--tiny`` on a laptop) the same steps run on CPUs, with CPU fractions in place of GPU ones.

    python bench/gpu_search_check.py [--tiny] [--size 512] [--family multitask_unet] [--batch 32]
        [--pack-batch 8] [--epochs 4] [--patients 8] [--slices 32] [--loader-workers 4] [--parts 123]
        [--fixed-trials 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _steady(values: list[float]) -> float:
    """Median of the per-epoch figures after the first (warm-up: cuDNN autotuning, page cache)."""
    return round(statistics.median(values[1:] if len(values) > 1 else values), 1)


def raw_engine(args: argparse.Namespace, splits: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The engine alone: one model, no Ray."""
    from dvt_search import families
    from dvt_search.data.dataset import build_datasets
    from dvt_search.families.base import DataSpec, FitData

    data = build_datasets(args.data, splits, size=args.size)
    model = families.get(args.family).build(
        {**args.fixed, "max_epochs": args.epochs}, DataSpec.from_dict(spec)
    )
    t0 = time.perf_counter()
    reports = model.fit(
        FitData(data["train"], data["val"], num_workers=args.loader_workers), args.epochs, device=args.device
    )
    wall = time.perf_counter() - t0
    ips = [r.metrics["img_per_s"] for r in reports]
    return {"img_per_s": _steady(ips), "per_epoch": [round(x, 1) for x in ips], "wall_s": round(wall, 1)}


def _search(args: argparse.Namespace, name: str, **kw: Any) -> tuple[Any, float]:
    from dvt_search.rundir.layout import RunDir
    from dvt_search.runtime.driver import SearchOptions, run_search

    opts = SearchOptions(
        manifest=args.data,
        splits=args.splits,
        storage=args.out,
        name=name,
        families=[args.family],
        max_epochs=args.epochs,
        size=args.size,
        space_dir=args.spaces,
        scheduler="fifo",
        loader_workers=args.loader_workers,
        include_dashboard=False,
        progress_every_s=1e9,
        **kw,
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_search(opts)
    return RunDir(args.out / name), time.perf_counter() - t0


def _trial_figures(run: Any, family: str) -> list[dict[str, Any]]:
    out = []
    for rec in run.trials(family):
        rows = run.read_epochs(family, rec.trial_id)
        out.append(
            {
                "img_per_s": _steady([r["img_per_s"] for r in rows]),
                "fit_s": round(sum(r["wall_s"] for r in rows), 1),
                "wall_s": round(rec.wall_s, 1),
                "epochs": len(rows),
            }
        )
    return out


def ray_train_trial(args: argparse.Namespace) -> dict[str, Any]:
    """One Ray Train trial with one worker on one GPU (or CPUs)."""
    res = {"gpus_per_trial": 1.0, "cpus_per_trial": float(args.loader_workers + 1)} if args.cuda else {}
    run, wall = _search(args, "ray-train", trials=1, trainer="ray-train", **res)
    (trial,) = _trial_figures(run, args.family)
    return {**trial, "search_wall_s": round(wall, 1)}


def packing(args: argparse.Namespace, n_train: int) -> dict[str, Any]:
    """4 trials sharing one device vs 1 trial alone (engine inside the Tune trial, small batches)."""
    fixed = {**args.fixed, "batch_size": args.pack_batch}
    (args.spaces / f"{args.family}.yaml").write_text(yaml.safe_dump({"family": args.family, "fixed": fixed}))
    out = {}
    for n, share in ((1, 1.0), (4, 0.25)):
        if args.cuda:
            res = {"gpus_per_trial": share, "cpus_per_trial": max(1.0, (os.cpu_count() or 4) / 4 - 1)}
        else:
            res = {"cpus_per_trial": max(0.25, (os.cpu_count() or 1) * share)}
        run, wall = _search(args, f"pack-{n}", trials=n, trainer="direct", max_concurrent=n, **res)
        trials = _trial_figures(run, args.family)
        images = sum(t["epochs"] for t in trials) * n_train
        out[f"{n}x{share:g}"] = {
            "trials": trials,
            "sum_img_per_s": round(sum(t["img_per_s"] for t in trials), 1),
            "images_per_search_wall_s": round(images / wall, 1),
            "search_wall_s": round(wall, 1),
        }
    one, four = out["1x1"]["sum_img_per_s"], out["4x0.25"]["sum_img_per_s"]
    out["speedup_4_packed_vs_1"] = round(four / one, 2) if one else None
    return out


def fixed_cost(args: argparse.Namespace) -> dict[str, Any]:
    """One-GPU direct trials in turn: the cost of each trial beyond its own fit, fresh vs re-used process."""
    res = {"gpus_per_trial": 1.0, "cpus_per_trial": float(args.loader_workers + 1)} if args.cuda else {}
    out: dict[str, Any] = {}
    for mode, reuse in (("fresh", False), ("reuse", True)):
        run, wall = _search(
            args, f"fixed-{mode}", trials=args.fixed_trials, trainer="direct", max_concurrent=1,
            reuse_actors=reuse, **res,
        )  # fmt: skip
        recs = sorted(run.trials(args.family), key=lambda r: r.ended_at or 0.0)
        fit = {
            r.trial_id: sum(row["wall_s"] for row in run.read_epochs(args.family, r.trial_id)) for r in recs
        }
        per = [b.ended_at - a.ended_at - fit[b.trial_id] for a, b in zip(recs, recs[1:], strict=False)]
        inside = [r.ended_at - r.started_at - fit[r.trial_id] for r in recs[1:]]
        out[mode] = {
            "trials": len(recs),
            "fit_s": [round(fit[r.trial_id], 1) for r in recs],
            "fixed_cost_per_trial_s": round(statistics.mean(per), 2) if per else None,
            "fixed_cost_each_s": [round(x, 2) for x in per],
            "in_record_s": round(statistics.mean(inside), 2) if inside else None,
            "search_wall_s": round(wall, 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke run at 64^2")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--family", default="multitask_unet")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pack-batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--patients", type=int, default=8)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--loader-workers", type=int, default=4)
    p.add_argument("--parts", default="123", help="which parts to run (default all: 123)")
    p.add_argument("--fixed-trials", type=int, default=4, help="trials of part (3) per mode (default 4)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.pack_batch, args.epochs = 64, 8, 4, 2
        args.patients, args.slices, args.loader_workers = 4, 8, 0
    import ray
    import torch

    from dvt_search.data.dataset import build_datasets, spec_for
    from dvt_search.data.phantom import generate
    from dvt_search.data.schema import read_manifest
    from dvt_search.data.splits import make_splits

    args.cuda = torch.cuda.is_available()
    args.device = "cuda" if args.cuda else "cpu"
    args.fixed = {"lr": 1e-3, "batch_size": args.batch, "schedule": "none"}
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.cuda else "cpu",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "family": args.family,
        "size": args.size,
    }
    with tempfile.TemporaryDirectory(prefix="dvt-gpu-check-") as tmp:
        t0 = time.perf_counter()
        args.data = generate(
            Path(tmp) / "phantom",
            patients=args.patients,
            size=args.size,
            slices_per_scan=args.slices,
            preset="easy",
            workers=min(8, os.cpu_count() or 1),
        )
        df = read_manifest(args.data)
        # both anatomies: more training slices per epoch, so img/s is measured in steady state
        args.splits = make_splits(df, seed=0, anatomy=("femoral", "iliac")).save(Path(tmp) / "splits.json")
        train = build_datasets(args.data, args.splits, size=args.size)["train"]
        spec = spec_for(train).to_dict()
        figures.update(phantom_s=round(time.perf_counter() - t0, 1), train_slices=len(train))
        print(f"phantom: {len(df)} slices, {len(train)} for training ({figures['phantom_s']} s)", flush=True)
        args.out = Path(tmp) / "runs"
        args.spaces = Path(tmp) / "spaces"
        args.spaces.mkdir()
        (args.spaces / f"{args.family}.yaml").write_text(
            yaml.safe_dump({"family": args.family, "fixed": args.fixed})
        )
        if "1" in args.parts:
            figures["raw_engine"] = raw_engine(args, args.splits, spec)
            print("raw engine:", figures["raw_engine"], flush=True)
        ray.init(include_dashboard=False, logging_level="ERROR")
        if "1" in args.parts:
            figures["ray_train_trial"] = ray_train_trial(args)
            print("ray train trial:", figures["ray_train_trial"], flush=True)
        if "2" in args.parts:
            figures["packing"] = packing(args, len(train))
            print("packing:", json.dumps(figures["packing"]), flush=True)
        if "3" in args.parts:
            figures["fixed_cost"] = fixed_cost(args)
            print("fixed cost per one-GPU trial:", json.dumps(figures["fixed_cost"]), flush=True)
        ray.shutdown()
    print(json.dumps(figures, indent=1))
    target = args.json or (
        Path(os.environ["OUT"]) / "gpu_search_check.json" if os.environ.get("OUT") else None
    )
    if target:
        target.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the demo's sizes cost and buy: per-family CPU seconds per trial, val/test AUC, expected search total.

Generates the demo's phantom (``dvt-search demo`` defaults unless overridden), splits it with the paper
rule, then trains one trial of each family in this process (its ``default_params``, the paper
configuration where it has one; no Ray, one torch thread) for the epochs the demo budget gives it, and
prints, per family: CPU seconds (``time.process_time``: the figure that stays true when other jobs share
the machine) for setup and per epoch, val and test AUC with the clustered 95 % interval (patients as
clusters), and the demo's expected CPU total (trials x (setup + epochs x epoch)). Families with several
trials in the budget are timed once: later trials are assumed to cost the same (TPE samples may differ).

    .venv/bin/python bench/demo_sizing.py                                   # every family, ~10 CPU-min
    .venv/bin/python bench/demo_sizing.py --family vein_cascade,multitask_unet --patients 48
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dvt_search import demo, families  # noqa: E402
from dvt_search.runtime.options import merge_budgets, parse_budget  # noqa: E402


def prepare(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The demo's phantom and paper split in ``out``; prints the split summary and generation CPU time."""
    from dvt_search.data import phantom, splits
    from dvt_search.data.schema import read_manifest

    t = time.process_time()
    manifest = phantom.generate(
        out, patients=args.patients, seed=args.seed, size=args.size, slices_per_scan=args.slices_per_scan,
        preset=args.preset,
    )  # fmt: skip
    print(f"phantom: {time.process_time() - t:.1f} CPU s")
    df = read_manifest(manifest)
    sp = splits.make_splits(df, seed=args.seed, anatomy=("femoral",))
    print(splits.format_summary(splits.summarize(df, sp)))
    return manifest, sp.save(out / "splits.json")


def one_trial(name: str, epochs: int, manifest: Path, splits_path: Path, size: int) -> dict[str, float]:
    """Train ``name``'s default configuration for ``epochs``; CPU seconds and AUCs with intervals."""
    import torch

    from dvt_search.data.dataset import build_datasets, spec_for
    from dvt_search.families.base import FitData
    from dvt_search.stats.clustered import clustered_auc_ci

    torch.set_num_threads(1)
    t0 = time.process_time()
    data = build_datasets(manifest, splits_path, size=size, seed=0)
    fam = families.get(name)
    params = fam.default_params()
    if "max_epochs" in params:
        params["max_epochs"] = epochs  # the LR-schedule horizon, as a trial sets it
    model = fam.build(params, spec_for(data["train"], seed=0))
    t1 = time.process_time()
    budget = epochs if fam.trains_by_epoch else 1
    fit = FitData(train=data["train"], val=data["val"], cache_dir=None, num_workers=0)
    model.fit(fit, budget, None, **fam.fit_options(device="cpu", cpus=1, use_cache=False))
    t2 = time.process_time()
    out = {"setup_s": t1 - t0, "epoch_s": (t2 - t1) / budget}
    for part in ("val", "test"):
        d = data[part]
        ci = clustered_auc_ci(d.labels, model.predict(d), d.patient_ids)
        out[part], out[f"{part}_lo"], out[f"{part}_hi"] = ci.estimate, ci.low, ci.high
    out["predict_s"] = time.process_time() - t2
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="all", help="all or NAME[,NAME] (default: all)")
    p.add_argument("--patients", type=int, default=demo.DEMO_PATIENTS)
    p.add_argument("--slices-per-scan", type=int, default=demo.DEMO_SLICES)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--preset", default="easy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=demo.DEMO_TRIALS)
    p.add_argument("--max-epochs", type=int, default=demo.DEMO_EPOCHS)
    p.add_argument("--budget", default=demo.DEMO_BUDGET, help="FAMILY=TRIALS[xEPOCHS],... (the demo's)")
    args = p.parse_args(argv)
    names = families.names() if args.family == "all" else args.family.split(",")
    budget = merge_budgets([parse_budget(args.budget)]) if args.budget else {}
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        manifest, splits_path = prepare(Path(tmp) / "phantom", args)
        for name in names:
            trials, epochs = budget.get(name, (None, None))
            trials, epochs = trials or args.trials, epochs or args.max_epochs
            r = one_trial(name, epochs, manifest, splits_path, args.size)
            n_epochs = epochs if families.get(name).trains_by_epoch else 1
            cost = trials * (r["setup_s"] + n_epochs * r["epoch_s"] + r["predict_s"])
            total += cost
            print(
                f"{name:16s} {trials} x {n_epochs} epoch(s): setup {r['setup_s']:.1f} s, {r['epoch_s']:.1f} CPU s "
                f"per epoch; val AUC {r['val']:.3f} [{r['val_lo']:.3f}, {r['val_hi']:.3f}], test AUC {r['test']:.3f} "
                f"[{r['test_lo']:.3f}, {r['test_hi']:.3f}]; budget ~{cost:.0f} CPU s",
                flush=True,
            )
    print(
        f"expected search CPU (trials only, no Ray/actor overhead): ~{total:.0f} s = ~{total / 2:.0f} s on 2 busy cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Search efficiency without GPUs: replay random / TPE / TPE+ASHA over recorded learning curves (figures only).

Step 1, once (cached): real training on the phantom. Every configuration of a small grid is trained for the
full epoch budget through the project's engine (``Family.build(...).fit``), and its per-epoch validation AUC
(and test AUC, for the note on the winner) is written to ``<out>/curves-<key>.json``; a later run with the
same settings reads the file instead of training.

Step 2: replay. Each search runs the project's real searcher, :class:`dvt_search.runtime.searcher.OptunaStudySearcher`
(Optuna journal, ask/tell, intermediate values, PRUNED for stopped trials, COMPLETE with the best epoch),
driven through its Tune ``Searcher`` methods without starting Ray; "training" a suggested configuration means
reading its recorded curve epoch by epoch. TPE+ASHA drives Ray Tune's real ``ASHAScheduler``
(``on_trial_add`` / ``on_trial_result`` / ``on_trial_complete``, as Tune calls them; no Ray runtime) with the
run's defaults (``time_attr="epoch"``, grace period 1, reduction factor 3): a STOP ends the trial, which the
searcher then tells Optuna as PRUNED. The search space is the grid itself (categorical params), so every
suggestion has a recorded curve; trials run one at a time. Every method gets the same epoch budget
(``trials x epochs``): random search and TPE run ``trials`` full trials, TPE+ASHA starts trials until the
budget is spent. No paper trial is enqueued (the three methods start alike).

Figures, over ``--seeds`` sampler seeds (each method's seed ``s`` is the same for all three):

* epochs to reach random search's final best validation AUC (same seed), as a fraction of the budget:
  median and 10th-90th percentile over seeds, and how many seeds never reach it within the budget;
* best validation AUC found vs epochs spent (10 / 25 / 50 / 100 % of the budget), median [IQR], and the
  test AUC of the configuration each search would select at the end.

The default family is ``replay_cnn``: a small CNN (4 conv blocks, global max pool, ``width`` knob) registered
by this script as a real :class:`~dvt_search.families.torch_family.TorchFamily` (same engine, optimiser,
schedules and metrics as the paper's CNNs); ``--family vgg16`` / ``multitask_unet`` record a grid of the
paper's families instead (slow on CPUs: tens of minutes; the replay itself is the same).

    python bench/bench_replay.py --quick          # 24 configs x 4 epochs at 32 px, 20 seeds: < 3 min on 2 cores
    python bench/bench_replay.py                  # 36 configs x 8 epochs at 64 px, 30 seeds
    python bench/bench_replay.py --family vgg16 --size 32 --epochs 4 --out bench_out/replay
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dvt_search.families import register  # noqa: E402
from dvt_search.families.base import DataSpec  # noqa: E402
from dvt_search.families.torch_family import COMMON_DEFAULTS, TorchFamily, TorchModel  # noqa: E402


# --- the bench's small CNN family ----------------------------------------------------------------------------
class ReplayNet(nn.Module):
    """Four conv blocks (``width``, 2x, 4x, 4x channels; max-pooled), global max pool, linear head."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c = in_channels
        for i, out in enumerate(chans):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logit": self.head(self.features(x).amax(dim=(2, 3))).squeeze(1)}


class ReplayModel(TorchModel):
    family: ClassVar[str] = "replay_cnn"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        return ReplayNet(spec.in_channels, int(params["width"]))

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[Any, dict]:
        return nn.functional.binary_cross_entropy_with_logits(outputs["logit"], batch["label"]), {}


@register
class ReplayCnn(TorchFamily):
    name: ClassVar[str] = "replay_cnn"
    model_cls: ClassVar[type[TorchModel]] = ReplayModel

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**COMMON_DEFAULTS, "width": 8}


# --- the grids ---------------------------------------------------------------------------------------------------
LRS_6 = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    # (quick, full) grids: param -> values; the product is the set of recorded configurations
    "replay_cnn": {
        "quick": {"lr": LRS_6, "width": [4, 8], "schedule": ["none", "step"]},
        "full": {"lr": LRS_6, "width": [4, 8, 16], "schedule": ["none", "step"]},
    },
    "vgg16": {
        "quick": {"lr": LRS_6[:4], "batch_norm": [False, True], "schedule": ["none", "step"]},
        "full": {"lr": LRS_6, "batch_norm": [False, True], "schedule": ["none", "step", "cosine"]},
    },
    "multitask_unet": {
        "quick": {"lr": LRS_6[:4], "a": [0.25, 0.5], "schedule": ["none", "step"]},
        "full": {"lr": LRS_6, "a": [0.25, 0.5, 0.75], "schedule": ["none", "step"]},
    },
}
FIXED: dict[str, dict[str, Any]] = {
    "replay_cnn": {"batch_size": 16, "seed": 0},
    "vgg16": {"head": "gap", "batch_size": 16, "seed": 0},
    "multitask_unet": {"batch_size": 16, "seed": 0},
}
METHODS = ("random", "tpe", "tpe+asha")
FRACTIONS = (0.10, 0.25, 0.50, 1.0)


def configurations(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def key_of(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


# --- step 1: record ---------------------------------------------------------------------------------------------
def record(args: argparse.Namespace, grid: Mapping[str, list[Any]], cache: Path) -> dict[str, Any]:
    """Train every configuration for the full budget; per-epoch val/test AUC (cached in ``cache``)."""
    if cache.is_file():
        print(f"learning curves: read from {cache}", flush=True)
        return json.loads(cache.read_text())
    from dvt_search.data.dataset import build_datasets, spec_for
    from dvt_search.data.phantom import generate
    from dvt_search.data.schema import read_manifest
    from dvt_search.data.splits import make_splits
    from dvt_search.families import get
    from dvt_search.families.base import FitData
    from dvt_search.fsutil import atomic_write_text
    from dvt_search.stats.measures import auc

    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="replay-phantom-") as tmp:
        manifest = generate(
            Path(tmp) / "data",
            patients=args.patients,
            size=args.phantom_size,
            slices_per_scan=args.slices,
            preset="easy",
            seed=0,
            iliac_fraction=0.0,
        )
        make_splits(read_manifest(manifest), seed=0).save(Path(tmp) / "splits.json")
        ds = build_datasets(manifest, Path(tmp) / "splits.json", size=args.size)
        spec = spec_for(ds["train"])
        fam = get(args.family)
        test_y = ds["test"].labels
        rows = []
        configs = configurations(grid)
        parts = {
            k: f"{len(d)} slices / {d.frame['patient_id'].nunique()} patients ({int(d.labels.sum())} positive slices)"
            for k, d in ds.items()
        }
        print(
            f"recording {len(configs)} {args.family} configurations x {args.epochs} epochs at {args.size} px; "
            + "; ".join(f"{k}: {v}" for k, v in parts.items()),
            flush=True,
        )
        for i, params in enumerate(configs):
            model = fam.build({**FIXED.get(args.family, {}), **params}, spec)
            test_auc: list[float] = []
            val_check: list[float] = []

            def on_epoch(report: Any, m: Any, test_auc: list = test_auc, val_check: list = val_check) -> bool:
                test_auc.append(float(auc(test_y, m.predict(ds["test"], device="cpu"))))
                val_check.append(float(auc(ds["val"].labels, m.predict(ds["val"], device="cpu"))))
                return False

            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                model.fit(FitData(ds["train"], ds["val"]), args.epochs, on_epoch, device="cpu")
            val = [float(r.metrics.get("val_auc", math.nan)) for r in model.history]
            worst = max(abs(x - y) for x, y in zip(val, val_check))
            if worst > 1e-6:  # the recorded curve is the engine's own val AUC; predict() must agree with it
                print(f"  warning: engine val AUC and predict() differ by {worst:.2g}", flush=True)
            rows.append(
                {"params": params, "val_auc": val, "test_auc": test_auc, "fit_s": time.perf_counter() - t}
            )
            print(
                f"  [{i + 1}/{len(configs)}] {key_of(params)}: val AUC "
                + " ".join(f"{v:.3f}" for v in val)
                + f" ({rows[-1]['fit_s']:.1f} s)",
                flush=True,
            )
    table = {
        "family": args.family,
        "settings": _settings(args),
        "grid": dict(grid),
        "configs": rows,
        "partitions": parts,
    }
    table["record_s"] = time.perf_counter() - t0
    atomic_write_text(cache, json.dumps(table, indent=1))
    print(f"learning curves recorded in {table['record_s']:.0f} s -> {cache}", flush=True)
    return table


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("family", "quick", "epochs", "size", "phantom_size", "patients", "slices")
    return {k: getattr(args, k) for k in keys}


# --- step 2: replay ---------------------------------------------------------------------------------------------
class _Trial:
    """What ASHA reads of a Tune trial: its id (and config)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.config: dict[str, Any] = {}


def replay(
    method: str, seed: int, table: Mapping[str, Any], grid: Mapping[str, list[Any]], trials: int, work: Path
) -> dict[str, Any]:
    """One search over the recorded curves; returns its trace of (epochs spent, best val AUC, its test AUC)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from dvt_search.runtime.searcher import OptunaStudySearcher
    from dvt_search.search.space import parse_space

    epochs = int(table["settings"]["epochs"])
    budget = trials * epochs
    curves = {key_of(r["params"]): r for r in table["configs"]}
    space = parse_space(
        {
            "family": table["family"],
            "params": {k: {"type": "categorical", "choices": v} for k, v in grid.items()},
        }
    )
    asha = method == "tpe+asha"
    searcher = OptunaStudySearcher(
        space,
        work / f"{method.replace('+', '_')}-{seed}.journal",
        num_samples=trials * epochs if asha else trials,  # ASHA: trials until the epoch budget is spent
        budget=epochs,
        seed=seed,
        sampler="random" if method == "random" else "tpe",
        startup_trials=max(2, trials // 4),
        paper_trial=False,
    )
    sched = None
    if asha:
        sched = ASHAScheduler(
            time_attr="epoch", metric="val_auc", mode="max", max_t=epochs, grace_period=1, reduction_factor=3
        )
    spent, best, best_test, n_trials = 0, -math.inf, math.nan, 0
    trace: list[tuple[int, float, float]] = []
    while spent < budget:
        tid = f"t{n_trials:04d}"
        cfg = searcher.suggest(tid)
        if cfg is None or isinstance(cfg, str):
            break
        n_trials += 1
        rec = curves[key_of({k: cfg["params"][k] for k in grid})]
        trial = _Trial(tid)
        if sched is not None:
            sched.on_trial_add(None, trial)
        result: dict[str, Any] = {}
        for e in range(1, epochs + 1):
            if spent >= budget:
                break
            spent += 1
            result = {"epoch": e, "training_iteration": e, "val_auc": rec["val_auc"][e - 1]}
            if result["val_auc"] > best:
                best, best_test = result["val_auc"], rec["test_auc"][e - 1]
            trace.append((spent, best, best_test))
            searcher.on_trial_result(tid, result)
            if sched is not None and sched.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                break
        if sched is not None and result:
            sched.on_trial_complete(None, trial, result)
        searcher.on_trial_complete(tid, result)
    return {
        "trace": trace,
        "budget": budget,
        "n_trials": n_trials,
        "final_best": best,
        "final_test": best_test,
    }


def epochs_to_reach(trace: list[tuple[int, float, float]], target: float) -> float:
    for spent, best, _ in trace:
        if best >= target - 1e-12:
            return float(spent)
    return math.inf


def best_at(trace: list[tuple[int, float, float]], epochs: float) -> tuple[float, float]:
    got = [(b, t) for s, b, t in trace if s <= epochs]
    return got[-1] if got else (math.nan, math.nan)


def _q(values: list[float], qs: tuple[float, ...]) -> list[float]:
    finite = [v for v in values if math.isfinite(v)]
    return [float(np.quantile(finite, q)) if finite else math.nan for q in qs]


def summarise(runs: dict[str, list[dict[str, Any]]], seeds: int) -> dict[str, Any]:
    budget = runs["random"][0]["budget"]
    out: dict[str, Any] = {"budget_epochs": budget, "seeds": seeds, "reach": {}, "best_vs_budget": {}}
    targets = [r["final_best"] for r in runs["random"]]
    for m in METHODS:
        reach = [epochs_to_reach(r["trace"], t) / budget for r, t in zip(runs[m], targets)]
        ranked = sorted(reach)  # inf (never reached) sorts last: the median is honest about misses
        med = (
            ranked[len(ranked) // 2]
            if len(ranked) % 2
            else 0.5 * (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2])
        )
        p10, p90 = (float(np.quantile(np.array(ranked), q, method="inverted_cdf")) for q in (0.1, 0.9))
        out["reach"][m] = {
            "median_fraction": med,
            "p10": p10,
            "p90": p90,
            "not_reached": sum(math.isinf(v) for v in reach),
            "trials_started_median": float(np.median([r["n_trials"] for r in runs[m]])),
        }
        rows = {}
        for f in FRACTIONS:
            vals = [best_at(r["trace"], f * budget) for r in runs[m]]
            rows[f] = {
                "val": _q([v for v, _ in vals], (0.25, 0.5, 0.75)),
                "test": _q([t for _, t in vals], (0.25, 0.5, 0.75)),
            }
        out["best_vs_budget"][m] = rows
    return out


def _fmt_frac(v: float) -> str:
    return "never" if math.isinf(v) else f"{v:.2f}"


def print_report(table: Mapping[str, Any], summary: Mapping[str, Any], wall: float) -> None:
    vals = [max(r["val_auc"]) for r in table["configs"]]
    print(
        f"\ntable: {len(table['configs'])} {table['family']} configurations x {table['settings']['epochs']} epochs; "
        f"best-epoch val AUC over the grid: min {min(vals):.3f} median {np.median(vals):.3f} max {max(vals):.3f}"
    )
    b = summary["budget_epochs"]
    print(
        f"budget per search: {b} epochs; {summary['seeds']} seeds per method; replay wall time {wall:.0f} s\n"
    )
    print("epochs to reach random search's final best val AUC (same seed), as a fraction of the budget:")
    print(f"{'method':<10} {'median':>7} {'p10':>6} {'p90':>6} {'never':>6} {'trials (median)':>16}")
    for m, r in summary["reach"].items():
        print(
            f"{m:<10} {_fmt_frac(r['median_fraction']):>7} {_fmt_frac(r['p10']):>6} {_fmt_frac(r['p90']):>6} "
            f"{r['not_reached']:>6} {r['trials_started_median']:>16.0f}"
        )
    print(
        "\nbest val AUC found vs epochs spent, median [IQR] over seeds (median test AUC of that configuration; "
        f"test partition: {table.get('partitions', {}).get('test', '?')}):"
    )
    head = "".join(f"{f'{int(f * 100)}% ({round(f * b)} ep)':>30}" for f in FRACTIONS)
    print(f"{'method':<10}{head}")
    for m, rows in summary["best_vs_budget"].items():
        cells = []
        for f in FRACTIONS:
            v, t = rows[f]["val"], rows[f]["test"]
            cells.append(f"{v[1]:.3f} [{v[0]:.3f}, {v[2]:.3f}] ({t[1]:.3f})")
        print(f"{m:<10}" + "".join(f"{c:>30}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small table and 20 seeds (< 3 min on 2 cores)")
    ap.add_argument(
        "--family", default="replay_cnn", choices=sorted(GRIDS), help="family whose curves are recorded"
    )
    ap.add_argument("--epochs", type=int, help="epoch budget of a full trial (quick 4, full 8)")
    ap.add_argument("--size", type=int, help="network input size (quick 32, full 64)")
    ap.add_argument("--patients", type=int, help="phantom patients (quick 10, full 24)")
    ap.add_argument("--slices", type=int, default=8, help="phantom slices per scan (default 8)")
    ap.add_argument("--seeds", type=int, help="sampler seeds per method (quick 20, full 30; at least 20)")
    ap.add_argument(
        "--trials", type=int, help="full trials of random search per seed (default: a third of the grid)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads while recording (default 1)")
    ap.add_argument(
        "--out", type=Path, default=Path("bench_out/replay"), help="where the curve table is cached"
    )
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    q = args.quick
    args.epochs = args.epochs or (4 if q else 8)
    args.size = args.size or (32 if q else 64)
    args.phantom_size = max(64, args.size)
    args.patients = args.patients or (10 if q else 24)
    args.seeds = args.seeds or (20 if q else 30)
    grid = GRIDS[args.family]["quick" if q else "full"]
    n_configs = len(configurations(grid))
    args.trials = args.trials or max(4, n_configs // 3)
    logging.getLogger("dvt_search").setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = _settings(args)
    key = hashlib.sha256(json.dumps({**settings, "grid": grid}, sort_keys=True).encode()).hexdigest()[:12]
    table = record(args, grid, args.out / f"curves-{key}.json")
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory(prefix="replay-studies-") as work:
        for m in METHODS:
            for s in range(args.seeds):
                runs[m].append(replay(m, s, table, grid, args.trials, Path(work)))
    summary = summarise(runs, args.seeds)
    print_report(table, summary, time.perf_counter() - t0)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"settings": settings, "key": key, "summary": summary}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What slice context alone buys: each CNN family with ``context_slices`` 0 vs 2, same data, same budget.

On a phantom (the ``standard`` preset by default) every family is trained once per context setting with the
same knobs, the same seed, the same epochs and the same per-configuration CPU time budget (training stops
after the epoch in which the budget ran out), then scored on the validation and test partitions. AUCs
carry the clustered (Obuchowski) 95 % interval by patient (:func:`dvt_search.stats.clustered.clustered_auc_ci`,
the project's primary rule). The ``vein_cascade`` family is included when it is registered
(:func:`dvt_search.families.names`), skipped otherwise; a family without a ``context_slices`` knob runs
once, with its own defaults (row ``k = own``).

Full run (the figure the issue asks for; about 1-2 h on 2 CPU cores; a GPU is far faster)::

    python bench/bench_context.py --size 256 --patients 24 --slices-per-scan 24 --epochs 4 \\
        --cpu-budget-s 900 --threads 2 --out reports/bench_context_256.json

Measured (2 CPU cores shared with other work; the run that wrote ``bench/results/bench_context_256.json``;
the first row came from a first invocation, the rest from ``--resume`` with the same arguments)::

    python bench/bench_context.py --size 256 --patients 60 --slices-per-scan 6 --epochs 4 --input-size 64 \
        --crop-size 32 --cpu-budget-s 240 --threads 2 --out bench/results/bench_context_256.json --resume

    standard preset 256^2, 60 patients: 535 train / 138 val / 143 test slices, 10 test patients;
    budget: <= 4 epochs, stop after the epoch in which 240 CPU-s were spent (2 threads);
    whole-slice families at 64^2 input, the cascade's crops (32 px) at the native 256^2
    family          k  epochs  CPU-s   val AUC [95% clustered]  test AUC [95% clustered]
    vein_cascade    0  4       296     0.846 [0.68, 0.93]       0.867 [0.76, 0.93]
    vein_cascade    2  4       248     0.860 [0.73, 0.93]       0.845 [0.74, 0.91]
    vgg16           0  2       431     0.534 [0.41, 0.66]       0.500 [0.40, 0.60]
    vgg16           2  3       357     0.499 [0.33, 0.67]       0.488 [0.44, 0.54]
    densenet161     0  2       269     0.609 [0.48, 0.72]       0.562 [0.46, 0.65]
    densenet161     2  2       281     0.531 [0.38, 0.68]       0.537 [0.42, 0.65]
    multitask_unet  0  1       254     0.494 [0.37, 0.62]       0.483 [0.38, 0.59]
    multitask_unet  2  1       508     0.513 [0.39, 0.64]       0.492 [0.38, 0.60]
    patch_resnet50  0  2       288     0.523 [0.41, 0.64]       0.515 [0.40, 0.63]
    patch_resnet50  2  2       276     0.586 [0.40, 0.75]       0.510 [0.45, 0.57]
    paired clustered tests on test (Holm over the five):
      context 2 vs 0: vgg16 -0.012 [-0.137, +0.112] p 0.83; densenet161 -0.024 [-0.081, +0.032] p 0.35;
                      multitask_unet +0.009 [-0.024, +0.042] p 0.57; patch_resnet50 -0.005 [-0.122, +0.111] p 0.92
      vein_cascade (best val: k=2) vs the best whole-slice by val (densenet161 k=0):
                      +0.283 [+0.136, +0.430], p 0.0020 (Holm 0.0098)

Read it for what it is: at this CPU budget (one to four epochs) no whole-slice family learns (every test
interval holds 0.5) and context cannot show an effect on models that learn nothing; the cascade, whose
stage 2 sees 32-px native crops instead of a 64^2 thumbnail of the slice, does. A GPU budget is needed to
say what context buys the whole-slice families.

Smoke run (proves it works, < 2 min on 2 cores)::

    python bench/bench_context.py --size 64 --patients 6 --slices-per-scan 6 --epochs 1 \\
        --families vgg16 --train-rows 48 --cpu-budget-s 60

The budget is stated in the output header (threads x seconds per configuration). Nothing here is a
timed assertion; the numbers are what one run measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dvt_search import families  # noqa: E402
from dvt_search.data.dataset import SliceDataset, build_datasets, spec_at_input, spec_for  # noqa: E402
from dvt_search.data.phantom import generate  # noqa: E402
from dvt_search.data.schema import read_manifest  # noqa: E402
from dvt_search.data.splits import make_splits  # noqa: E402
from dvt_search.families.base import FitData  # noqa: E402
from dvt_search.stats.clustered import clustered_auc_ci, clustered_test  # noqa: E402
from dvt_search.stats.measures import holm  # noqa: E402

CNN = ("vgg16", "densenet161", "multitask_unet", "patch_resnet50")
#: Knobs that keep a CPU run affordable (the same for k = 0 and k = 2).
FAST: dict[str, dict[str, Any]] = {"vgg16": {"head": "gap", "batch_norm": True}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="phantom slice side and network input (default 256)")
    p.add_argument("--patients", type=int, default=16, help="phantom patients (default 16)")
    p.add_argument("--slices-per-scan", type=int, default=16, help="mean slices per scan (default 16)")
    p.add_argument("--preset", default="standard", help="phantom preset (default standard)")
    p.add_argument(
        "--data", type=Path, default=None, help="an existing manifest.parquet instead of a new phantom"
    )
    p.add_argument(
        "--families", default=None, help="comma-separated (default: the CNN families + vein_cascade)"
    )
    p.add_argument("--context", default="0,2", help="context_slices values to compare (default 0,2)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per configuration (default 2)")
    p.add_argument(
        "--cpu-budget-s",
        type=float,
        default=600.0,
        help="training CPU seconds per configuration (process CPU time, all threads; robust to other load)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=0,
        help="whole-slice families' own input_size (0 = the store's --size); the cascade crops at --size",
    )
    p.add_argument("--crop-size", type=int, default=0, help="the cascade's crop_size (0 = its default)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the CPU budget's cores)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-rows", type=int, default=0, help="cap on training slices (0 = all)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the configurations --out already holds from a run with the same data/budget arguments",
    )
    return p.parse_args(argv)


def default_families() -> list[str]:
    names = families.names()
    return [f for f in (*CNN, "vein_cascade") if f in names]


def interval(y: np.ndarray, s: np.ndarray, patients: np.ndarray) -> dict[str, Any]:
    ci = clustered_auc_ci(y, s, patients)
    return {"auc": ci.estimate, "low": ci.low, "high": ci.high, "note": ci.note}


def run_one(
    name: str, k: int | None, data: dict[str, SliceDataset], train: SliceDataset, args: argparse.Namespace
) -> dict[str, Any]:
    fam = families.get(name)
    params: dict[str, Any] = {**FAST.get(name, {}), "seed": args.seed}
    defaults = fam.default_params()
    for key, value in (("batch_size", args.batch_size), ("lr", args.lr), ("max_epochs", args.epochs)):
        if key in defaults:
            params[key] = value
    if k is not None:
        params["context_slices"] = k
    if args.input_size and name in CNN and "input_size" in defaults:
        params["input_size"] = args.input_size
    if args.crop_size and "crop_size" in defaults:
        params["crop_size"] = args.crop_size
    spec = spec_at_input(fam.model_spec(params, spec_for(train, seed=args.seed)), train, seed=args.seed)
    model = fam.build(params, spec)
    start, cpu0 = time.perf_counter(), time.process_time()

    def budget(report: Any, _model: Any) -> bool:
        return time.process_time() - cpu0 > args.cpu_budget_s

    kwargs = fam.fit_options(device=args.device, cpus=args.threads, use_cache=False)
    model.fit(FitData(train=train, val=data["val"]), args.epochs, callback=budget, **kwargs)
    row: dict[str, Any] = {
        "family": name,
        "context_slices": "own" if k is None else k,
        "params": {key: params[key] for key in sorted(params)},
        "epochs": model.epochs_done,
        "train_s": round(time.perf_counter() - start, 1),
        "train_cpu_s": round(time.process_time() - cpu0, 1),
    }
    for part in ("val", "test"):
        ds = data[part]
        scores = np.asarray(model.predict(ds), np.float64)
        row[part] = interval(ds.labels, scores, ds.patient_ids)
        row[f"{part}_scores"] = scores.tolist()
    return row


def paired(a: dict[str, Any], b: dict[str, Any], test: SliceDataset) -> dict[str, Any]:
    """Clustered (by patient) paired test of test AUC(a) - AUC(b) on the same test slices."""
    t = clustered_test(test.labels, a["test_scores"], b["test_scores"], test.patient_ids)
    return {
        "a": f"{a['family']} k={a['context_slices']}",
        "b": f"{b['family']} k={b['context_slices']}",
        "diff": t.diff.estimate,
        "low": t.diff.low,
        "high": t.diff.high,
        "p": t.p,
    }


def comparisons(rows: list[dict[str, Any]], test: SliceDataset) -> list[dict[str, Any]]:
    """Each CNN family's largest context vs its k = 0, and the cascade vs the best whole-slice configuration.

    The best whole-slice configuration is chosen on validation AUC (never on test). p values are two-sided;
    ``p_holm`` adjusts them over the comparisons listed here (Holm).
    """
    out: list[dict[str, Any]] = []
    by_family: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_family.setdefault(r["family"], []).append(r)
    for name in CNN:
        ks = [r for r in by_family.get(name, []) if isinstance(r["context_slices"], int)]
        if len(ks) >= 2:
            lo = min(ks, key=lambda r: r["context_slices"])
            hi = max(ks, key=lambda r: r["context_slices"])
            out.append(
                {
                    "what": f"{name}: context {hi['context_slices']} vs {lo['context_slices']}",
                    **paired(hi, lo, test),
                }
            )
    whole = [r for name in CNN for r in by_family.get(name, []) if np.isfinite(r["val"]["auc"])]
    cascade = [r for r in by_family.get("vein_cascade", []) if np.isfinite(r["val"]["auc"])]
    if whole and cascade:
        best = max(whole, key=lambda r: r["val"]["auc"])
        casc = max(cascade, key=lambda r: r["val"]["auc"])
        out.append(
            {"what": "vein_cascade (best val) vs the best whole-slice (val)", **paired(casc, best, test)}
        )
    # a non-estimable comparison stays in the family as p = 1 (as in the report's own Holm family)
    adjusted = holm([c["p"] if np.isfinite(c["p"]) else 1.0 for c in out]) if out else []
    for c, p_holm in zip(out, adjusted, strict=True):
        c["p_holm"] = float(p_holm)
    return out


def fmt(r: dict[str, Any], part: str) -> str:
    a = r[part]
    if not np.isfinite(a["auc"]):
        return "   n/a            "
    ci = f"[{a['low']:.2f}, {a['high']:.2f}]" if np.isfinite(a["low"]) else "[n/a]"
    return f"{a['auc']:.3f} {ci:<12}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    names = args.families.split(",") if args.families else default_families()
    contexts = [int(v) for v in args.context.split(",")]
    with tempfile.TemporaryDirectory(prefix="dvt-bench-context-") as tmp:
        if args.data is None:
            t = time.perf_counter()
            manifest = generate(
                Path(tmp) / "phantom",
                patients=args.patients,
                seed=args.seed,
                size=args.size,
                slices_per_scan=args.slices_per_scan,
                preset=args.preset,
            )
            print(
                f"phantom {args.preset} {args.size}^2, {args.patients} patients in {time.perf_counter() - t:.0f} s"
            )
        else:
            manifest = args.data
        splits_path = make_splits(read_manifest(manifest), seed=args.seed).save(Path(tmp) / "splits.json")
        data = build_datasets(manifest, splits_path, size=args.size)
        train = data["train"]
        if args.train_rows and len(train) > args.train_rows:
            step = -(-len(train) // args.train_rows)
            train = SliceDataset(train.frame.iloc[::step], train.root, size=train.size, windows=train.windows)
        print(
            f"{len(train)} train / {len(data['val'])} val / {len(data['test'])} test slices; "
            f"test patients {len(set(data['test'].patient_ids))}"
        )
        print(
            f"budget per configuration: {args.epochs} epoch(s), training stops after the epoch in which "
            f"{args.cpu_budget_s:.0f} CPU-s were spent ({args.threads} torch thread(s), device {args.device}); "
            f"whole-slice input {args.input_size or args.size}^2, cascade crops at {args.size}^2 "
            f"(crop_size {args.crop_size or 'default'}); same knobs and seed for every k"
        )
        rows = done_rows(args)
        done = {(r["family"], r["context_slices"]) for r in rows}
        if rows:
            print(f"resumed {len(rows)} configuration(s) from {args.out}")
        for name in names:
            if name not in families.names():
                print(f"{name}: not registered, skipped")
                continue
            ks: list[int | None] = (
                list(contexts) if "context_slices" in families.get(name).default_params() else [None]
            )
            for k in ks:
                if (name, "own" if k is None else k) in done:
                    continue
                rows.append(run_one(name, k, data, train, args))
                r = rows[-1]
                print(
                    f"{r['family']:<15} k={r['context_slices']!s:<4} epochs {r['epochs']}  "
                    f"{r['train_cpu_s']:>7.1f} CPU-s {r['train_s']:>7.1f} s  "
                    f"val AUC {fmt(r, 'val')} test AUC {fmt(r, 'test')}",
                    flush=True,
                )
                write(args, rows, [])
        comps = comparisons(rows, data["test"])
        for c in comps:
            print(
                f"{c['what']}: test AUC difference {c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
                f"p {c['p']:.3g} (Holm {c['p_holm']:.3g})"
            )
        write(args, rows, comps)
    return 0


#: Arguments that must match for ``--resume`` to reuse a row (the data, the budget, the knobs).
SAME = (
    "size", "patients", "slices_per_scan", "preset", "data", "epochs", "cpu_budget_s", "threads",
    "batch_size", "lr", "train_rows", "device", "seed", "input_size", "crop_size",
)  # fmt: skip


def done_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of an earlier run in ``--out`` (with ``--resume``), refused when its arguments differ."""
    if not args.resume or args.out is None or not args.out.exists():
        return []
    doc = json.loads(args.out.read_text())
    now = {k: str(v) for k, v in vars(args).items()}
    differ = [k for k in SAME if doc["args"].get(k) != now[k]]
    if differ:
        raise SystemExit(f"--resume: {args.out} was written with other {', '.join(differ)}; not mixing them")
    return list(doc["rows"])


def write(args: argparse.Namespace, rows: list[dict[str, Any]], comps: list[dict[str, Any]]) -> None:
    """The results so far as JSON (rewritten after every configuration, so a stopped run keeps its rows)."""
    if args.out is None:
        return
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "comparisons": comps}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=float))
    tmp.replace(args.out)


if __name__ == "__main__":
    raise SystemExit(main())

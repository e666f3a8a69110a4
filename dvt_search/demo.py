"""``dvt-search demo``: the whole pipeline on the bundled phantom, sized for a laptop (``make demo``).

Stages: phantom -> validate -> split (+ summary) -> search over every family on an embedded local Ray ->
select -> report -> export -> predict on a phantom DICOM series. Each stage is the same code path the
corresponding subcommand runs; the demo only picks small sizes.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

#: Default sizes (README's demo section: what they buy and cost on 2 CPU cores). 60 patients give the paper
#: split 11 test patients (>= 8 for the clustered statistics); 4 slices per scan keep an epoch short.
DEMO_PATIENTS = 60
DEMO_SLICES = 4
#: One paper trial of one epoch for every family by default; the light learners get more
#: (CPU s per trial at the defaults, measured: sift ~8, vein_cascade ~5 per epoch, multitask_unet ~45 per
#: epoch, patch_resnet50 ~55, densenet161 ~100, vgg16 ~200 for its one epoch).
DEMO_TRIALS = 1
DEMO_EPOCHS = 1
DEMO_BUDGET = "sift_bow_svm=4,multitask_unet=2x3,vein_cascade=4x6"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the bundled phantom (small sizes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="working directory (default: demo_out)")
    p.add_argument(
        "--patients", type=int, default=DEMO_PATIENTS, help=f"phantom patients (default: {DEMO_PATIENTS})"
    )
    p.add_argument("--size", type=int, default=64, help="phantom slice size in pixels (default: 64)")
    p.add_argument(
        "--slices-per-scan",
        type=int,
        default=DEMO_SLICES,
        help=f"mean slices per scan (default: {DEMO_SLICES})",
    )
    p.add_argument(
        "--preset",
        default="easy",
        choices=("easy", "standard"),
        help="phantom preset (default: easy; at 64 px the standard femoral vein is under 2 px wide)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--trials", type=int, default=DEMO_TRIALS, help=f"trials per family (default: {DEMO_TRIALS})"
    )
    p.add_argument(
        "--max-epochs", type=int, default=DEMO_EPOCHS, help=f"epochs per CNN trial (default: {DEMO_EPOCHS})"
    )
    p.add_argument(
        "--budget",
        default=DEMO_BUDGET,
        metavar="FAMILY=TRIALS[xEPOCHS],...",
        help="per-family trials/epochs, as for `dvt-search search --budget` (default: %(default)s; entries for "
        "families not searched are dropped; '' for none)",
    )
    p.add_argument("--family", default="all", help="families to search: all or NAME[,NAME] (default: all)")
    p.add_argument("--no-search", action="store_true", help="stop after the data stages")
    p.set_defaults(func=run)


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from .data import phantom, splits, validate
    from .data.schema import read_manifest

    out: Path = args.out
    data_dir = out / "data"
    t_all = time.perf_counter()

    t = _stage("1. phantom")
    manifest = data_dir / "manifest.parquet"
    if manifest.is_file():
        print(f"reusing {manifest}")
    else:
        manifest = phantom.generate(
            data_dir,
            patients=args.patients,
            seed=args.seed,
            size=args.size,
            slices_per_scan=args.slices_per_scan,
            preset=args.preset,
        )
    print(f"manifest: {manifest} ({time.perf_counter() - t:.1f} s)")

    t = _stage("2. validate")
    report = validate.validate_manifest(manifest)
    print(report.format())
    if not report.ok:
        return 1

    _stage("3. split (paper rule, patient-disjoint)")
    df = read_manifest(manifest)
    sp = splits.make_splits(df, seed=args.seed, anatomy=("femoral",))
    splits_path = sp.save(data_dir / "splits.json")
    print(f"splits: {splits_path} (hash {sp.hash[:12]})")
    print(splits.format_summary(splits.summarize(df, sp)))

    if args.no_search or importlib.util.find_spec("dvt_search.runtime.driver") is None:
        print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s (data stages only)")
        return 0
    return _search_and_after(args, manifest, splits_path, t_all)


def _search_and_after(args: argparse.Namespace, manifest: Path, splits_path: Path, t_all: float) -> int:
    from .cli import main as cli_main

    run_root = args.out / "runs"
    run_name = "demo"
    _stage("4. search (embedded local Ray; dashboard on 127.0.0.1)")
    rc = cli_main(
        [
            "search",
            "--data",
            str(manifest),
            "--splits",
            str(splits_path),
            "--family",
            args.family,
            "--trials",
            str(args.trials),
            "--max-epochs",
            str(args.max_epochs),
            *_budget_args(args.budget, args.family),
            "--size",
            str(args.size),
            "--storage",
            str(run_root),
            "--name",
            run_name,
            "--seed",
            str(args.seed),
        ]
    )
    if rc:
        return rc
    run_dir = run_root / run_name
    if importlib.util.find_spec("dvt_search.selection.cli") is None:
        print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s; run directory: {run_dir}")
        return 0
    for title, argv in (
        ("5. select", ["select", str(run_dir)]),
        ("6. report", ["report", str(run_dir), "--out", str(Path("reports") / run_name)]),
        ("7. export", ["export", str(run_dir), "--out", str(args.out / "export")]),
    ):
        _stage(title)
        rc = cli_main(argv)
        if rc:
            return rc
    rc = _predict_on_dicom(args, manifest, splits_path, run_dir)
    if rc:
        return rc
    print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s")
    print(f"report: {Path('reports') / run_name / 'report.html'}")
    print(f"exported winners: {args.out / 'export'}")
    return 0


def _budget_args(budget: str, family: str) -> list[str]:
    """``["--budget", ...]`` for the demo's searched families (entries for other families are left out)."""
    from .families import names

    searched = set(names()) if family == "all" else {f.strip() for f in family.split(",")}
    kept = [e.strip() for e in budget.split(",") if e.strip() and e.partition("=")[0].strip() in searched]
    return ["--budget", ",".join(kept)] if kept else []


def _predict_on_dicom(args: argparse.Namespace, manifest: Path, splits_path: Path, run_dir: Path) -> int:
    """Write one test scan of the phantom as a DICOM series and run the overall winner on it."""
    from .cli import main as cli_main
    from .data.phantom import export_scan_dicom
    from .data.splits import load_splits
    from .selection.documents import read_selection

    _stage("8. predict on a phantom DICOM series")
    selection = read_selection(run_dir)
    winner = (selection.get("overall") or {}).get("family")
    if not winner:
        print("no overall winner was selected; skipping predict")
        return 0
    scan = load_splits(splits_path).partitions["test"][0]
    series = args.out / "dicom" / "test_scan"
    export_scan_dicom(manifest, scan, series)
    print(f"wrote test scan as a DICOM series: {series}")
    return cli_main(
        [
            "predict",
            "--model",
            str(args.out / "export" / winner),
            "--dicom",
            str(series),
            "--out",
            str(args.out / "prediction"),
        ]
    )

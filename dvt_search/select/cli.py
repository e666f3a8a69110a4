"""``dvt-search select | report | export | pull | predict``: from a finished search to a deployable model.

Only argument parsing lives here; torch, pandas and matplotlib are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_EPILOG = """\
typical flow:
  dvt-search select runs/lab-1                       # leaderboard, winners on validation, test once
  dvt-search report runs/lab-1 --out reports/lab-1   # report.html + report.md
  dvt-search export runs/lab-1 --out models/lab-1    # TorchScript / ONNX / SIFT npz + model cards
  dvt-search pull s3://bucket/runs/lab-1 --out runs/lab-1   # fetch a cluster run first
  dvt-search predict --model models/lab-1/multitask_unet --dicom /data/new_series --out pred/
"""


def _fail(exc: Exception) -> int:
    log.debug("command failed", exc_info=exc)
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _sensitivities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"sensitivities must be in (0, 1], got {text!r}")
    return values


def _select(args: argparse.Namespace) -> int:
    from .selector import select_run

    try:
        doc = select_run(
            args.run,
            metric=args.metric,
            mode=args.mode,
            manifest=args.manifest,
            evaluate_test=not args.no_test,
            sensitivities=args.sensitivities,
            n_resamples=args.resamples,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
        )
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        return _fail(exc)
    print(
        f"{doc['n_trials']} trials in run {doc['run']}; selected by validation {doc['metric']} ({doc['mode']}):"
    )
    for fam, c in doc["families"].items():
        w = c["winner"]
        what = f"trial {w['trial_id']} {doc['metric']}={w['value']:.4f}" if w else c["note"]
        print(f"  {fam:<16} {c['n_trials']:>4} tried  {what}")
    ov = doc["overall"]
    print(f"overall: {ov['family']} trial {ov['trial_id']}" if ov else "overall: no usable model")
    if doc["test"]["evaluated"]:
        from .compare import read_comparison

        for line in read_comparison(args.run)["verdict"]:
            print(f"  {line}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        html, md = write_report(args.run, args.out, manifest=args.manifest, cam_per_family=args.cam)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(exc)
    print(f"wrote {html} and {md}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_run

    try:
        dirs = export_run(args.run, args.out, families=args.family or None)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(exc)
    for d in dirs:
        info = json.loads((d / "export.json").read_text())
        onnx = "onnx ok" if info["onnx"]["ok"] else "no onnx"
        print(f"exported {info['family']} ({info['kind']}, {onnx}) -> {d}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .pull import pull

    try:
        out = pull(args.run_uri, args.out)
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(f"pulled into {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from .predict import format_summary, predict_series

    try:
        summary = predict_series(
            args.model, args.dicom, args.out, batch_size=args.batch_size, device=args.device
        )
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(format_summary(summary, pd.read_csv(Path(args.out) / "slices.csv")))
    print(f"wrote {Path(args.out) / 'slices.csv'} and {len(summary['heatmaps'])} heat map(s)")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``select``, ``report``, ``export``, ``pull`` and ``predict`` commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "select",
        help="pick the best trial per family on validation, then score test once",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--metric", help="validation metric to select by (default: the run's, val_auc)")
    p.add_argument(
        "--mode", choices=("max", "min"), help="maximise or minimise the metric (default: the run's)"
    )
    p.add_argument("--manifest", type=Path, help="manifest path when it moved since the search")
    p.add_argument("--no-test", action="store_true", help="choose winners only; do not touch the test set")
    p.add_argument(
        "--sensitivities",
        type=_sensitivities,
        default=[0.8, 0.9],
        help="fixed-sensitivity operating points chosen on validation (default 0.8,0.9)",
    )
    p.add_argument("--resamples", type=int, default=2000, help="patient bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--device", help="torch device for scoring (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="scoring batch size (default: the trial's)")
    p.set_defaults(func=_select)

    p = subparsers.add_parser("report", help="HTML + Markdown comparison report of a selected run")
    p.add_argument("run", type=Path, help="run directory (after `dvt-search select`)")
    p.add_argument("--out", type=Path, help="output directory (default: reports/<run name>)")
    p.add_argument("--manifest", help="manifest path for the CAM overlays when it moved")
    p.add_argument("--cam", type=int, default=4, help="mis-classified slices shown per CNN model (default 4)")
    p.set_defaults(func=_report)

    p = subparsers.add_parser(
        "export", help="deployable artifacts (TorchScript, ONNX, SIFT npz) + model cards"
    )
    p.add_argument("run", type=Path, help="run directory (after `dvt-search select`)")
    p.add_argument("--out", type=Path, required=True, help="output directory (one folder per family)")
    p.add_argument("--family", action="append", help="export only this family (repeatable)")
    p.set_defaults(func=_export)

    p = subparsers.add_parser(
        "pull", help="fetch a run's results and winning checkpoints from cluster storage"
    )
    p.add_argument("run_uri", help="run directory: local path, file://, s3://, gs://, hdfs:// ...")
    p.add_argument("--out", type=Path, required=True, help="local directory to create or refresh")
    p.set_defaults(func=_pull)

    p = subparsers.add_parser("predict", help="score a DICOM CT series with an exported model")
    p.add_argument(
        "--model", type=Path, required=True, help="an exported model directory (export.json inside)"
    )
    p.add_argument("--dicom", type=Path, required=True, help="folder holding one DICOM CT series")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("dvt-prediction"),
        help="output folder for slices.csv, summary.json, heat maps (default ./dvt-prediction)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_predict)

"""``dvt-search export | pull | predict``: deployable winners, cluster runs fetched, new series scored.

Only argument parsing lives here; heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from dvt_search.cli_util import fail as _fail

log = logging.getLogger(__name__)


def _export(args: argparse.Namespace) -> int:
    from dvt_search.deploy.export import export_run

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
    from dvt_search.deploy.pull import pull

    try:
        out = pull(args.run_uri, args.out)
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(f"pulled into {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from dvt_search.deploy.predict import format_summary, predict_series

    try:
        summary = predict_series(
            args.model,
            args.dicom,
            args.out,
            batch_size=args.batch_size,
            device=args.device,
            series=args.series,
        )
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(format_summary(summary, pd.read_csv(Path(args.out) / "slices.csv")))
    print(f"wrote {Path(args.out) / 'slices.csv'} and {len(summary['heatmaps'])} heat map(s)")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``export``, ``pull``, ``predict`` command(s)."""
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
    p.add_argument(
        "--dicom",
        type=Path,
        required=True,
        help="folder holding the DICOM CT series (scouts, reports and non-axial images are skipped)",
    )
    p.add_argument(
        "--series",
        metavar="INDEX_OR_KEY",
        help="which series when the folder holds several: the 1-based index or series key listed in the "
        "warning (default: the largest axial CT series)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("dvt-prediction"),
        help="output folder for slices.csv, summary.json, heat maps (default ./dvt-prediction)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_predict)

"""``dvt-search export | pull | predict``: deployable winners, cluster runs fetched, new series scored.

``predict`` scores one DICOM series or NIfTI volume (:mod:`.predict`) or a batch into a worklist
(:mod:`.worklist`).

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

    if args.batch is not None:
        return _predict_batch(args)
    if args.heatmaps:
        log.info("--heatmaps is for --batch; a single series always gets its heat maps")
    try:
        summary = predict_series(
            args.model,
            args.dicom,
            args.out,
            batch_size=args.batch_size,
            device=args.device,
            series=args.series,
            nifti=args.nifti,
        )
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(format_summary(summary, pd.read_csv(Path(args.out) / "slices.csv")))
    print(f"wrote {Path(args.out) / 'slices.csv'} and {len(summary['heatmaps'])} heat map(s)")
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    import sys

    from dvt_search.deploy.worklist import WORKLIST_CSV, WORKLIST_PARQUET, run_worklist

    if args.series is not None:
        return _fail(ValueError("--series is for --dicom; in a --batch CSV use its series column"))
    try:
        df = run_worklist(
            args.model,
            args.batch,
            args.out,
            heatmaps=args.heatmaps,
            batch_size=args.batch_size,
            device=args.device,
            echo_error=lambda line: print(line, file=sys.stderr),
        )
    except (FileNotFoundError, OSError, ValueError) as exc:
        return _fail(exc)
    print(f"wrote {Path(args.out) / WORKLIST_CSV} and {WORKLIST_PARQUET}")
    if (df["error"] != "").all():
        print("error: every series failed", file=sys.stderr)
        return 1
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

    p = subparsers.add_parser(
        "predict",
        help="score a DICOM CT series, a NIfTI volume or a batch (worklist) with an exported model",
        description="Score one series (--dicom or --nifti: slices.csv, summary.json, heat maps) or a batch "
        "(--batch: worklist.csv + worklist.parquet, one row per series). Out-of-scope series (not CT, not "
        "axial, not thigh/pelvis, soft tissue not in HU, no enhanced vessels, or no veins where the model's "
        "vein detector looks, for models that have one) are scored with a warning. "
        "Exit status: 0 when scored; with --batch, 1 only when every series failed (a failing series is "
        "an error row and the others go on); 1 on a bad model folder or input.",
    )
    p.add_argument(
        "--model", type=Path, required=True, help="an exported model directory (export.json inside)"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--dicom",
        type=Path,
        help="folder holding the DICOM CT series (scouts, reports and non-axial images are skipped)",
    )
    what.add_argument(
        "--nifti",
        type=Path,
        help="a NIfTI CT volume (.nii/.nii.gz), values taken as HU as stored; reoriented from its affine "
        "so slice 0 is the most inferior",
    )
    what.add_argument(
        "--batch",
        type=Path,
        metavar="FOLDER_OR_CSV",
        help="a folder of studies (every DICOM series and NIfTI file under it) or a CSV with a path column "
        "(+ optional series column): writes one worklist",
    )
    p.add_argument(
        "--heatmaps",
        action="store_true",
        help="with --batch: also write heat maps of positive slices (a single series always gets them)",
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
        help="output folder for slices.csv, summary.json, heat maps, or the worklist and series/<NNNN>/ "
        "of a batch (default ./dvt-prediction)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_predict)

"""``dvt-search select``: the best trial per family on validation, then the one scoring of test.

Every scoring of the test set is appended to the run's test-evaluation log. Once the test set was
evaluated, a new evaluation with other settings (metric, mode, sensitivities, specificities, resamples,
seed) or other winners, or a --no-test re-selection, is refused unless --force; the same settings with the
same winners reproduce the same numbers and are allowed (and logged).

Only argument parsing lives here; heavy libraries are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from dvt_search.cli_util import fail as _fail

log = logging.getLogger(__name__)

_EPILOG = """\
typical flow:
  dvt-search select runs/lab-1                       # leaderboard, winners on validation, test once
  dvt-search select runs/lab-1 --resamples 5000 --force   # a second, different test evaluation (logged)
  dvt-search report runs/lab-1 --out reports/lab-1   # report.html + report.md
  dvt-search export runs/lab-1 --out models/lab-1    # TorchScript / ONNX / SIFT npz + model cards
  dvt-search pull s3://bucket/runs/lab-1 --out runs/lab-1   # fetch a cluster run first
  dvt-search predict --model models/lab-1/multitask_unet --dicom /data/new_series --out pred/
"""


def _rates(text: str, what: str = "sensitivities") -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be in (0, 1], got {text!r}")
    return values


def _sensitivities(text: str) -> list[float]:
    return _rates(text, "sensitivities")


def _specificities(text: str) -> list[float]:
    return _rates(text, "specificities")


def _select(args: argparse.Namespace) -> int:
    from dvt_search.selection.run import select_run

    try:
        doc = select_run(
            args.run,
            metric=args.metric,
            mode=args.mode,
            manifest=args.manifest,
            evaluate_test=not args.no_test,
            sensitivities=args.sensitivities,
            specificities=args.specificities,
            n_resamples=args.resamples,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
            force=args.force,
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
        from dvt_search.selection.documents import read_comparison

        print(f"test set evaluation #{doc['test']['evaluation']} of this run (see the report's log)")
        for line in read_comparison(args.run)["verdict"]:
            print(f"  {line}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``select`` command(s)."""
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
    p.add_argument(
        "--specificities",
        type=_specificities,
        default=[0.9],
        help="fixed-specificity scan-level operating points chosen on validation scans (default 0.9)",
    )
    p.add_argument("--resamples", type=int, default=2000, help="patient bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--device", help="torch device for scoring (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="scoring batch size (default: the trial's)")
    p.add_argument(
        "--force",
        action="store_true",
        help="evaluate the test set again although it was evaluated before with other settings or winners "
        "(refused otherwise; every evaluation is logged and listed in the report)",
    )
    p.set_defaults(func=_select)

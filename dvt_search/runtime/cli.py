"""``dvt-search search``: the distributed hyperparameter search (Ray Tune + Optuna + ASHA).

Only argument parsing lives here; Ray, torch and Optuna are imported inside the handler.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

_EPILOG = """\
examples:
  dvt-search search --data data/manifest.parquet --family all --trials 20 --max-epochs 10 --storage runs
  dvt-search search --data m.parquet --splits splits.json --family vgg16,multitask_unet --trials 50 \\
      --max-epochs 30 --gpus-per-trial 0.25 --storage /nfs/runs --name lab-1 --address auto
  dvt-search search --data m.parquet --family all --trials 8 --max-epochs 6 \
      --budget vgg16=2x3,densenet161=2x3,sift_bow_svm=12 --storage runs
  dvt-search search --data m.parquet --storage runs --name lab-1 --resume

--budget FAMILY=TRIALS[xEPOCHS] overrides --trials / --max-epochs for one family (FAMILY=xEPOCHS: epochs
only); give several entries separated by commas or repeat the flag. Epochs do not apply to sift_bow_svm
(one-shot trials).

The run directory (<storage>/<name>/) holds run.json, splits.json, search-space snapshots, the Optuna
journal (optuna-dashboard <run>/optuna.journal) and one record per trial; `dvt-search select` reads it.
"""


def _augment(text: str) -> dict[str, Any]:
    """``hflip_p=0.5,rotation_deg=10,scale_range=0.9:1.1`` → Augment fields."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--augment: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = [float(v) for v in value.split(":")] if ":" in value else float(value)
    return out


def _windows(text: str) -> list[list[float]]:
    """``40:400,80:200`` → ``[[40, 400], [80, 200]]``."""
    try:
        return [[float(x) for x in w.split(":")] for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--windows: expected LEVEL:WIDTH[,LEVEL:WIDTH], got {text!r}"
        ) from None


def _gpus(text: str) -> float | str:
    """``auto`` or a number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"--gpus-per-trial: expected a number >= 0 or auto, got {text!r}")
    return value


def _budget(text: str) -> dict[str, tuple[int | None, int | None]]:
    """``vgg16=2x1,multitask_unet=4`` -> per-family (trials, epochs) (see ``parse_budget``)."""
    from .options import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _loader_workers(text: str) -> int | None:
    """``auto`` -> ``None`` (resolved from ``--cpus-per-trial``), else an int >= 0."""
    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"--loader-workers: expected an integer >= 0 or auto, got {text!r}")
    return n


def register(subparsers: Any) -> None:
    """Add the ``search`` command."""
    p = subparsers.add_parser(
        "search",
        help="distributed hyperparameter search over the model families (Ray Tune + Optuna + ASHA)",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        dest="manifest",
        required=True,
        type=Path,
        metavar="MANIFEST",
        help="manifest (.parquet or .csv)",
    )
    p.add_argument(
        "--splits", type=Path, help="splits.json (default: create seeded splits in the run directory)"
    )
    p.add_argument(
        "--family",
        dest="families",
        type=lambda s: [s],
        default=["all"],
        help="all, or family names separated by commas (default: all)",
    )
    p.add_argument("--trials", type=int, help="trials per family (default: 10; --resume: the run's)")
    p.add_argument(
        "--max-epochs", type=int, help="epoch budget of a full trial (default: 10; --resume: the run's)"
    )
    p.add_argument(
        "--budget",
        type=_budget,
        action="append",
        default=[],
        metavar="FAMILY=TRIALS[xEPOCHS],...",
        help="per-family trials (and epochs) overriding --trials/--max-epochs, e.g. vgg16=2x1,multitask_unet=4 "
        "(repeatable; --resume: must match the run's)",
    )
    p.add_argument(
        "--storage", required=True, type=Path, help="where run directories live (shared on a cluster)"
    )
    p.add_argument("--name", help="run name (default: search-<timestamp>; --resume: the newest run)")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run (same studies, same budget)"
    )
    p.add_argument("--address", help="join a running Ray cluster ('auto' or host:port); default: local Ray")
    p.add_argument(
        "--size",
        type=int,
        default=512,
        help="network input side in pixels (default: 512); a family's input_size param overrides it",
    )
    p.add_argument(
        "--windows",
        type=_windows,
        default=[[40.0, 400.0]],
        help="HU windows LEVEL:WIDTH,... (default 40:400)",
    )
    p.add_argument(
        "--augment", type=_augment, default={}, help="training augmentation, e.g. hflip_p=0.5,rotation_deg=10"
    )
    p.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (per worker with ray-train)"
    )
    p.add_argument(
        "--gpus-per-trial",
        type=_gpus,
        default=0.0,
        metavar="N|auto",
        help="GPUs per trial (per worker); fractions pack trials. auto: measure each batch size's peak GPU "
        "memory once (a few real steps on a GPU node, kept in <run>/gpu_memory.json) and give each trial "
        "the smallest 1/k of a GPU it fits with a 15%% margin + 0.75 GiB per process. Any trial that runs "
        "out of GPU memory fails at once (not retried)",
    )
    p.add_argument(
        "--train-workers", type=int, default=1, help="Ray Train DDP workers per CNN trial (default: 1)"
    )
    p.add_argument(
        "--trainer",
        choices=("auto", "direct", "ray-train"),
        default="auto",
        help="auto (default): Ray Train DDP only when --train-workers > 1, else the engine inside the trial "
        "(direct), on CPU or one (fractional) GPU. A TorchTrainer costs ~40 s per trial on an H100 node, "
        "~16 s on 2 CPUs, so --trainer ray-train with one worker only pays that cost",
    )
    p.add_argument(
        "--loader-workers",
        type=_loader_workers,
        default=None,
        metavar="N|auto",
        help="DataLoader worker processes per trial (default: auto = CPUs per trial - 1, so 0 with 1 CPU; "
        "workers persist for the whole trial)",
    )
    p.add_argument(
        "--resident-budget-gb",
        type=float,
        default=0.0,
        metavar="GB",
        help="hold each trial's compact training (then validation) slices in memory when they fit GB GiB "
        "(int16 HU + a uint8 mask for mask families: 29k slices at 512^2 ~ 15 GiB); 0 (default) = off; "
        "said in the trial log either way",
    )
    p.add_argument(
        "--resident-on",
        choices=("host", "device"),
        default="host",
        help="where resident slices live: host RAM (pinned on GPU trials; default) or the trial's GPU",
    )
    p.add_argument(
        "--scheduler", choices=("asha", "fifo"), default="asha", help="early stopping (default: asha)"
    )
    p.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default: tpe)"
    )
    p.add_argument(
        "--tpe-startup",
        dest="startup_trials",
        type=int,
        default=10,
        help="random trials before TPE models (default: 10)",
    )
    p.add_argument(
        "--no-paper-trial",
        dest="paper_trial",
        action="store_false",
        help="do not enqueue each family's paper configuration (its default_params) as its first trial",
    )
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA reduction factor (default: 3)")
    p.add_argument(
        "--max-failures", type=int, default=2, help="retries of a failing trial (from its checkpoint)"
    )
    p.add_argument(
        "--keep-checkpoints", type=int, default=2, help="checkpoints kept per trial, best by val_auc"
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="cap on each family's concurrent trials (default: what the cluster fits, autoscaled nodes "
        "included; with families at once, GPU families may each fill it, CPU-only ones get the CPUs left)",
    )
    p.add_argument(
        "--autoscaling-config",
        type=Path,
        metavar="YAML",
        help="the cluster's autoscaler config, to size concurrency and check feasibility on what the "
        "cluster can become (default: Ray's own cluster config if the GCS has one, else "
        "~/ray_bootstrap_config.yaml when joining a cluster, else the nodes alive now)",
    )
    p.add_argument(
        "--families-sequential",
        action="store_true",
        help="search the families one after another (default: every family's study at once, each with its "
        "own trials, ASHA and sampler, sharing the cluster; the direct GPU families in one shared Tune "
        "experiment, GPU families started first)",
    )
    p.add_argument(
        "--no-reuse-actors",
        dest="reuse_actors",
        action="store_false",
        help="start a fresh process for every trial, and no shared experiment of GPU families (default: a "
        "direct trial's process, with its CPUs/GPU, runs the family's next trial, or another GPU family's: "
        "no process start, imports or dataset opening in between)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of splits, sampler and data order (default: 0)")
    p.add_argument(
        "--space-dir", type=Path, default=Path("search_spaces"), help="search-space YAML directory"
    )
    p.add_argument(
        "--no-sift-cache",
        dest="sift_cache",
        action="store_false",
        help="extract SIFT descriptors in every trial",
    )
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: it registers extra families (must be importable on every Ray node)",
    )
    p.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="bind the local Ray dashboard here (default 127.0.0.1; anything else exposes it, with a warning)",
    )
    p.add_argument(
        "--no-dashboard",
        dest="include_dashboard",
        action="store_false",
        help="do not start the Ray dashboard",
    )
    p.add_argument(
        "--progress-every",
        dest="progress_every_s",
        type=float,
        default=30.0,
        metavar="S",
        help="progress line period (s)",
    )
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from .driver import RunError, SearchOptions, run_search

    checks = (
        ("--trials", args.trials, 1),
        ("--max-epochs", args.max_epochs, 1),
        ("--train-workers", args.train_workers, 1),
        ("--size", args.size, 8),
    )
    for flag, value, low in checks:
        if value is not None and value < low:
            print(f"dvt-search search: {flag} must be >= {low}, got {value}", file=sys.stderr)
            return 2
    # argparse destinations are SearchOptions' field names: one step, no field-by-field copy
    opts = SearchOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SearchOptions)})
    try:
        run_search(opts)
    except (RunError, KeyError, ValueError, FileNotFoundError) as exc:
        logging.getLogger(__name__).debug("search failed", exc_info=True)
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"dvt-search search: {message}", file=sys.stderr)
        return 1
    return 0

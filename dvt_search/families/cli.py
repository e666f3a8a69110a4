"""``dvt-search families`` (list the registered model families) and ``dvt-search train`` (one configuration,
no Ray). Heavy imports (torch, pandas) happen inside the handlers so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

#: metrics printed per epoch by ``train`` (others are in the checkpoint's meta.json)
_SHOWN = ("train_loss", "val_loss", "val_auc", "val_precision", "val_recall", "val_threshold")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``families`` and ``train`` commands."""
    p = subparsers.add_parser(
        "families",
        help="list the registered model families",
        description="List every registered model family with its kind and search-space file.",
    )
    p.add_argument(
        "--space-dir", type=Path, default=Path("search_spaces"), help="search-space YAML directory"
    )
    p.set_defaults(func=_families)

    t = subparsers.add_parser(
        "train",
        help="train one configuration of a family (no Ray) and print per-epoch metrics",
        description=(
            "Train one configuration of a model family on a manifest, without Ray, printing validation "
            "metrics after every epoch. Without --splits, paper-rule splits (seed 0) are made in a "
            "temporary folder."
        ),
    )
    t.add_argument("--family", required=True, help="family name (see `dvt-search families`)")
    t.add_argument("--data", required=True, type=Path, metavar="MANIFEST", help="manifest (.parquet/.csv)")
    t.add_argument("--splits", type=Path, help="splits.json made by `dvt-search data split`")
    t.add_argument(
        "--params", nargs="*", default=[], metavar="K=V", help="parameter overrides, YAML-typed (lr=1e-4)"
    )
    t.add_argument("--epochs", type=int, default=1, help="epochs to train (default 1)")
    t.add_argument(
        "--size",
        type=int,
        default=512,
        help="network input side in pixels (default 512; an input_size=N param overrides it)",
    )
    t.add_argument(
        "--window",
        action="append",
        metavar="L,W",
        help="HU window as level,width or a preset name; repeat for more channels (default 40,400)",
    )
    t.add_argument("--out", type=Path, metavar="CKPT_DIR", help="write the trained checkpoint here")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch families only")
    t.add_argument("--seed", type=int, help="the configuration's seed parameter")
    t.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    t.set_defaults(func=_train)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "stem=adapt"]`` -> ``{"lr": 0.0001, "stem": "adapt"}`` (YAML scalar typing).

    Numbers written the way YAML 1.1 reads as text (``1e-4``) still become floats.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--params expects KEY=VALUE, got {item!r}")
        value = yaml.safe_load(text) if text else None
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(text)
        out[key.strip()] = value
    return out


def _families(args: argparse.Namespace) -> int:
    from . import all_families

    rows = [("family", "kind", "search space", "exists")]
    for fam in all_families():
        path = args.space_dir / fam.search_space_file()
        rows.append((fam.name, fam.kind, str(path), "yes" if path.is_file() else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _windows(items: list[str] | None) -> list[Any]:
    out: list[Any] = []
    for item in items or ["40,400"]:
        if "," in item:
            level, _, width = item.partition(",")
            out.append((float(level), float(width)))
        else:
            out.append(item)
    return out


def _train(args: argparse.Namespace) -> int:
    from . import get
    from .base import FitData

    try:
        family = get(args.family)
        params = parse_params(args.params)
        family.resolve_params(params)  # unknown knobs fail before any data is read
        windows = _windows(args.window)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        params["seed"] = args.seed
    with tempfile.TemporaryDirectory(prefix="dvt-train-") as tmp:
        splits_path = args.splits or _temporary_splits(args.data, Path(tmp))
        from ..data.dataset import build_datasets, spec_at_input, spec_for

        datasets = build_datasets(args.data, splits_path, size=args.size, windows=windows)
        try:
            spec = spec_at_input(family.model_spec(params, spec_for(datasets["train"])), datasets["train"])
            model = family.build(params, spec)
        except (KeyError, ValueError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
        spec = model.spec
        context = f", ±{spec.context_slices} context slices" if spec.context_slices else ""
        print(
            f"{family.name}: {len(datasets['train'])} train / {len(datasets['val'])} val slices at "
            f"{spec.image_size}px, {len(spec.windows)} window(s){context}, positive fraction "
            f"{spec.pos_fraction:.3f}"
        )

        def show(report: Any, _model: Any) -> None:
            m = report.metrics
            parts = " ".join(f"{k}={m[k]:.4f}" for k in _SHOWN if k in m)
            extras = " ".join(
                f"{k}={v:.4f}"
                for k, v in m.items()
                if k not in _SHOWN and k.startswith("val_") and "loss" not in k
            )
            speed = f" ({m['img_per_s']:.1f} img/s)" if "img_per_s" in m else ""
            print(f"epoch {report.epoch}: {parts} {extras}{speed}".rstrip(), flush=True)

        # the family turns the command's options into its fit() keywords: torch families get the device;
        # the SIFT baseline extracts with max(1, --num-workers) processes and the descriptor cache, as
        # its fit() defaults would
        fit_kwargs = family.fit_options(device=args.device, cpus=max(1, args.num_workers), use_cache=True)
        data = FitData(train=datasets["train"], val=datasets["val"], num_workers=args.num_workers)
        model.fit(data, args.epochs, callback=show, **fit_kwargs)
    if args.out is not None:
        print(f"checkpoint: {model.save(args.out)}")
    return 0


def _temporary_splits(manifest: Path, tmp: Path) -> Path:
    from ..data.schema import read_manifest
    from ..data.splits import make_splits

    path = make_splits(read_manifest(manifest), seed=0).save(tmp / "splits.json")
    print(f"no --splits given: made paper-rule splits (seed 0) in temporary {path}")
    return path

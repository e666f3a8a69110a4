"""``dvt-search data``: phantom, validate, ingest, split, summary. Heavy imports happen inside handlers."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_PSEUDONYM_HELP = (
    "Patient ids are pseudonymized: from --id-map (CSV with columns original,pseudonym) or as a salted "
    "SHA-256 hash; study/scan ids are always salted hashes. Without --salt/--salt-file a random salt is "
    "written to OUT/salt.txt (mode 0600): keep it secret, keep it to reproduce the same ids later, and do "
    "not ship it with the dataset. Everything is built in a temporary folder and moved into OUT only "
    "when all inputs were read."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = subparsers.add_parser(
        "data", help="make, ingest, validate and split datasets", description=__doc__
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    _add_phantom(sub)
    _add_validate(sub)
    _add_ingest(sub)
    _add_split(sub)
    _add_summary(sub)


def _fmt() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


def _doc(module: str) -> str:
    """A module's docstring read from its source, so ``--help`` does not import numpy/pandas/pydicom."""
    spec = importlib.util.find_spec(module)
    source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    return ast.get_docstring(ast.parse(source)) or ""


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write the synthetic CT phantom dataset",
        description="Write a synthetic DVT CT dataset (int16 HU volumes, vein masks, slice labels, manifest).",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    p.add_argument("--patients", type=int, default=12, help="number of patients (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--size", type=int, default=512, help="slice side in pixels (default 512)")
    p.add_argument("--slices-per-scan", type=int, default=64, help="mean slices per scan (default 64)")
    p.add_argument(
        "--preset", choices=("standard", "easy"), default="standard", help="difficulty (default standard)"
    )
    p.add_argument(
        "--iliac-fraction", type=float, default=0.5, help="share of iliac-level scans (default 0.5)"
    )
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.set_defaults(func=_phantom)


def _phantom(args: argparse.Namespace) -> int:
    from .phantom import generate

    try:
        manifest = generate(
            args.out,
            patients=args.patients,
            seed=args.seed,
            size=args.size,
            slices_per_scan=args.slices_per_scan,
            preset=args.preset,
            iliac_fraction=args.iliac_fraction,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"manifest: {manifest}")
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check every row of a manifest and its files",
        formatter_class=_fmt(),
        description="Check a manifest row by row and print every problem (row, field, message; CSV line numbers\n"
        "too). Exit status 1 on any error, 0 otherwise (warnings such as slice-index gaps do not fail).\n"
        "Checks: columns, ids, labels 0/1, anatomy, spacings, patch grid and flags, duplicate slices or\n"
        "image references, scans/studies under two patients, geometry varying within a scan; with files:\n"
        "presence, decodability, index range, size vs height/width, mask size, NaN/inf pixels, mask values\n"
        "0/1, patches vs mask; with --splits: hash, unknown scans, patients in two partitions or folds.",
    )
    p.add_argument("manifest", type=Path, help="manifest.parquet or a CSV manifest")
    p.add_argument("--splits", type=Path, help="splits.json to check against the manifest")
    p.add_argument("--no-files", action="store_true", help="table checks only; do not open image/mask files")
    p.add_argument(
        "--max-errors", type=int, default=None, metavar="N", help="stop after N errors (default: all)"
    )
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from .validate import validate_manifest

    report = validate_manifest(
        args.manifest, splits_path=args.splits, check_files=not args.no_files, max_errors=args.max_errors
    )
    print(report.format() if report.errors or report.warnings else report.summary())
    return 0 if report.ok else 1


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="convert DICOM / NIfTI / PNG-NPY data into a dataset",
        description="Convert source images, masks and labels into the dataset layout (int16 HU volumes,\n"
        "uint8 masks, manifest.parquet). " + _PSEUDONYM_HELP,
        formatter_class=_fmt(),
    )
    kinds = p.add_subparsers(dest="ingest_kind", required=True, metavar="KIND")
    readers = "dvt_search.data.readers."
    d = kinds.add_parser(
        "dicom", help="DICOM CT series", description=_doc(readers + "dicom"), formatter_class=_fmt()
    )
    d.add_argument("roots", nargs="+", type=Path, help="folder(s) searched recursively for series")
    d.add_argument("--labels", required=True, type=Path, help="labels CSV (format above)")
    d.add_argument(
        "--seg",
        action="append",
        type=Path,
        default=[],
        metavar="DIR_OR_FILE",
        help="DICOM SEG (or RTSTRUCT) file(s) or folder(s): each series without a mask cell takes the one "
        "drawn on it (matched by UIDs, or by slice positions when UIDs are blank); repeatable",
    )
    d.add_argument(
        "--seg-segment",
        metavar="NUMBERS_OR_LABELS",
        help="the vein segment(s) (SEG segment or RTSTRUCT ROI numbers or names), comma-separated "
        "(default: the only one, or the one whose label or type mentions a vein)",
    )
    n = kinds.add_parser(
        "nifti", help="NIfTI volumes", description=_doc(readers + "nifti"), formatter_class=_fmt()
    )
    n.add_argument("listing", type=Path, help="listing CSV, one scan per row (format above)")
    s = kinds.add_parser(
        "slices", help="2D PNG/TIFF/NPY slices", description=_doc(readers + "slices"), formatter_class=_fmt()
    )
    s.add_argument("labels", type=Path, help="labels CSV, one slice per row (format above)")
    s.add_argument(
        "--pixel-spacing", nargs=2, type=float, metavar=("ROW_MM", "COL_MM"), help="default spacing"
    )
    s.add_argument("--slice-thickness", type=float, metavar="MM", help="default slice thickness")
    s.add_argument("--slope", type=float, default=1.0, help="HU = value * slope + intercept (default 1)")
    s.add_argument(
        "--intercept", type=float, default=0.0, help="e.g. -1024 for PNGs storing HU+1024 (default 0)"
    )
    for k in (d, n, s):
        k.add_argument(
            "--out", required=True, type=Path, help="dataset folder to create (must not hold a dataset)"
        )
        k.add_argument("--id-map", type=Path, help="CSV original,pseudonym for patient ids")
        salt = k.add_mutually_exclusive_group()
        salt.add_argument(
            "--salt", help="pseudonymization salt (visible in the process list: prefer --salt-file)"
        )
        salt.add_argument("--salt-file", type=Path, help="file whose first line is the salt")
        k.add_argument("--anatomy", choices=("femoral", "iliac"), default="femoral", help="default anatomy")
        k.add_argument(
            "--allow-missing-masks", action="store_true", help="write all-zero masks where none is given"
        )
        k.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from . import ingest
    from .readers import ReaderError

    common = dict(id_map=args.id_map, anatomy=args.anatomy, allow_missing_masks=args.allow_missing_masks)
    try:
        salt = args.salt if args.salt_file is None else _read_salt(args.salt_file)
        if args.ingest_kind == "dicom":
            manifest = ingest.ingest_dicom(
                args.roots,
                args.out,
                labels_csv=args.labels,
                salt=salt,
                seg=args.seg,
                seg_segment=args.seg_segment,
                **common,
            )
        elif args.ingest_kind == "nifti":
            manifest = ingest.ingest_nifti(args.listing, args.out, salt=salt, **common)
        else:
            spacing = tuple(args.pixel_spacing) if args.pixel_spacing else None
            manifest = ingest.ingest_slices(
                args.labels,
                args.out,
                salt=salt,
                spacing_mm=spacing,
                slice_thickness_mm=args.slice_thickness,
                slope=args.slope,
                intercept=args.intercept,
                **common,
            )
    except (ReaderError, ValueError, OSError) as exc:  # bad input or unwritable output: say which, exit 1
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"manifest: {manifest}")
    return 0


def _read_salt(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: empty salt file")
    return lines[0].strip()


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="make the patient-disjoint train/val/test split (splits.json)",
        description="Make and save a patient-disjoint split: val/test scans drawn from the middle slice-count\n"
        "band (paper section 3), optionally K patient-grouped folds. The file is hashed and tied to the\n"
        "manifest's fingerprint so later stages can verify it.",
        formatter_class=_fmt(),
    )
    p.add_argument("manifest", type=Path, help="manifest.parquet or CSV")
    p.add_argument("--out", type=Path, help="where to write (default: splits.json next to the manifest)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--anatomy", choices=("femoral", "iliac", "both"), default="femoral", help="default femoral"
    )
    p.add_argument(
        "--kfold", type=int, metavar="K", help="also make K patient-grouped cross-validation folds"
    )
    p.set_defaults(func=_split)


def _split(args: argparse.Namespace) -> int:
    from .schema import ManifestError, read_manifest
    from .splits import SplitsError, format_summary, make_splits, summarize

    try:
        df = read_manifest(args.manifest)
        splits = make_splits(df, seed=args.seed, anatomy=args.anatomy, kfold=args.kfold)
        out = splits.save(args.out or args.manifest.parent / "splits.json")
    except (ManifestError, SplitsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summarize(df, splits)))
    print(f"splits: {out} (hash {splits.hash[:12]})")
    return 0


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="count patients, scans, slices and positives",
        description="Counts per anatomy, or per partition when --splits is given.",
    )
    p.add_argument("manifest", type=Path, help="manifest.parquet or CSV")
    p.add_argument("--splits", type=Path, help="splits.json: summarize per partition")
    p.set_defaults(func=_summary)


def _summary(args: argparse.Namespace) -> int:
    from .schema import ManifestError, read_manifest

    try:
        df = read_manifest(args.manifest)
        if args.splits is None:
            print(_anatomy_summary(df))
            return 0
        from .splits import SplitsError, format_summary, load_splits, summarize

        try:
            print(format_summary(summarize(df, load_splits(args.splits, df))))
        except SplitsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _anatomy_summary(df: pd.DataFrame) -> str:
    groups = [(a, df[df.anatomy == a]) for a in sorted(df.anatomy.unique())] + [("total", df)]
    lines = [f"{'anatomy':<10}{'patients':>9}{'scans':>7}{'slices':>8}{'pos':>7}{'pos%':>7}"]
    for name, g in groups:
        pos = int(g.label.sum())
        frac = 100 * pos / len(g) if len(g) else float("nan")
        lines.append(
            f"{name:<10}{g.patient_id.nunique():>9}{g.scan_id.nunique():>7}{len(g):>8}{pos:>7}{frac:>6.1f}%"
        )
    return "\n".join(lines)

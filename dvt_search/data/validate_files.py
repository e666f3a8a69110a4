"""File-level checks of :mod:`.validate`: the image and mask each manifest row names.

Images: present, decodable, index inside the file, decoded size equal to ``height`` x ``width``, no
NaN/inf pixel. Masks: the same plus size equal to the image's, values only 0/1 and ``patches`` equal to
:func:`schema.patches_from_mask` of the mask. Each file is opened once (:mod:`.io` caches memory maps);
integer ``.npy``/NIfTI image volumes are checked from their header and first slice only, so a large
``.npy`` store validates without reading every image pixel (masks are read in full).
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import io, schema


class ErrorSink(Protocol):
    """Where checks report: ``error(row, field, message)``."""

    def error(self, row: int | None, fld: str, message: str) -> None: ...


def resolver(root: Path) -> Callable[[str], Path]:
    """``schema.resolve`` against ``root``, normalized and memoized (a manifest repeats few paths)."""
    return functools.cache(lambda rel: Path(os.path.normpath(schema.resolve(root, rel))))


def check_row_files(rows: list[dict[str, Any]], root: Path, out: ErrorSink) -> None:
    """Open every image and mask the parsed ``rows`` name and report what is wrong with them."""
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if r["image_path"] is not None and r["image_index"] is not None:
            by_image[r["image_path"]].append(i)
    image_shape: dict[int, tuple[int, ...]] = {}
    for rel, idx in by_image.items():
        _check_image_file(rel, schema.resolve(root, rel), idx, rows, image_shape, out)
    resolve = resolver(root)
    masks: dict[tuple[str, int], np.ndarray | tuple[str, str]] = {}
    for i, r in enumerate(rows):
        if r["mask_path"] is not None and r["mask_index"] is not None:
            _check_mask_row(i, r, resolve(r["mask_path"]), image_shape.get(i), masks, out)


def _open_volume(path: Path) -> tuple[int, np.ndarray]:
    """Slice count and first slice of a file (memory maps are cached by ``io``)."""
    n = io.num_slices(path)
    return n, io.load_slice(path, 0)


def _check_image_file(
    rel: str,
    path: Path,
    idx: list[int],
    rows: list[dict[str, Any]],
    shapes: dict[int, tuple[int, ...]],
    out: ErrorSink,
) -> None:
    try:
        n, first = _open_volume(path)
    except Exception as exc:  # any decoder failure is a row error naming the file
        msg = "file not found" if not path.is_file() else f"cannot read image: {_reason(exc, path)}"
        for i in idx:
            out.error(i, "image_path", f"{rel}: {msg}")
        return
    volume = n > 1 or io.file_kind(path) in ("npy", "nifti")
    header_only = volume and not np.issubdtype(first.dtype, np.floating)
    for i in idx:
        k = rows[i]["image_index"]
        if not 0 <= k < n:
            out.error(i, "image_index", f"{k} out of range: {rel} holds {n} slice(s)")
            continue
        if header_only:
            img = first
        else:
            try:
                img = first if k == 0 else io.load_slice(path, k)
            except Exception as exc:
                out.error(i, "image_path", f"{rel}: cannot decode slice {k}: {_reason(exc, path)}")
                continue
            bad = int(np.size(img) - np.count_nonzero(np.isfinite(img)))
            if bad:
                out.error(i, "image_path", f"{rel} slice {k}: {bad} NaN/inf pixel(s)")
        shapes[i] = img.shape
        want = (rows[i]["height"], rows[i]["width"])
        if None not in want and img.shape != want:
            out.error(
                i,
                "height",
                f"height x width = {want[0]}x{want[1]} but {rel} slice {k} is {img.shape[0]}x{img.shape[1]}",
            )


def _check_mask_row(
    i: int,
    r: dict[str, Any],
    path: Path,
    image_shape: tuple[int, ...] | None,
    cache: dict[tuple[str, int], np.ndarray | tuple[str, str]],
    out: ErrorSink,
) -> None:
    key = (str(path), r["mask_index"])
    if key not in cache:
        cache[key] = _load_mask(path, r["mask_index"])
    mask = cache[key]
    if isinstance(mask, tuple):
        out.error(i, mask[0], f"{r['mask_path']}: {mask[1]}")
        return
    odd = _non_binary(mask)
    if odd:
        out.error(i, "mask_path", f"{r['mask_path']} slice {r['mask_index']}: {odd} pixel(s) not 0/1")
    want = image_shape or (r["height"], r["width"])
    if None not in want and mask.shape != want:
        what = "image" if image_shape else "height x width"
        out.error(i, "mask_path", f"mask shape {mask.shape} != {what} {tuple(want)}")
        return
    flags = r["patches"]
    if flags is not None and flags.shape == schema.patch_grid_shape(*mask.shape):
        diff = int(np.count_nonzero(flags != schema.patches_from_mask(mask)))
        if diff:
            out.error(
                i,
                "patches",
                f"{diff} flag(s) disagree with the mask ({r['mask_path']} slice {r['mask_index']})",
            )


def _load_mask(path: Path, k: int) -> np.ndarray | tuple[str, str]:
    """The mask slice, or (field, message) saying why it can't be had."""
    if not path.is_file():
        return "mask_path", "file not found"
    try:
        n = io.num_slices(path)
        if not 0 <= k < n:
            return "mask_index", f"{k} out of range: file holds {n} slice(s)"
        return io.load_slice(path, k)
    except Exception as exc:  # any decoder failure is a row error naming the file
        return "mask_path", f"cannot read mask slice {k}: {_reason(exc, path)}"


def _non_binary(mask: np.ndarray) -> int:
    if mask.dtype == np.bool_:
        return 0
    if np.issubdtype(mask.dtype, np.integer) and mask.size and mask.min() >= 0 and mask.max() <= 1:
        return 0
    return int(mask.size - np.count_nonzero((mask == 0) | (mask == 1)))


def _reason(exc: BaseException, path: Path) -> str:
    """An exception's message without the leading ``<path>: `` that :mod:`io` errors carry."""
    text = str(exc)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else f"{type(exc).__name__}: {text}"

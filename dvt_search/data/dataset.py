"""The torch dataset every torch family trains on: one manifest row -> windowed image, mask, patches, label.

Per item: read the HU slice and its mask (``.npy`` volumes are memory-mapped by :mod:`.io`), replace
non-finite HU (NaN -> -1000 air, +/-inf -> 3071 / -1024), resize to ``size`` x ``size``, augment (training
only), window into one channel per HU window, and derive the 32x32-block patch targets from the final mask.
Every step but augmentation is a function of :mod:`.transform`, the module deployment preprocessing
(:mod:`dvt_search.deploy.preprocess`) calls too.

Resizing: images use ``INTER_AREA`` when shrinking (anti-aliased) and bilinear when enlarging. Masks are
shrunk by area-averaging then ``> 0``, i.e. a network pixel is vein when ANY source pixel under it is (a
max-pool), so a 2-3 pixel wide vein never vanishes at 64^2 or 128^2; enlarging uses nearest neighbour.

The dataset holds only paths, indices and the manifest rows (no open files), so it pickles into DataLoader
workers; memory maps are opened lazily per process. Call :meth:`SliceDataset.set_epoch` before each epoch
to vary augmentation deterministically (with ``persistent_workers=True`` workers keep their own copy, so
rebuild the loader or leave persistence off when augmenting; :class:`~.compact.CompactSlices`, the
compact view torch families train on, keeps its epoch in shared memory instead). Items here are the CPU
reference that prediction, evaluation and deployment read.

Slice context (2.5D): with ``context_slices = k > 0`` an item's ``image`` stacks the slice and its ``±k``
neighbours of the same scan (:func:`.context.neighbour_rows`: slice order, edge slice repeated, never
another scan's slice) as ``(2k + 1) x windows`` channels, slice-major, centre in the middle; every context
slice is resized alike and one augmentation draw applies to all of them; ``mask`` and ``patches`` stay the
centre slice's. :meth:`SliceDataset.with_input` is the same rows at another input size or context (what a
model whose own input differs from the run's reads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .augment import Augment, augment_rng
from .context import neighbour_rows
from .io import SliceReadError, load_slice
from .schema import manifest_root, patches_from_mask, read_manifest, resolve
from .spec import DataSpec
from .splits import PARTITIONS, load_splits, manifest_fingerprint
from .transform import prepare_hu, resize_image, resize_mask, to_channels, to_u8
from .windowing import parse_windows

__all__ = ["SliceDataset", "build_datasets", "resize_image", "resize_mask", "spec_at_input", "spec_for"]


def _file_identity(root: Path, rel: str) -> list[Any]:
    path = resolve(root, rel)
    try:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            digest.update(fh.read(65536))
            if size > 65536:
                fh.seek(max(65536, size - 65536))
                digest.update(fh.read(65536))
    except OSError:
        return [rel, -1, ""]
    return [rel, size, digest.hexdigest()]


class SliceDataset(Dataset):
    """Slices of a manifest frame as training samples (see the module docstring).

    Args:
        manifest_df: manifest rows (e.g. ``Splits.select(df, "train")``); the index is reset.
        root: directory that relative ``image_path`` / ``mask_path`` entries are resolved against.
        size: side of the square network input.
        windows: HU windows ``(level, width)`` or preset names, one image channel each.
        augment: training augmentation, or ``None`` (an identity :class:`Augment` counts as ``None``).
        seed: augmentation seed; sample ``i`` in epoch ``e`` is augmented by ``(seed, e, i)``.
        context_slices: ``k`` neighbouring slices of the same scan on each side as extra channels.
    """

    def __init__(
        self,
        manifest_df: pd.DataFrame,
        root: str | os.PathLike[str],
        *,
        size: int = 512,
        windows: Sequence[Any] = ((40.0, 400.0),),
        augment: Augment | None = None,
        seed: int = 0,
        context_slices: int = 0,
    ) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if int(context_slices) < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        self.context_slices = int(context_slices)
        self.frame = manifest_df.reset_index(drop=True)
        self.root = Path(root)
        self.size = int(size)
        self.windows = parse_windows(windows)
        self.augment = None if augment is None or augment.is_identity else augment
        self.seed = int(seed)
        self.epoch = 0
        f = self.frame
        self._images = [str(resolve(self.root, p)) for p in f["image_path"]]
        self._masks = [str(resolve(self.root, p)) for p in f["mask_path"]]
        self._image_index = f["image_index"].to_numpy(dtype=np.int64)
        self._mask_index = f["mask_index"].to_numpy(dtype=np.int64)
        self._labels = f["label"].to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        """Slice labels (0/1) in dataset order."""
        return self._labels

    @property
    def patient_ids(self) -> np.ndarray:
        return self.frame["patient_id"].astype(str).to_numpy()

    @property
    def scan_ids(self) -> np.ndarray:
        return self.frame["scan_id"].astype(str).to_numpy()

    @cached_property
    def cache_key(self) -> str:
        """SHA-256 of (fingerprint of these rows, their image files, size, windows): keys per-dataset caches.

        The image files enter by relative path, byte size and a digest of their first and last 64 KiB, so
        re-ingested pixels under the same ids get a new key while a copy of the store on another node
        (same bytes, other mtimes) keeps it.
        """
        doc = {
            "rows": manifest_fingerprint(self.frame),
            "files": [_file_identity(self.root, p) for p in sorted(set(self.frame["image_path"]))],
            "size": self.size,
            "windows": [list(w) for w in self.windows],
        }
        if self.context_slices:
            doc["context_slices"] = self.context_slices
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @cached_property
    def context_rows(self) -> np.ndarray:
        """``int64[n, 2k+1]``: the rows of each row's context slices (:func:`.context.neighbour_rows`)."""
        f = self.frame
        if not self.context_slices:
            return np.arange(len(f), dtype=np.int64)[:, None]
        return neighbour_rows(self.scan_ids, f["slice_index"].to_numpy(dtype=np.int64), self.context_slices)

    def with_input(
        self,
        *,
        size: int | None = None,
        windows: Sequence[Any] | None = None,
        context_slices: int | None = None,
    ) -> SliceDataset:
        """The same rows, augmentation, seed and epoch at another input (``None`` keeps a setting).

        Returns ``self`` when nothing changes; the new dataset holds paths only, like this one.
        """
        size = self.size if size is None else int(size)
        windows = self.windows if windows is None else parse_windows(windows)
        k = self.context_slices if context_slices is None else int(context_slices)
        if (size, tuple(windows), k) == (self.size, tuple(self.windows), self.context_slices):
            return self
        other = SliceDataset(
            self.frame,
            self.root,
            size=size,
            windows=windows,
            augment=self.augment,
            seed=self.seed,
            context_slices=k,
        )
        other.epoch = self.epoch
        return other

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (no effect without augmentation)."""
        self.epoch = int(epoch)

    def _index(self, i: Any) -> int:
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} slices")
        return i

    def _read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized float32 HU (``[S, S]``, or the context stack ``[2k+1, S, S]``) and uint8 0/1 mask of row ``i``."""
        mask = load_slice(self._masks[i], self._mask_index[i])
        hu = load_slice(self._images[i], self._image_index[i])
        if hu.shape != mask.shape:
            row = self.frame.iloc[i]
            raise SliceReadError(
                f"row {i} (scan {row['scan_id']}, slice {row['slice_index']}): image {self._images[i]} "
                f"shape {hu.shape} differs from mask {self._masks[i]} shape {mask.shape}"
            )
        if not self.context_slices:
            return prepare_hu(hu, self.size), resize_mask(mask, self.size)
        stack = [
            prepare_hu(hu, self.size)
            if j == i
            else prepare_hu(load_slice(self._images[j], self._image_index[j]), self.size)
            for j in (int(r) for r in self.context_rows[i])
        ]
        return np.stack(stack), resize_mask(mask, self.size)

    def __getitem__(self, i: Any) -> dict[str, torch.Tensor]:
        i = self._index(i)
        hu, mask = self._read(i)
        if self.augment is not None:
            hu, mask = self.augment(hu, mask, augment_rng(self.seed, self.epoch, i))
        image = to_channels(hu, self.windows)
        patches = patches_from_mask(mask).astype(np.float32)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "patches": torch.from_numpy(patches)[None],
            "label": torch.tensor(float(self._labels[i]), dtype=torch.float32),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def window_u8(self, i: Any) -> np.ndarray:
        """Row ``i`` in the first window as ``uint8[size, size]``, never augmented (SIFT input)."""
        hu, _ = self._read(self._index(i))
        return to_u8(hu[self.context_slices] if hu.ndim == 3 else hu, self.windows)

    def mask_at(self, i: Any) -> np.ndarray:
        """Resized, unaugmented uint8 mask of row ``i`` (reads no image)."""
        i = self._index(i)
        return resize_mask(load_slice(self._masks[i], self._mask_index[i]), self.size)


def spec_for(train: SliceDataset, *, max_masks: int = 256, seed: int = 0) -> DataSpec:
    """The :class:`DataSpec` of a training dataset.

    ``pos_fraction`` is exact; ``vein_fraction`` is the mean mask value over up to ``max_masks`` slices
    drawn with a seeded RNG (resized, unaugmented). Either may be 0 on degenerate data.
    """
    n = len(train)
    if n == 0:
        raise ValueError("cannot derive a DataSpec from an empty training dataset")
    picks = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_masks), replace=False))
    vein = float(np.mean([train.mask_at(int(i)).mean() for i in picks]))
    return DataSpec(
        image_size=train.size,
        windows=train.windows,
        pos_fraction=float(train.labels.mean()),
        vein_fraction=vein,
        context_slices=train.context_slices,
    )


def spec_at_input(spec: DataSpec, train: SliceDataset, *, seed: int = 0) -> DataSpec:
    """A model's own ``spec`` with ``vein_fraction`` measured at its input size (as :func:`spec_for`).

    ``spec`` is the run's spec at the input a family chose (:meth:`DataSpec.with_input`); where its size
    differs from ``train``'s, the masks shrink differently (any-coverage), so the fraction is re-measured
    on ``train`` at that size. Otherwise ``spec`` is returned as it is.
    """
    if spec.image_size == train.size:
        return spec
    vein = spec_for(train.with_input(size=spec.image_size), seed=seed).vein_fraction
    return dataclasses.replace(spec, vein_fraction=vein)


def build_datasets(
    manifest_path: str | os.PathLike[str],
    splits_path: str | os.PathLike[str],
    *,
    size: int = 512,
    windows: Sequence[Any] = ((40.0, 400.0),),
    augment: Augment | None = None,
    seed: int = 0,
    fold: int | None = None,
    context_slices: int = 0,
) -> dict[str, SliceDataset]:
    """``{"train", "val", "test"}`` datasets of a manifest and its verified ``splits.json``.

    The splits file must match the manifest's fingerprint (else :class:`~.splits.SplitsError`). Only the
    training dataset is augmented. With ``fold=k`` (k-fold splits) train/val are fold ``k``'s.
    ``context_slices`` stacks ``±k`` neighbouring slices of each scan as channels (see the module docstring).
    """
    df = read_manifest(manifest_path)
    splits = load_splits(splits_path, manifest_df=df)
    if fold is None:
        rows = {p: splits.select(df, p) for p in PARTITIONS}
    else:
        train_ids, val_ids = splits.fold(fold)
        rows = {
            "train": splits.select_scans(df, train_ids),
            "val": splits.select_scans(df, val_ids),
            "test": splits.select(df, "test"),
        }
    root = manifest_root(manifest_path)
    return {
        p: SliceDataset(
            r,
            root,
            size=size,
            windows=windows,
            augment=augment if p == "train" else None,
            seed=seed,
            context_slices=context_slices,
        )
        for p, r in rows.items()
    }

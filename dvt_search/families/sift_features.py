"""SIFT descriptors for the BoW baseline, extracted once per (dataset, SIFT settings) and cached.

Descriptors do not depend on the bag-of-words size ``k`` or on the SVM knobs, so every trial of a search
that shares a dataset and SIFT settings reuses one extraction (OpenCV SIFT costs ~59 ms per 512x512 slice
per core). The cache has two levels:

* **On disk**, under ``<cache_dir>/sift/<key>/`` with ``descriptors.npy`` (``uint8[N, 128]``, all slices
  concatenated), ``offsets.npy`` (``int64[n_slices + 1]``; slice ``i`` owns rows
  ``offsets[i]:offsets[i + 1]``) and a human-readable ``meta.json``. ``key`` is the sha256 of the cache
  format, ``dataset.cache_key``, the number of slices, the SIFT settings that matter and the OpenCV
  version. An entry is built in a temporary sibling directory and renamed into place, so readers never see
  a half-written entry; an advisory lock file (``<key>.lock``) makes concurrent trials on one machine wait
  for a single extraction instead of repeating it (where the file system has no ``flock`` the rename alone
  keeps readers safe; two writers then produce identical entries and the first rename wins).
* **In process**, a small LRU of the loaded (memory-mapped) arrays, so repeated fits in one process do not
  re-open files, and concurrent trials on one machine share the page cache.

OpenCV returns SIFT descriptors as ``float32`` holding integers in ``[0, 255]``; they are stored as
``uint8`` (lossless, 4x smaller).

The default cache directory is ``$DVT_SEARCH_CACHE`` or ``~/.cache/dvt-search``. The runtime can pre-warm
the cache before a search with :func:`extract_descriptors` (with ``n_jobs`` > 1).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ..fsutil import publish_directory

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms: rename-only race safety
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = "dvt-search-sift-cache/1"
DESCRIPTOR_DIM = 128
CACHE_ENV = "DVT_SEARCH_CACHE"
_DESC_FILE = "descriptors.npy"
_OFFSETS_FILE = "offsets.npy"
_MEMORY_ENTRIES = 4


class SliceSource(Protocol):
    """What extraction needs from a dataset (``SliceDataset`` provides it)."""

    cache_key: str

    def __len__(self) -> int: ...

    def window_u8(self, i: int) -> np.ndarray: ...


class SiftCacheError(RuntimeError):
    """A cache entry on disk is unreadable or inconsistent; the message names the entry to delete."""


@dataclass(frozen=True)
class SiftParams:
    """OpenCV SIFT settings.

    Attributes:
        nfeatures: keep the best ``nfeatures`` keypoints per slice (0 = all).
        contrast_threshold: OpenCV ``contrastThreshold``; larger keeps fewer, stronger keypoints.
        edge_threshold: OpenCV ``edgeThreshold``; larger keeps more edge-like keypoints.
        sigma: Gaussian sigma of octave 0.
        dense: describe a regular grid of upright keypoints instead of detecting them (thin veins give
            few detected keypoints); then only ``sigma``, ``dense_step`` and ``dense_size`` matter.
        dense_step: grid spacing in pixels (dense only).
        dense_size: keypoint diameter in pixels (dense only).
    """

    nfeatures: int = 0
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6
    dense: bool = False
    dense_step: int = 16
    dense_size: float = 16.0

    def __post_init__(self) -> None:
        checks = {
            "nfeatures": self.nfeatures >= 0,
            "contrast_threshold": self.contrast_threshold >= 0,
            "edge_threshold": self.edge_threshold > 0,
            "sigma": self.sigma > 0,
            "dense_step": self.dense_step >= 1,
            "dense_size": self.dense_size > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SIFT setting(s) {bad}: {self}")

    @classmethod
    def from_family_params(cls, params: Mapping[str, Any]) -> SiftParams:
        """Build from the ``sift_bow_svm`` family knobs (``sift_nfeatures``, ..., ``dense``, ...)."""
        names = {f.name: ("" if f.name.startswith("dense") else "sift_") + f.name for f in fields(cls)}
        return cls(**{f: params[key] for f, key in names.items() if key in params})

    def canonical(self) -> dict[str, Any]:
        """The settings that change the descriptors (irrelevant ones are left out of the cache key)."""
        d = asdict(self)
        drop = (
            ("nfeatures", "contrast_threshold", "edge_threshold")
            if self.dense
            else ("dense_step", "dense_size")
        )
        for name in drop:
            d.pop(name)
        return {k: (float(v) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass
class CacheStats:
    """Process-wide counters (for tests, benchmarks and logs)."""

    extractions: int = 0  #: full-dataset extractions actually run
    slices_extracted: int = 0
    disk_hits: int = 0
    memory_hits: int = 0


STATS = CacheStats()
_MEMORY: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def default_cache_dir() -> Path:
    """``$DVT_SEARCH_CACHE`` if set, else ``~/.cache/dvt-search``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dvt-search"


def clear_memory_cache() -> None:
    """Drop the in-process LRU (the disk cache is kept)."""
    _MEMORY.clear()


def descriptor_cache_key(dataset: SliceSource, params: SiftParams) -> str:
    """sha256 hex identifying the descriptors of ``dataset`` under ``params`` with this OpenCV."""
    dataset_key = getattr(dataset, "cache_key", None)
    if not isinstance(dataset_key, str) or not dataset_key:
        raise TypeError(
            f"{type(dataset).__name__} has no string 'cache_key'; the SIFT cache needs one "
            "(or call extract_descriptors(..., use_cache=False))"
        )
    payload = {
        "format": CACHE_FORMAT,
        "dataset": dataset_key,
        "n_slices": len(dataset),
        "sift": params.canonical(),
        "opencv": cv2.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _sift(params: SiftParams) -> cv2.SIFT:
    return cv2.SIFT_create(
        nfeatures=params.nfeatures,
        contrastThreshold=params.contrast_threshold,
        edgeThreshold=params.edge_threshold,
        sigma=params.sigma,
    )


def _grid(shape: tuple[int, int], params: SiftParams) -> list[cv2.KeyPoint]:
    h, w = shape
    half = params.dense_step // 2
    return [
        cv2.KeyPoint(float(x), float(y), params.dense_size, 0.0)
        for y in range(half, h, params.dense_step)
        for x in range(half, w, params.dense_step)
    ]


def extract_slice(image: np.ndarray, params: SiftParams) -> np.ndarray:
    """SIFT descriptors of one 2-D ``uint8`` image as ``uint8[n, 128]`` (``n`` may be 0)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"SIFT needs a 2-D uint8 image, got {image.dtype} {image.shape}")
    sift = _sift(params)
    if params.dense:
        _, desc = sift.compute(image, _grid(image.shape, params))
    else:
        _, desc = sift.detectAndCompute(image, None)
    if desc is None or len(desc) == 0:
        return np.empty((0, DESCRIPTOR_DIM), np.uint8)
    return np.rint(desc).clip(0, 255).astype(np.uint8)


def _extract_batch(images: Sequence[np.ndarray], params: SiftParams) -> list[np.ndarray]:
    """Worker entry point for parallel extraction (one OpenCV thread per worker process)."""
    cv2.setNumThreads(1)
    return [extract_slice(im, params) for im in images]


def _window(dataset: SliceSource, i: int) -> np.ndarray:
    image = np.asarray(dataset.window_u8(i))
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"{type(dataset).__name__}.window_u8({i}) returned {image.dtype} {image.shape}; expected 2-D uint8"
        )
    return image


def _compute(dataset: SliceSource, params: SiftParams, n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(dataset)
    if n_jobs <= 1 or n < 2:
        parts = [extract_slice(_window(dataset, i), params) for i in range(n)]
    else:
        from joblib import Parallel, delayed

        step = max(1, min(32, -(-n // (4 * n_jobs))))
        batches = (
            delayed(_extract_batch)([_window(dataset, i) for i in range(s, min(n, s + step))], params)
            for s in range(0, n, step)
        )
        results = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="2*n_jobs")(batches)
        parts = [d for batch in results for d in batch]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    desc = np.concatenate(parts) if parts else np.empty((0, DESCRIPTOR_DIM), np.uint8)
    STATS.extractions += 1
    STATS.slices_extracted += n
    return desc, offsets


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Advisory inter-process lock; a no-op where ``flock`` is unavailable or unsupported."""
    with open(path, "a") as fh:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                locked = True
            except OSError:
                locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _publish(entry: Path, desc: np.ndarray, offsets: np.ndarray, meta: dict[str, Any]) -> None:
    """Write an entry into a temporary sibling directory and rename it into place (first writer wins)."""
    with publish_directory(entry) as tmp:
        np.save(tmp / _DESC_FILE, desc, allow_pickle=False)
        np.save(tmp / _OFFSETS_FILE, offsets, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _load(entry: Path, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        offsets = np.load(entry / _OFFSETS_FILE, allow_pickle=False)
        desc = np.load(entry / _DESC_FILE, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SiftCacheError(f"{entry}: unreadable SIFT cache entry ({exc}); delete it to rebuild") from exc
    problems = []
    if offsets.dtype != np.int64 or offsets.shape != (n_slices + 1,):
        problems.append(f"offsets {offsets.dtype} {offsets.shape}, expected int64 ({n_slices + 1},)")
    elif offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(desc):
        problems.append("offsets are not a monotone partition of the descriptor rows")
    if desc.dtype != np.uint8 or desc.ndim != 2 or desc.shape[1] != DESCRIPTOR_DIM:
        problems.append(f"descriptors {desc.dtype} {desc.shape}, expected uint8 (N, {DESCRIPTOR_DIM})")
    if problems:
        raise SiftCacheError(
            f"{entry}: corrupt SIFT cache entry ({'; '.join(problems)}); delete it to rebuild"
        )
    offsets.setflags(write=False)
    return desc, offsets


def _remember(key: str, value: tuple[np.ndarray, np.ndarray]) -> None:
    _MEMORY[key] = value
    _MEMORY.move_to_end(key)
    while len(_MEMORY) > _MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)


def extract_descriptors(
    dataset: SliceSource,
    sift_params: SiftParams,
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    *,
    use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """SIFT descriptors of every slice of ``dataset`` (``window_u8(i)``), from the cache when possible.

    Args:
        dataset: provides ``__len__``, ``window_u8(i)`` and (with the cache) ``cache_key``.
        sift_params: SIFT settings.
        cache_dir: base cache directory (entries go to ``<cache_dir>/sift/``); ``None`` uses
            :func:`default_cache_dir`.
        n_jobs: worker processes for a fresh extraction (1 = in this process).
        use_cache: ``False`` extracts every time and touches no cache (benchmarks, throw-away data).

    Returns:
        ``(descriptors, offsets)``: ``uint8[N, 128]`` (read-only, possibly memory-mapped) and
        ``int64[len(dataset) + 1]``; slice ``i`` owns ``descriptors[offsets[i]:offsets[i + 1]]``.

    Raises:
        SiftCacheError: an existing entry is corrupt (the message names it).
        TypeError: ``use_cache`` is on and the dataset has no ``cache_key``.
    """
    if not use_cache:
        return _compute(dataset, sift_params, n_jobs)
    key = descriptor_cache_key(dataset, sift_params)
    if key in _MEMORY:
        STATS.memory_hits += 1
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = root / "sift"
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    extracted = False
    if not entry.is_dir():
        with _exclusive_lock(root / f"{key}.lock"):
            if not entry.is_dir():
                desc, offsets = _compute(dataset, sift_params, n_jobs)
                meta = {
                    "format": CACHE_FORMAT,
                    "dataset_cache_key": dataset.cache_key,
                    "n_slices": len(dataset),
                    "n_descriptors": len(desc),
                    "sift": sift_params.canonical(),
                    "opencv": cv2.__version__,
                }
                _publish(entry, desc, offsets, meta)
                extracted = True
    value = _load(entry, len(dataset))
    if not extracted:
        STATS.disk_hits += 1
    _remember(key, value)
    return value

"""Devices, seeding and data loaders shared by training and inference."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..data.ring import RingLoader, RingUnavailable

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` picks CUDA when available, else CPU; asking for absent CUDA raises."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)`` (stable across runs and processes)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**63 - 1)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def shares_epoch(dataset: Dataset) -> bool:
    """Whether persistent workers may keep ``dataset``: it has no epoch, or its epoch is in shared memory."""
    return not hasattr(dataset, "set_epoch") or bool(getattr(dataset, "epoch_is_shared", False))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent: bool = False,
    ring: bool = False,
) -> DataLoader | RingLoader:
    """A deterministic DataLoader: the shuffled order comes from ``generator`` only, the same with or
    without (persistent) workers.

    With ``ring``, a dataset that says ``batches_in_ring`` (the compact training view,
    :mod:`dvt_search.data.compact`) gets a :class:`~dvt_search.data.ring.RingLoader`: its workers write
    whole batches into a shared-memory ring, pinned on CUDA, so the trial's process does almost nothing per
    batch; the batches and their order are the ones the DataLoader gives. A ring batch's image tensors
    are views of a slot that is written again two batches later, so only a consumer that is done with a
    batch (moved it to the device, transformed it) when it fetches the one after next may ask for it (the
    training loop; a ``list(loader)`` may not). Without ``ring`` (the default; also Ray Train's
    ``prepare_data_loader``, which rebuilds a DataLoader from its fields) and with too little shared memory
    for the ring (said in a warning) it is the DataLoader.

    With ``persistent`` (and workers) the worker processes live as long as the loader, which is only
    allowed when :func:`shares_epoch` says that ``dataset.set_epoch`` still reaches them; otherwise they
    are started afresh each epoch, so a plain ``set_epoch`` does.

    A dataset may dictate ``num_workers`` / ``pin_memory`` / ``collate_fn`` through a ``loader_settings``
    mapping (a resident dataset, :mod:`dvt_search.data.resident`, serves whole batches in this process).
    """
    if ring and getattr(dataset, "batches_in_ring", False) and len(dataset) > 0:  # type: ignore[arg-type]
        try:
            return RingLoader(
                dataset,
                batch_size,
                shuffle=shuffle,
                generator=generator,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent=persistent and shares_epoch(dataset),
                worker_init_fn=_worker_init,
            )
        except RingUnavailable as exc:
            log.warning("%s: per-item batches instead", exc)
    settings = dict(getattr(dataset, "loader_settings", None) or {})
    num_workers = int(settings.pop("num_workers", num_workers))
    pin_memory = bool(settings.pop("pin_memory", pin_memory))
    keep = persistent and num_workers > 0 and shares_epoch(dataset)
    # The order comes from ``generator`` alone: DataLoader would also draw its workers' base seed from it,
    # once per iterator, so persistent workers (one iterator) and fresh ones (one per epoch) would see
    # different orders. Workers' base seeds come from torch's global RNG (seeded per epoch by the loop).
    sampler = RandomSampler(dataset, generator=generator) if shuffle and generator is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=keep,
        **settings,
    )


def to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device``; the image becomes NHWC when asked."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key == "image" and channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on CUDA when ``enabled`` (a disabled context elsewhere)."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside a DistributedDataParallel wrapper (or the module itself)."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.module
    return module


def dist_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()

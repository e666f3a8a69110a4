"""Whole batches through loader workers in a shared-memory ring: almost nothing per batch in the trial.

A torch ``DataLoader`` with per-sample items makes the trial's own process pay for every batch: its
workers collate each batch into a fresh shared-memory file that the trial process maps, reads through page
faults, copies into pinned memory (``pin_memory``) and unmaps again (16-22 ms of its CPU per batch of 32
compact 512^2 slices, measured by ``bench/bench_dataset.py --feed``). :class:`RingLoader` instead:

* allocates, once per loader, a ring of ``slots`` batch buffers in shared memory (one tensor per item key,
  ``[slots, batch, *item shape]``), made before the workers start, so every worker maps the same pages
  once; on CUDA the trial process registers them as pinned memory (``cudaHostRegister``), so the
  host-to-device copy is a DMA straight out of the slot, with no pinning copy;
* sends each worker ``(slot, row indices)`` requests; the worker writes the batch's items straight into
  the slot (no collate, no per-sample tensors crossing processes) and answers ``(slot, n)``: a few bytes;
* yields, per batch, views of the slot's large tensors (the ``packed``/``hu`` pixels) and copies of the
  small ones (label, index, augmentation draws, which callers may keep).

A slot is written again only after the batch it held is done: requests come from :class:`RingRequests`,
iterated in the trial's process by the ``DataLoader`` as it hands out work; with ``slots = prefetch x
workers + 2`` the slot a new request takes held the batch two before the one just received, which the
trial already moved to its device. On CUDA that copy is asynchronous, so :meth:`BatchRing.release` records
an event on the current stream when the trial fetches the next batch, and the request waits for it before
the slot is reused. On the CPU the views are read by the batch transform (which makes new tensors) before
the next fetch.

The order of batches is the one a ``DataLoader`` with the same sampler gives (a ``BatchSampler`` over a
``RandomSampler`` with the same generator), and items are the dataset's own, so a ring batch equals the
default-collated batch of the same rows (tested in ``tests/data/test_ring.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

log = logging.getLogger(__name__)

#: per-sample tensors of fewer dimensions (labels, indices, draws) are copied out of the slot
VIEW_DIMS = 2
#: batches each worker prepares ahead (the ``DataLoader`` default)
PREFETCH = 2


#: where POSIX shared memory (``shm_open``, torch's sharing strategy) lives on Linux
SHM_DIR = "/dev/shm"
#: the most of the free shared memory one ring may take (the per-item loaders of other trials need some)
SHM_FRACTION = 0.5


class RingUnavailable(RuntimeError):
    """The ring cannot be made here (e.g. too little shared memory); the caller falls back."""


def shm_free_bytes() -> int | None:
    """Free bytes of the shared-memory file system, or ``None`` where there is none to check."""
    try:
        return shutil.disk_usage(SHM_DIR).free
    except OSError:
        return None


def _unregister(pid: int, ptrs: Sequence[int]) -> None:
    if os.getpid() != pid:  # a forked worker's copy of the ring: the registration is the parent's
        return
    cudart = torch.cuda.cudart()
    for ptr in ptrs:
        cudart.cudaHostUnregister(ptr)


class BatchRing:
    """``slots`` batch buffers in shared memory, one tensor per item key (see the module docstring).

    Args:
        template: one item (key -> tensor): the shapes and dtypes of a sample.
        batch_size: samples per slot.
        slots: number of batch buffers.
        pin: register the buffers as pinned memory (needs CUDA; else they stay pageable).
        shared: put the buffers in shared memory (for worker processes; ``False``: ordinary memory).

    Raises:
        RingUnavailable: the shared-memory file system has not room for the ring (checked first: a full
            one would kill the process with SIGBUS when the pages are touched).
    """

    def __init__(
        self, template: Mapping[str, Tensor], batch_size: int, slots: int, *, pin: bool, shared: bool = True
    ) -> None:
        if batch_size < 1 or slots < 2:
            raise ValueError(f"a batch ring needs batch_size >= 1 and slots >= 2, got {batch_size}, {slots}")
        self.batch_size, self.slots = int(batch_size), int(slots)
        need = self.slots * self.batch_size * sum(v.numel() * v.element_size() for v in template.values())
        free = shm_free_bytes() if shared else None
        if free is not None and need > free * SHM_FRACTION:
            raise RingUnavailable(
                f"batch ring: {need / 2**20:.0f} MiB of shared memory needed, {free / 2**20:.0f} MiB free in "
                f"{SHM_DIR} (a container may need a larger --shm-size)"
            )
        self.tensors = {
            k: torch.empty((self.slots, self.batch_size, *v.shape), dtype=v.dtype)
            for k, v in template.items()
        }
        if shared:
            self.tensors = {k: t.share_memory_() for k, t in self.tensors.items()}
        self._events: list[Any] = [None] * self.slots
        self.pinned = bool(pin) and torch.cuda.is_available() and self._pin()

    @property
    def nbytes(self) -> int:
        """Bytes of shared memory the ring holds."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def _pin(self) -> bool:
        cudart = torch.cuda.cudart()
        done: list[int] = []
        for t in self.tensors.values():
            rc = int(cudart.cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 0))
            if rc != 0:
                _unregister(os.getpid(), done)
                log.warning(
                    "batch ring: pinning %d bytes failed (cudaError %d): pageable copies", self.nbytes, rc
                )
                return False
            done.append(t.data_ptr())
        weakref.finalize(self, _unregister, os.getpid(), done).atexit = False
        return True

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker gets the tensors, not events or the pinning
        state = dict(self.__dict__)
        state.update(_events=[None] * self.slots, pinned=False)
        return state

    def fill(self, slot: int, items: Iterable[Mapping[str, Tensor]]) -> int:
        """Write ``items`` into ``slot`` (worker side); returns how many."""
        n = 0
        for n, item in enumerate(items, start=1):
            if n > self.batch_size:
                raise ValueError(f"batch ring: more than {self.batch_size} items for one slot")
            missing = set(self.tensors) - set(item)
            if missing:
                raise KeyError(
                    f"batch ring: item lacks {sorted(missing)} (the ring holds {sorted(self.tensors)})"
                )
            for k, t in self.tensors.items():
                t[slot, n - 1].copy_(item[k])
        return n

    def batch(self, slot: int, n: int) -> dict[str, Tensor]:
        """The first ``n`` samples of ``slot``: views of the images (2+ dimensions per sample), copies of the
        rest (main side)."""
        out = {}
        for k, t in self.tensors.items():
            v = t[slot, :n]
            out[k] = v if t.dim() - 2 >= VIEW_DIMS else v.clone()
        return out

    def release(self, slot: int) -> None:
        """The trial is done with ``slot``'s batch: its device copy is enqueued (an event marks it on CUDA)."""
        if self.pinned and torch.cuda.is_initialized():
            event = torch.cuda.Event()
            event.record()
            self._events[slot] = event

    def wait(self, slot: int) -> None:
        """Block until ``slot`` may be written again (its last device copy finished)."""
        event = self._events[slot]
        if event is not None:
            event.synchronize()
            self._events[slot] = None


class RingRequests:
    """The ``DataLoader``'s sampler: ``(slot, row indices)`` per batch, waiting for the slot to be free."""

    def __init__(self, batches: Iterable[list[int]], ring: BatchRing) -> None:
        self.batches, self.ring, self.seq = batches, ring, 0

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        for indices in self.batches:
            slot = self.seq % self.ring.slots
            self.ring.wait(slot)
            self.seq += 1
            yield slot, list(indices)


class RingFill(Dataset):
    """What workers index: a request ``(slot, rows)`` writes those rows' items into the slot."""

    def __init__(self, dataset: Dataset, ring: BatchRing) -> None:
        self.dataset, self.ring = dataset, ring

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, request: tuple[int, list[int]]) -> tuple[int, int]:
        slot, rows = request
        return slot, self.ring.fill(slot, (self.dataset[i] for i in rows))


def _as_is(message: Any) -> Any:
    return message


class RingLoader:
    """An iterable over a dataset's batches through a :class:`BatchRing` (see the module docstring).

    Args:
        dataset: a map-style dataset of dicts of tensors, all samples of one shape per key.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: random order (from ``generator``, as ``RandomSampler``), else dataset order.
        generator: the shuffle's generator.
        num_workers: loader worker processes (0: filled in this process).
        pin_memory: register the ring as pinned memory (CUDA only).
        persistent: keep the workers between passes.
        worker_init_fn: run in each worker at start.

    Raises:
        RingUnavailable: see :class:`BatchRing`.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent: bool = False,
        worker_init_fn: Callable[[int], None] | None = None,
    ) -> None:
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("a batch ring needs a non-empty dataset")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)  # type: ignore[arg-type]
        self.batch_sampler = BatchSampler(order, self.batch_size, drop_last=False)
        slots = (PREFETCH * self.num_workers if self.num_workers else 1) + 2
        self.ring = BatchRing(dataset[0], self.batch_size, slots, pin=pin_memory, shared=self.num_workers > 0)
        self.requests = RingRequests(self.batch_sampler, self.ring)
        self.loader = DataLoader(
            RingFill(dataset, self.ring),
            batch_size=None,
            sampler=self.requests,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            worker_init_fn=worker_init_fn if self.num_workers else None,
            persistent_workers=bool(persistent) and self.num_workers > 0,
            prefetch_factor=PREFETCH if self.num_workers else None,
        )

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        held: int | None = None
        try:
            for slot, n in self.loader:
                if held is not None:
                    self.ring.release(held)
                held = slot
                yield self.ring.batch(slot, n)
        finally:
            if held is not None:
                self.ring.release(held)

"""Optional resident training data: a partition's compact slices loaded once, batches gathered in memory.

:class:`ResidentSlices` reads every item of a :class:`~.compact.CompactSlices` view once (the int16 HU and,
for the families whose loss uses it, the uint8 mask; every other tensor of the item too, e.g. the label)
into one tensor per key, then serves whole batches by indexing those tensors (``__getitems__``: one gather
per key instead of a store read, an int16 conversion and a collate per item). The per-sample augmentation
draws are still made per ``(seed, epoch, index)`` by the compact view, so a resident loader yields exactly
the batches of the store loader for the same sampler order (tested in ``tests/data/test_resident.py``).

Where the tensors live (``where``):

* ``host``: host memory; pinned when CUDA is available, and each batch is gathered straight into a pinned
  buffer (torch's caching host allocator reuses it only after its copy to the GPU finished), so the
  host-to-device copy is asynchronous with no extra pinning copy;
* ``device``: the trial's GPU; batches are gathered there and nothing crosses the PCIe bus per batch
  (the memory then competes with the network's: the packing probe does not count it).

It is optional and sized: :func:`plan_resident` takes the training and validation views and a budget in
bytes and makes resident what fits (training first, then validation), saying in one line what it did and
why. Memory taken: ``slices x item_bytes`` (:func:`item_bytes`: 2 bytes per pixel, HU and mask packed in one
word by :mod:`.compact`, 3 where the windows do not allow packing, and a few bytes of label/index): the
paper's 29k femoral slices at 512^2 take 14.2 GiB with or without masks; 3.5 GiB at 256^2 and 0.22 GiB at
64^2.

With context slices (``context_slices = k > 0``) each slice is held once: the stacked keys (``hu`` /
``packed``, ``[2k + 1, H, W]`` per item) keep only each row's own (centre) slice, and a batch's stacks are
gathered by the rows of :attr:`.dataset.SliceDataset.context_rows` (one index per stacked slice). HU are
exactly the store's; in a packed stack a neighbour's word then carries that neighbour's own mask bit,
which the device unpack never reads (the mask comes from the centre slice, HU from bits 0-11).

Resident data is read in the trial's own process: loader workers would each need a copy, so the loader
of a resident view runs in the main process (:attr:`ResidentSlices.loader_settings`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .compact import CompactSlices

log = logging.getLogger(__name__)

GIB = float(1024**3)
WHERE = ("host", "device")
#: per-sample keys the compact view computes per epoch (never stored)
PER_EPOCH = frozenset({"aug"})
#: per-sample keys that stack the 2k + 1 context slices (held once per slice, gathered by context rows)
STACKED = frozenset({"hu", "packed"})


def _stored(item: Mapping[str, Any]) -> dict[str, Tensor]:
    return {k: v for k, v in item.items() if isinstance(v, Tensor) and k not in PER_EPOCH}


def _depth(view: Dataset) -> int:
    return 2 * int(getattr(view, "context_slices", 0)) + 1


def _own(key: str, value: Tensor, depth: int) -> Tensor:
    """What is held of one item's ``key``: a stacked key's centre slice (``[1, H, W]``), else all of it."""
    if key in STACKED and depth > 1:
        return value[depth // 2 : depth // 2 + 1]
    return value


def item_bytes(view: Dataset) -> int:
    """Bytes one resident sample of ``view`` takes (reads its first item; 0 for an empty view): with
    context slices one slice of the stack, the neighbours being other rows' own slices."""
    if len(view) == 0:  # type: ignore[arg-type]
        return 0
    d = _depth(view)
    return sum(_own(k, t, d).numel() * t.element_size() for k, t in _stored(view[0]).items())


def resident_bytes(view: Dataset) -> int:
    """Bytes the whole of ``view`` takes resident (:func:`item_bytes` x its length)."""
    return item_bytes(view) * len(view)  # type: ignore[arg-type]


def size_text(nbytes: float) -> str:
    """``1.23 GiB`` / ``45.6 MiB``: a byte count for a log line."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 1024**2:.1f} MiB"


def _passthrough(batch: Any) -> Any:
    return batch


class ResidentSlices(Dataset):
    """A :class:`CompactSlices` view held in memory (see the module docstring).

    Args:
        view: the compact view to load (read once, item by item).
        device: where the tensors live: ``cpu`` (host) or the trial's CUDA device.
        pin: pin host memory and gather batches into pinned buffers (host only; needs CUDA).
    """

    #: the epoch lives in the wrapped view; the loader runs in this process, so ``set_epoch`` reaches it
    epoch_is_shared = True

    def __init__(self, view: CompactSlices, *, device: str | torch.device = "cpu", pin: bool = False) -> None:
        self.view = view
        self.device = torch.device(device)
        self.pin = bool(pin) and self.device.type == "cpu" and torch.cuda.is_available()
        self.batch_transform = view.batch_transform
        self.depth = _depth(view)
        self.tensors = self._load()
        rows = np.asarray(view.base.context_rows, dtype=np.int64) if self.depth > 1 else None
        #: ``[n, 2k + 1]`` rows whose own slices make each row's stack (``None`` without context)
        self.rows = None if rows is None else torch.from_numpy(rows).to(self.device)

    def _load(self) -> dict[str, Tensor]:
        n = len(self.view)
        if n == 0:
            raise ValueError("cannot make an empty dataset resident")
        t0 = time.perf_counter()
        d = self.depth
        first = {k: _own(k, v, d) for k, v in _stored(self.view[0]).items()}
        on_host = self.device.type == "cpu"
        # device: filled through a host staging copy of the same layout, then moved in one go per key
        host = {
            k: torch.empty((n, *v.shape), dtype=v.dtype, pin_memory=self.pin and on_host)
            for k, v in first.items()
        }
        for i in range(n):
            item = first if i == 0 else {k: _own(k, v, d) for k, v in _stored(self.view[i]).items()}
            for k, v in item.items():
                host[k][i] = v
        out = host if on_host else {k: v.to(self.device) for k, v in host.items()}
        self.load_s = time.perf_counter() - t0
        return out

    @property
    def nbytes(self) -> int:
        """Bytes the resident tensors take."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def loader_settings(self) -> dict[str, Any]:
        """DataLoader settings this dataset needs (read by :func:`dvt_search.engine.device.make_loader`):
        batches come whole from ``__getitems__``, in this process, already pinned or on the device."""
        return {"num_workers": 0, "pin_memory": False, "collate_fn": _passthrough}

    def __len__(self) -> int:
        return len(self.view)

    @property
    def labels(self) -> np.ndarray:
        return self.view.labels

    @property
    def epoch(self) -> int:
        return self.view.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch``."""
        self.view.set_epoch(epoch)

    def __getitem__(self, i: Any) -> dict[str, Tensor]:
        """One sample, as the compact view's item (from memory)."""
        i = self.view.base._index(i)
        item = {k: v[i] for k, v in self.tensors.items()}
        if self.rows is not None:
            for k in STACKED & set(item):
                item[k] = self.tensors[k][self.rows[i]][:, 0]  # [2k + 1, H, W] from the rows' own slices
        draws = self.view.aug_draws(i)
        if draws is not None:
            item["aug"] = draws.to(self.device)
        return item

    def _gather(self, t: Tensor, index: Tensor) -> Tensor:
        if not self.pin:
            return t.index_select(0, index.to(t.device))
        out = torch.empty((len(index), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
        return torch.index_select(t, 0, index, out=out)

    def _gather_stack(self, t: Tensor, index: Tensor) -> Tensor:
        """``[B, 2k + 1, H, W]``: each sample's context rows' own slices (``t`` is ``[n, 1, H, W]``)."""
        rows = self.rows[index.to(self.rows.device)]  # type: ignore[index]
        flat = self._gather(t, rows.reshape(-1))
        return flat.view(len(index), rows.shape[1], *t.shape[2:])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """The collated batch of ``indices`` (what the default collate of the compact items gives)."""
        index = torch.as_tensor([self.view.base._index(i) for i in indices], dtype=torch.int64)
        batch = {
            k: self._gather_stack(v, index)
            if self.rows is not None and k in STACKED
            else self._gather(v, index)
            for k, v in self.tensors.items()
        }
        rows = [self.view.aug_draws(int(i)) for i in index]
        if rows and rows[0] is not None:
            aug = torch.stack(rows)
            batch["aug"] = aug.pin_memory() if self.pin else aug.to(self.device)
        return batch


@dataclass(frozen=True)
class ResidentPlan:
    """What :func:`plan_resident` decided: which views became resident, and the line saying so."""

    views: tuple[Any, ...]
    resident: tuple[bool, ...]
    nbytes: int
    message: str


def plan_resident(
    views: Mapping[str, Any], *, budget_bytes: float, where: str = "host", device: str | torch.device = "cpu"
) -> ResidentPlan:
    """Make resident, in order, each compact view of ``views`` (``{"train": ..., "val": ...}``) that still
    fits the budget; others stay on the store. ``where="device"`` needs ``device`` to be a CUDA device
    (else the data stays in host memory) and also checks the device's free memory.

    Returns:
        the views to train/validate on (resident or as given) and the trial-log line.
    """
    if where not in WHERE:
        raise ValueError(f"resident memory must be one of {WHERE}, got {where!r}")
    dev = torch.device(device)
    target = dev if where == "device" and dev.type == "cuda" else torch.device("cpu")
    free = float("inf")
    if target.type == "cuda":
        free = float(torch.cuda.mem_get_info(target)[0])
    left = min(float(budget_bytes), free)
    out, flags, used, parts, skipped = [], [], 0, [], []
    for name, view in views.items():
        need = resident_bytes(view) if isinstance(view, CompactSlices) and len(view) else None
        if need is None or need > left:
            out.append(view)
            flags.append(False)
            if need is not None:
                skipped.append(f"{name} needs {size_text(need)}, {size_text(left)} left")
            continue
        out.append(ResidentSlices(view, device=target, pin=dev.type == "cuda"))
        flags.append(True)
        used += need
        left -= need
        parts.append(f"{name} {len(view)} slices")
    place = (
        "GPU memory"
        if target.type == "cuda"
        else ("pinned host memory" if dev.type == "cuda" else "host memory")
    )
    budget = f"budget {size_text(float(budget_bytes))}"
    if parts:
        load_s = sum(v.load_s for v in out if isinstance(v, ResidentSlices))
        message = f"resident data: {' + '.join(parts)}, {size_text(used)} in {place} ({budget}), loaded in {load_s:.1f} s"
        if skipped:
            message += f"; from the store: {'; '.join(skipped)}"
    else:
        message = (
            f"resident data off ({'; '.join(skipped) or 'nothing to hold'}; {budget}): reading from the store"
        )
    return ResidentPlan(tuple(out), tuple(flags), used, message)

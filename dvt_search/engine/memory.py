"""GPU memory of a training step: a short real probe, and the share of a GPU a trial needs (no Ray here).

:func:`probe_peak_bytes` runs a few real training steps of a model (the engine's ``train_step``: bf16
autocast, channels_last, Adam, the family's own loss) on synthetic compact batches finished by the same
device transform as training, at the model's own input (its ``spec``: the input size and context slices
its params chose, which :mod:`dvt_search.runtime.packing` builds it at), and returns
``torch.cuda.max_memory_allocated`` over them: the weights,
gradients, Adam's two moments (allocated at the first step, so the peak is read after step 2+) and the
activations of one batch.

:func:`gpu_share` turns that peak into the fraction of a GPU one trial reserves. What the caching
allocator's peak does not count is added: ``margin`` (default 15 %) for the allocator's fragmentation
(reserved > allocated) and validation's different batch size, and ``overhead_bytes`` (default 768 MiB) per
process for the CUDA context and the cuDNN / cuBLAS workspaces. The share is ``1/k`` for the largest ``k``
(at most ``max_trials``) such that ``k`` trials fit: ``k x (peak x (1 + margin) + overhead) <= GPU memory``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .device import resolve_device
from .loop import prepare_batch, train_step
from .optim import build_optimizer

GIB = float(1024**3)
#: fragmentation of the caching allocator and validation batches (fraction of the measured peak)
DEFAULT_MARGIN = 0.15
#: per-process memory outside the allocator's count (CUDA context, cuDNN/cuBLAS workspaces)
DEFAULT_OVERHEAD_BYTES = 768 * 1024**2
#: most trials packed onto one GPU (beyond this the trials starve each other of compute)
DEFAULT_MAX_TRIALS = 8
#: Ray resources are kept with 4 decimals; a share is rounded down to them so k shares fit in 1
RAY_PRECISION = 1e-4


class PackingError(ValueError):
    """A trial cannot fit the GPU at all (the message names what it needs and what the GPU has)."""


def gpu_share(
    need_bytes: float,
    gpu_bytes: float,
    *,
    margin: float = DEFAULT_MARGIN,
    overhead_bytes: float = DEFAULT_OVERHEAD_BYTES,
    max_trials: int = DEFAULT_MAX_TRIALS,
    what: str = "a trial",
) -> float:
    """The GPU fraction ``1/k`` one trial reserves (see the module docstring).

    Args:
        need_bytes: the measured peak of one trial's training step (:func:`probe_peak_bytes`).
        gpu_bytes: the GPU's memory (``torch.cuda.get_device_properties(i).total_memory``).
        margin: extra fraction of ``need_bytes`` kept free per trial.
        overhead_bytes: per-process memory the peak does not count.
        max_trials: the most trials on one GPU.
        what: names the trial in the error (family, batch size, image size).

    Raises:
        PackingError: not even one such trial fits the GPU.
    """
    if need_bytes < 0 or gpu_bytes <= 0 or margin < 0 or max_trials < 1:
        raise ValueError(
            f"bad packing inputs: need {need_bytes}, gpu {gpu_bytes}, margin {margin}, k<={max_trials}"
        )
    per_trial = need_bytes * (1.0 + margin) + overhead_bytes
    k = min(int(max_trials), math.floor(gpu_bytes / per_trial + 1e-12))
    if k < 1:
        raise PackingError(
            f"{what} needs {per_trial / GIB:.2f} GiB of GPU memory (measured peak {need_bytes / GIB:.2f} GiB "
            f"+ {margin:.0%} margin + {overhead_bytes / GIB:.2f} GiB per process) but the GPU has "
            f"{gpu_bytes / GIB:.2f} GiB: lower the batch size or the image size"
        )
    return math.floor(1.0 / k / RAY_PRECISION + 1e-9) / round(1 / RAY_PRECISION)


def synthetic_compact_batch(model: Any, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A compact batch (int16 HU of the ``2k + 1`` context slices, uint8 mask when the family trains on
    masks) at the model's own input (its ``spec``: input size and context slices)."""
    s = int(model.spec.image_size)
    depth = 2 * int(getattr(model.spec, "context_slices", 0)) + 1
    gen = torch.Generator().manual_seed(0)
    hu = torch.randint(-1000, 400, (batch_size, depth, s, s), dtype=torch.int16, generator=gen)
    batch = {
        "hu": hu,
        "label": (torch.arange(batch_size) % 2).float(),
        "index": torch.arange(batch_size, dtype=torch.int64),
    }
    if model.uses_masks:
        batch["mask"] = (torch.rand(batch_size, 1, s, s, generator=gen) > 0.97).to(torch.uint8)
    return {k: v.to(device) for k, v in batch.items()}


def probe_peak_bytes(
    model: Any, batch_size: int, *, device: str | torch.device = "cuda", steps: int = 3
) -> int:
    """Peak allocated GPU bytes over ``steps`` (>= 2) real training steps of ``model`` (a ``TorchModel``).

    Raises:
        RuntimeError: ``device`` is not a CUDA device (there is no GPU memory to measure).
    """
    from ..data.device_transform import DeviceTransform

    dev = resolve_device(device)
    if dev.type != "cuda":
        raise RuntimeError(f"measuring GPU memory needs a CUDA device, got {dev}")
    module = model.module.to(dev).to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(module, model.loop_config())
    spec = model.spec
    finish = DeviceTransform(
        spec.image_size,
        spec.windows,
        None,
        mask=model.uses_masks,
        patches="patches" in model.batch_targets,
        centre=int(getattr(spec, "context_slices", 0)),
    )
    raw = synthetic_compact_batch(model, int(batch_size), dev)
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    module.train()
    for _ in range(max(2, int(steps))):
        batch = prepare_batch(raw, dev, True, finish)
        train_step(module, model, batch, optimizer, device=dev, amp=True)
    torch.cuda.synchronize(dev)
    return int(torch.cuda.max_memory_allocated(dev))


def gpu_memory_bytes(device: str | torch.device = "cuda") -> tuple[int, str]:
    """``(total memory in bytes, device name)`` of a CUDA device."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        raise RuntimeError(f"GPU memory needs a CUDA device, got {dev}")
    props = torch.cuda.get_device_properties(dev)
    return int(props.total_memory), str(props.name)

"""The shared epoch-at-a-time train/eval loop of every torch family (no Ray here).

Distributed data parallel runs go through two hooks the runtime supplies (``ray.train.torch.
prepare_model`` / ``prepare_data_loader``); this module only uses ``torch.distributed`` when a process
group is already initialised: to sum the training loss over ranks and to give every rank rank 0's
BatchNorm buffers before validation. Validation always runs on the full, unsharded validation set on
every rank with the bare (unwrapped) module, so all ranks report identical validation metrics.

A dataset may carry a ``batch_transform`` (:data:`BatchTransform`): the loop applies it to every batch
right after moving it to the device (:mod:`dvt_search.data.compact` ships compact int16 batches that
:mod:`dvt_search.data.device_transform` windows, resizes and augments there).

Loader workers (``cfg.num_workers``) persist for the whole ``fit`` when the dataset's epoch reaches them
(:func:`~.device.shares_epoch`; the compact view keeps it in shared memory); the validation loader is
built once per ``fit``. The compact view's batches come through a shared-memory ring
(:mod:`dvt_search.data.ring`: whole batches written by the workers, pinned on CUDA), except for the
training loader of a ``prepare_loader`` (DDP) fit. (Ray's ``prepare_data_loader`` rebuilds the training loader without
``persistent_workers``: under DDP its workers start each epoch, which stays correct.)

Per-epoch metrics (floats): ``train_loss`` and ``train_loss_<part>``, ``val_loss`` and
``val_loss_<part>``, ``val_auc``, ``val_precision``, ``val_recall`` at ``val_threshold`` (maximal Youden
J on the validation set), the task's extras as ``val_<name>``, ``lr``, ``wall_s`` (the whole epoch) and
``img_per_s`` (training images per second, all ranks together).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .device import (
    autocast,
    dist_active,
    epoch_seed,
    make_loader,
    resolve_device,
    seed_all,
    to_device,
    unwrap,
)
from .errors import FitError
from .metrics import classification_metrics
from .optim import LoopConfig, build_optimizer

log = logging.getLogger(__name__)

Outputs = dict[str, Tensor]
Batch = dict[str, Any]
#: Called after every epoch with (epoch counted from 1, metrics, train_state); ``True`` stops training.
EpochHook = Callable[[int, dict[str, float], dict[str, Any]], "bool | None"]
#: Finishes a batch on its device (e.g. :class:`dvt_search.data.device_transform.DeviceTransform`).
BatchTransform = Callable[[Batch], Batch]


class TrainTask(Protocol):
    """What a family supplies to the loop besides its ``nn.Module`` (whose forward returns a dict)."""

    def compute_loss(self, outputs: Outputs, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar loss and its named, unweighted parts (float32 ``outputs``)."""
        ...

    def slice_scores(self, outputs: Outputs) -> Tensor:
        """Per-slice DVT probabilities ``[B]``."""
        ...

    def val_collect(self, outputs: Outputs, batch: Batch) -> dict[str, Tensor]:
        """Per-batch tensors (first axis = batch) kept for :meth:`val_summarize`; may be empty."""
        ...

    def val_summarize(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        """Extra validation metrics (reported with a ``val_`` prefix)."""
        ...


def _as_float(outputs: Outputs) -> Outputs:
    return {k: v.float() for k, v in outputs.items()}


def batch_transform_of(dataset: Any) -> BatchTransform | None:
    """The dataset's on-device batch finish (``dataset.batch_transform``), or ``None``."""
    return getattr(dataset, "batch_transform", None)


def prepare_batch(
    raw: Batch, device: torch.device, channels_last: bool, transform: BatchTransform | None
) -> Batch:
    """Move ``raw`` to ``device``, apply the dataset's batch transform there, make the image NHWC if asked."""
    batch = to_device(raw, device, channels_last)
    if transform is None:
        return batch
    batch = transform(batch)
    if channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    return batch


def _check_finite(pending: list[Tensor], last_batch: int, epoch: int, parts: Mapping[str, Tensor]) -> None:
    values = torch.stack(pending)
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        batch = last_batch - len(pending) + 1 + first
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        raise FitError(
            f"non-finite training loss {float(values[first])} at epoch {epoch + 1}, batch {batch}"
            + (f" (latest parts: {detail})" if detail else "")
            + "; try a lower lr or grad_clip"
        )
    pending.clear()


def train_step(
    model: nn.Module,
    task: TrainTask,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    amp: bool,
    grad_clip: float = 0.0,
    check: Callable[[Tensor, dict[str, Tensor]], None] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimisation step on a batch already on ``device``; returns the detached loss and parts.

    ``check`` sees the loss before the backward pass (the loop's NaN/inf guard).
    """
    with autocast(device, amp):
        outputs = model(batch["image"])
    loss, parts = task.compute_loss(_as_float(outputs), batch)
    if check is not None:
        check(loss, parts)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach(), {k: v.detach() for k, v in parts.items()}


def _train_epoch(
    model: nn.Module,
    task: TrainTask,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: LoopConfig,
    device: torch.device,
    epoch: int,
) -> tuple[dict[str, float], int]:
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    cl = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    sync_every = cfg.sync_every or (16 if device.type == "cuda" else 1)
    model.train()
    total = torch.zeros((), device=device)
    part_sums: dict[str, Tensor] = {}
    pending: list[Tensor] = []
    n = 0
    b = -1

    def guard(loss: Tensor, parts: dict[str, Tensor]) -> None:
        pending.append(loss.detach())
        if len(pending) >= sync_every:
            _check_finite(pending, b, epoch, parts)

    transform = batch_transform_of(loader.dataset)
    for b, raw in enumerate(loader):  # noqa: B007 (``guard`` reads ``b``)
        batch = prepare_batch(raw, device, cl, transform)
        bs = int(batch["image"].shape[0])
        loss, parts = train_step(
            model, task, batch, optimizer, device=device, amp=amp, grad_clip=cfg.grad_clip, check=guard
        )
        total += loss * bs
        for k, v in parts.items():
            part_sums[k] = part_sums.get(k, torch.zeros((), device=device)) + v * bs
        n += bs
    if pending:
        _check_finite(pending, b, epoch, {})
    keys = sorted(part_sums)
    sums = torch.stack([total, *(part_sums[k] for k in keys), torch.tensor(float(n), device=device)])
    if dist_active():
        torch.distributed.all_reduce(sums)
    sums_cpu = sums.double().cpu().tolist()
    count = int(sums_cpu[-1])
    if count == 0:
        raise FitError(f"epoch {epoch + 1}: the training loader yielded no samples")
    metrics = {"train_loss": sums_cpu[0] / count}
    metrics.update({f"train_loss_{k}": s / count for k, s in zip(keys, sums_cpu[1:-1])})
    return metrics, count


def eval_loader(dataset: Dataset, cfg: LoopConfig, device: torch.device, *, persistent: bool = False):
    """The unshuffled inference loader of ``dataset`` (``persistent``: workers kept between passes)."""
    return make_loader(
        dataset,
        cfg.eval_batch,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent=persistent,
        ring=True,  # run_inference is done with a batch before it fetches the next
    )


@torch.inference_mode()
def run_inference(
    module: nn.Module,
    task: TrainTask,
    dataset: Dataset,
    cfg: LoopConfig,
    device: torch.device,
    *,
    with_loss: bool,
    loader: DataLoader | None = None,
) -> dict[str, Any]:
    """Scores (and, with ``with_loss``, labels, mean loss parts and collected extras) over ``dataset``.

    ``loader`` is a loader of ``dataset`` built earlier (:func:`eval_loader`; ``fit`` keeps one for every
    validation); without it one is built for this call.
    """
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    cl = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if loader is None:
        loader = eval_loader(dataset, cfg, device)
    module.eval()
    scores: list[Tensor] = []
    labels: list[Tensor] = []
    sums: dict[str, float] = {}
    collected: dict[str, list[Tensor]] = {}
    n = 0
    transform = batch_transform_of(dataset)
    for raw in loader:
        batch = prepare_batch(raw, device, cl, transform)
        with autocast(device, amp):
            outputs = module(batch["image"])
        outputs = _as_float(outputs)
        scores.append(task.slice_scores(outputs).reshape(-1).cpu())
        if not with_loss:
            continue
        bs = int(batch["image"].shape[0])
        loss, parts = task.compute_loss(outputs, batch)
        for k, v in {"loss": loss, **{f"loss_{p}": t for p, t in parts.items()}}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * bs
        labels.append(batch["label"].reshape(-1).cpu())
        for k, v in task.val_collect(outputs, batch).items():
            collected.setdefault(k, []).append(v.detach().float().cpu())
        n += bs
    result: dict[str, Any] = {
        "scores": torch.cat(scores).double().numpy() if scores else np.zeros(0),
    }
    if with_loss:
        result["labels"] = torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros(0, np.int64)
        result["losses"] = {k: v / max(n, 1) for k, v in sums.items()}
        result["collected"] = {k: torch.cat(v).numpy() for k, v in collected.items()}
    return result


def evaluate(
    module: nn.Module,
    task: TrainTask,
    dataset: Dataset,
    cfg: LoopConfig,
    device: torch.device,
    prefix: str = "val_",
    loader: DataLoader | None = None,
) -> dict[str, float]:
    """Loss, AUC, precision/recall at the Youden threshold and the task's extras on ``dataset``."""
    out = run_inference(module, task, dataset, cfg, device, with_loss=True, loader=loader)
    metrics = {f"{prefix}{k}": v for k, v in out["losses"].items()}
    cls = classification_metrics(out["labels"], out["scores"])
    metrics.update({f"{prefix}{k}": v for k, v in cls.items()})
    metrics.update({f"{prefix}{k}": float(v) for k, v in task.val_summarize(out["collected"]).items()})
    return metrics


def _sync_buffers(module: nn.Module) -> None:
    if dist_active():
        for buf in module.buffers():
            torch.distributed.broadcast(buf, src=0)


def fit(
    module: nn.Module,
    task: TrainTask,
    train_ds: Dataset,
    val_ds: Dataset,
    cfg: LoopConfig,
    *,
    start_epoch: int,
    end_epoch: int,
    train_state: Mapping[str, Any] | None = None,
    on_epoch: EpochHook | None = None,
    prepare_model: Callable[[nn.Module], nn.Module] | None = None,
    prepare_loader: Callable[[DataLoader], DataLoader] | None = None,
    is_main: bool = True,
) -> None:
    """Train epochs ``start_epoch .. end_epoch - 1`` (0-based), validating after each.

    Args:
        module: the bare model; moved to the device (and NHWC on CUDA) in place.
        task: the family's loss/score hooks.
        train_ds: training dataset (sharded only through ``prepare_loader``).
        val_ds: validation dataset (never sharded).
        cfg: loop configuration.
        start_epoch: epochs already done (resume point; the schedule continues from there).
        end_epoch: total epochs after this call.
        train_state: ``{"optimizer": ..., "scheduler": ...}`` state dicts from an earlier run.
        on_epoch: called after every epoch; returning ``True`` stops.
        prepare_model: wraps the model for DDP (e.g. ``ray.train.torch.prepare_model``).
        prepare_loader: wraps the training loader (e.g. ``ray.train.torch.prepare_data_loader``).
        is_main: whether this process logs progress (rank 0).

    Raises:
        FitError: on a NaN/inf loss (naming epoch and batch) or an empty training set.
    """
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    cl = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    module.to(device)
    if cl:
        module.to(memory_format=torch.channels_last)
    train_model = prepare_model(module) if prepare_model is not None else module
    bare = unwrap(train_model)
    optimizer, scheduler = build_optimizer(bare, cfg, start_epoch=0 if train_state else start_epoch)
    if train_state:
        optimizer.load_state_dict(train_state["optimizer"])
        scheduler.load_state_dict(train_state["scheduler"])
    rank = torch.distributed.get_rank() if dist_active() else 0
    generator = torch.Generator()
    loader = make_loader(
        train_ds,
        cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent=True,
        ring=prepare_loader is None,  # Ray Train rebuilds a DataLoader from the loader's fields
    )
    if prepare_loader is not None:
        loader = prepare_loader(loader)
    val_loader = eval_loader(val_ds, cfg, device, persistent=True)  # one for every validation
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        seed_all(epoch_seed(cfg.seed, epoch) + rank)
        generator.manual_seed(epoch_seed(cfg.seed, epoch))
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        if isinstance(getattr(loader, "sampler", None), DistributedSampler):
            loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        metrics, count = _train_epoch(train_model, task, loader, optimizer, cfg, device, epoch)
        train_s = time.perf_counter() - t0
        scheduler.step()
        _sync_buffers(bare)
        metrics.update(evaluate(bare, task, val_ds, cfg, device, loader=val_loader))
        metrics.update(lr=lr, wall_s=time.perf_counter() - t0, img_per_s=count / max(train_s, 1e-9))
        if is_main:
            log.info(
                "epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f (%.1f img/s)",
                epoch + 1,
                metrics["train_loss"],
                metrics["val_loss"],
                metrics["val_auc"],
                metrics["img_per_s"],
            )
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if on_epoch is not None and on_epoch(epoch + 1, metrics, state):
            break

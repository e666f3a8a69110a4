"""Training configuration, the Adam optimizer and the learning-rate schedules (paper section 5.2).

The schedule is a pure function of the epoch index (:func:`lr_factor`), wrapped in a ``LambdaLR`` whose
only state is ``last_epoch``: a resumed run continues at exactly the same schedule position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SCHEDULES = ("step", "cosine", "none")


@dataclass(frozen=True)
class LoopConfig:
    """Everything the shared loop needs besides the model, the task hooks and the data.

    Attributes:
        batch_size: training batch size per process (paper: 10).
        eval_batch_size: validation/prediction batch size (``None``: twice ``batch_size``).
        lr: Adam learning rate (paper: 1e-3).
        weight_decay: Adam weight decay (L2).
        schedule: ``"step"`` (multiply by ``step_gamma`` every ``step_size`` epochs; the paper divides by
            10 every epoch), ``"cosine"`` (to ``cosine_eta_min * lr`` over ``max_epochs``) or ``"none"``.
        step_size: epochs between step decays.
        step_gamma: step decay factor.
        cosine_eta_min: final cosine learning rate as a fraction of ``lr``.
        warmup_epochs: linear warm-up epochs before the schedule starts (0 = none).
        max_epochs: the horizon of the cosine schedule; later epochs keep its final value.
        grad_clip: clip the global gradient norm to this value (0 = off).
        seed: seeds weights' data order, dropout and augmentation (per epoch, so resuming is exact).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: bf16 autocast; ``None`` = on for CUDA, off on CPU.
        channels_last: NHWC memory format; ``None`` = on for CUDA, off on CPU.
        num_workers: DataLoader worker processes.
        sync_every: check the loss for NaN/inf every this many batches (``None``: 1 on CPU, 16 on CUDA,
            where each check waits for the GPU).
        deterministic: cuDNN deterministic algorithms (slower) instead of cuDNN autotuning.
    """

    batch_size: int = 10
    eval_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "step"
    step_size: int = 1
    step_gamma: float = 0.1
    cosine_eta_min: float = 0.0
    warmup_epochs: int = 0
    max_epochs: int = 10
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    num_workers: int = 0
    sync_every: int | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.step_size >= 1, "step_size must be >= 1"),
            (0 < self.step_gamma <= 1, "step_gamma must be in (0, 1]"),
            (0 <= self.cosine_eta_min <= 1, "cosine_eta_min must be in [0, 1]"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.max_epochs >= 1, "max_epochs must be >= 1"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.sync_every is None or self.sync_every >= 1, "sync_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size


def lr_factor(epoch: int, cfg: LoopConfig) -> float:
    """Multiplier of ``cfg.lr`` during epoch ``epoch`` (0-based)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    e = epoch - cfg.warmup_epochs
    if cfg.schedule == "step":
        return cfg.step_gamma ** (e // cfg.step_size)
    if cfg.schedule == "cosine":
        horizon = max(1, cfg.max_epochs - cfg.warmup_epochs)
        t = min(e, horizon) / horizon
        return cfg.cosine_eta_min + (1.0 - cfg.cosine_eta_min) * 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def build_optimizer(
    module: nn.Module, cfg: LoopConfig, start_epoch: int = 0
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over the trainable parameters and the epoch-wise schedule of ``cfg``, placed at ``start_epoch``.

    ``start_epoch`` matters when no saved optimizer/scheduler state follows (a resume from a weights-only
    checkpoint): the learning rate is then the schedule's value at that epoch, not at epoch 0.

    The multi-tensor (``foreach``) Adam is used on the CPU (about a third faster than the per-tensor
    default there) and the fused kernel on CUDA; all keep the same state format.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    on_cuda = bool(params) and params[0].device.type == "cuda"
    optimizer = torch.optim.Adam(
        params,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        foreach=None if on_cuda else True,
        fused=on_cuda or None,
    )
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, cfg), last_epoch=int(start_epoch) - 1
    )
    return optimizer, scheduler

"""Families used only by the runtime tests, loaded in Ray workers through ``--plugin dvt_test_plugins``.

* ``tiny_cnn``: a real torch family through the shared engine, without BatchNorm or dropout (so DDP
  with averaged gradients is numerically equivalent to one process on the union batches). Knobs for fault
  injection: ``fail_attempts`` (the first N attempts of a trial raise right after reporting one epoch),
  ``state_dir`` (where attempts are logged as ``<trial id> <epochs done at start> <node id>`` lines; in a
  ``ray-train`` trial every rank logs its own line) and ``epoch_s`` (a pause after each epoch, before it is
  reported).
* ``tiny_cnn_broken``: ``tiny_cnn`` that fails on every attempt by default.
* ``tiny_cnn_oom``: ``tiny_cnn`` whose training forward raises ``torch.OutOfMemoryError`` after
  ``oom_after_epochs`` epochs (0: in its first step).
* ``scripted``: no training at all; reports ``val_auc = quality * (1 - 0.5 ** epoch)`` after sleeping
  ``epoch_s`` per epoch, so schedulers face a known ranking at every rung; a trial ended inside a report
  (stopped) sleeps ``unwind_s`` before its thread ends (a slow clean-up).
* ``scripted_gpu`` (and ``scripted_gpu_b``, a second one): ``scripted`` whose trials reserve ``--gpus-per-trial`` GPUs (no GPU is touched: the
  GPUs of a simulated cluster are fake resources).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dvt_search.families import register
from dvt_search.families.base import DataSpec, EpochReport, Family, FitData, Model, TrialNeeds, read_meta
from dvt_search.families.torch_family import COMMON_DEFAULTS, TorchFamily, TorchModel


def _where() -> tuple[str, str]:
    """(Tune trial id, Ray node id) of this process, or placeholders outside Tune/Ray.

    In a Ray Train worker of a ``ray-train`` trial the trial id is the Train run's name (the runtime names
    each Train run after its Tune trial).
    """
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray
        return "local", "none"
    tid = None
    try:
        import ray.tune

        with warnings.catch_warnings():  # a Train worker: Ray warns and returns None
            warnings.simplefilter("ignore", UserWarning)
            tid = ray.tune.get_context().get_trial_id()
    except Exception:  # noqa: BLE001 - not inside a Tune trial
        pass
    if not tid:
        try:
            import ray.train

            tid = ray.train.get_context().get_experiment_name()
        except Exception:  # noqa: BLE001 - not inside a Ray Train worker either
            pass
    return tid or "local", node


def log_attempt(state_dir: str | None, epochs_done: int) -> int:
    """Append ``<trial id> <epochs done> <node id>`` to ``<state_dir>/attempts.log``.

    Returns:
        the attempt number of this trial (1 for its first start).
    """
    if not state_dir:
        return 1
    path = Path(state_dir) / "attempts.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    tid, node = _where()
    with open(path, "a") as fh:
        fh.write(f"{tid} {epochs_done} {node}\n")
    return sum(1 for line in path.read_text().splitlines() if line.split()[0] == tid)


def read_attempts(state_dir: str | os.PathLike[str]) -> list[tuple[str, int, str]]:
    """Every logged attempt as ``(trial id, epochs done at its start, node id)``."""
    path = Path(state_dir) / "attempts.log"
    if not path.is_file():
        return []
    return [(a, int(b), c) for a, b, c in (line.split() for line in path.read_text().splitlines())]


class TinyNet(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return {"logit": self.head(h).squeeze(1)}


class TinyModel(TorchModel):
    family: ClassVar[str] = "tiny_cnn"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        return TinyNet(spec.in_channels)

    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]):
        loss = nn.functional.binary_cross_entropy_with_logits(outputs["logit"], batch["label"])
        return loss, {}

    def fit(self, data: FitData, epochs: int, callback: Any = None, **kwargs: Any) -> list[EpochReport]:
        attempt = log_attempt(self.params.get("state_dir"), self.epochs_done)
        fail = attempt <= int(self.params.get("fail_attempts", 0))
        pause = float(self.params.get("epoch_s", 0.0))

        def on_epoch(report: EpochReport, model: Model) -> bool:
            time.sleep(pause)  # a slower epoch, so a test can act while the trial is mid-run
            stop = bool(callback(report, model)) if callback is not None else False
            if fail:
                raise RuntimeError(f"injected failure in attempt {attempt} after epoch {report.epoch}")
            return stop

        return super().fit(data, epochs, on_epoch, **kwargs)


@register
class TinyCnn(TorchFamily):
    name: ClassVar[str] = "tiny_cnn"
    model_cls: ClassVar[type[TorchModel]] = TinyModel

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**COMMON_DEFAULTS, "schedule": "none", "fail_attempts": 0, "state_dir": None, "epoch_s": 0.0}


class BrokenModel(TinyModel):
    family: ClassVar[str] = "tiny_cnn_broken"


@register
class TinyCnnBroken(TorchFamily):
    name: ClassVar[str] = "tiny_cnn_broken"
    model_cls: ClassVar[type[TorchModel]] = BrokenModel

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**TinyCnn.default_params(), "fail_attempts": 1000}


class OomNet(TinyNet):
    """``TinyNet`` whose training forward raises CUDA's out-of-memory error once ``armed``."""

    armed = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training and self.armed:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"
            )
        return super().forward(x)


class OomModel(TinyModel):
    """Runs out of GPU memory in the first training step after ``oom_after_epochs`` epochs."""

    family: ClassVar[str] = "tiny_cnn_oom"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        net = OomNet(spec.in_channels)
        net.armed = int(params["oom_after_epochs"]) == 0
        return net

    def fit(self, data: FitData, epochs: int, callback: Any = None, **kwargs: Any) -> list[EpochReport]:
        def on_epoch(report: EpochReport, model: Model) -> bool:
            stop = bool(callback(report, model)) if callback is not None else False
            if report.epoch >= int(self.params["oom_after_epochs"]):
                self.module.armed = True
            return stop

        return super().fit(data, epochs, on_epoch, **kwargs)


@register
class TinyCnnOom(TorchFamily):
    name: ClassVar[str] = "tiny_cnn_oom"
    model_cls: ClassVar[type[TorchModel]] = OomModel

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**TinyCnn.default_params(), "oom_after_epochs": 1}


class ScriptedModel(Model):
    family: ClassVar[str] = "scripted"

    def fit(self, data: FitData, epochs: int, callback: Any = None, **kwargs: Any) -> list[EpochReport]:
        log_attempt(self.params.get("state_dir"), self.epochs_done)
        out = []
        try:
            for epoch in range(self.epochs_done + 1, epochs + 1):
                time.sleep(float(self.params["epoch_s"]))
                report = EpochReport(epoch, {"val_auc": float(self.params["quality"]) * (1 - 0.5**epoch)})
                self.epochs_done = epoch
                self.history.append(report)
                out.append(report)
                if callback is not None and callback(report, self):
                    break
        except BaseException:  # stopped inside a report (Tune ends the thread): a slow clean-up, if asked
            time.sleep(float(self.params.get("unwind_s", 0.0)))
            raise
        return out

    def predict(self, dataset: Any) -> np.ndarray:
        return np.full(len(dataset), float(self.params["quality"]))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        self.write_meta(Path(directory))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ScriptedModel:
        meta = read_meta(directory)
        model = cls(meta["params"], DataSpec.from_dict(meta["spec"]))
        model.epochs_done = int(meta["epochs_done"])
        model.history = [EpochReport(h.pop("epoch"), h) for h in (dict(x) for x in meta["history"])]
        return model


@register
class Scripted(Family):
    name: ClassVar[str] = "scripted"
    trains_by_epoch: ClassVar[bool] = True  # scheduled like a CNN: an epoch budget, ASHA, checkpoints

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"quality": 0.5, "epoch_s": 0.2, "state_dir": None, "seed": 0, "unwind_s": 0.0}

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> ScriptedModel:
        return ScriptedModel(cls.resolve_params(params), spec)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ScriptedModel:
        return ScriptedModel.load(directory)


class ScriptedGpuModel(ScriptedModel):
    family: ClassVar[str] = "scripted_gpu"


@register
class ScriptedGpu(Scripted):
    """``scripted`` whose trials reserve ``--gpus-per-trial`` GPUs (fake GPUs on a simulated cluster)."""

    name: ClassVar[str] = "scripted_gpu"

    @classmethod
    def trial_needs(
        cls, *, max_epochs: int, cpus: float, gpus: float, train_workers: int, trainer: str
    ) -> TrialNeeds:
        return TrialNeeds(budget=int(max_epochs), cpus=float(cpus), gpus=float(gpus))

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> ScriptedGpuModel:
        return ScriptedGpuModel(cls.resolve_params(params), spec)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ScriptedGpuModel:
        return ScriptedGpuModel.load(directory)


class ScriptedGpuBModel(ScriptedModel):
    family: ClassVar[str] = "scripted_gpu_b"


@register
class ScriptedGpuB(ScriptedGpu):
    """A second GPU family like ``scripted_gpu`` (several GPU families searched at once)."""

    name: ClassVar[str] = "scripted_gpu_b"

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> ScriptedGpuBModel:
        return ScriptedGpuBModel(cls.resolve_params(params), spec)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ScriptedGpuBModel:
        return ScriptedGpuBModel.load(directory)

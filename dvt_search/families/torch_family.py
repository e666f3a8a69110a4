"""``TorchModel``: fit/predict/save/load of every CNN family through the shared engine.

A subclass supplies the network (``make_module``), its loss (``compute_loss``) and, where it has them,
extra validation metrics; the module's ``forward`` returns a dict with at least ``"logit"`` (``[B]``, the
slice DVT logit). Checkpoint directory (written atomically)::

    meta.json        family, params, data spec, epochs_done, per-epoch history
    weights.pt       module.state_dict()                 (torch.save; loaded with weights_only=True)
    train_state.pt   optimizer + LR-scheduler state      (for resuming; weights_only=True)

Training batches are compact (:mod:`dvt_search.data.compact`: int16 HU, the uint8 mask only for a
family whose :attr:`TorchModel.batch_targets` name it) and finished on the trial's device; ``predict`` /
``evaluate`` read the datasets they are given (the CPU reference path deployment uses).

A model's input is its own (:attr:`Model.spec`): the whole-slice families take ``input_size`` (``None`` =
the run's ``--size``) and ``context_slices`` (``k``: the ``±k`` neighbouring slices of the same scan as
extra channels, 0 = the paper's single slice) as params (:data:`INPUT_DEFAULTS`,
:meth:`TorchFamily.model_spec`). A :class:`~dvt_search.data.dataset.SliceDataset` handed to ``fit`` /
``predict`` / ``evaluate`` at the run's input is read at the model's
(:meth:`~dvt_search.data.dataset.SliceDataset.with_input`), so the store stays at its native size.

``fit(data, epochs)`` on a loaded model continues from ``epochs_done`` at the same schedule position;
data order, dropout and augmentation are seeded per ``(seed, epoch)``, so on the CPU a resumed run
reproduces an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.compact import CompactSlices
from ..data.dataset import SliceDataset
from ..data.resident import GIB, plan_resident
from ..data.resident import log as resident_log
from ..engine import loop
from ..engine.checkpoint import cpu_state, load_tensors
from ..engine.device import resolve_device
from ..engine.losses import bce
from ..engine.optim import LoopConfig
from ..fsutil import atomic_directory
from .base import (
    DataSpec,
    EpochCallback,
    EpochReport,
    ExportedScorer,
    Family,
    FitData,
    Model,
    TrialNeeds,
    read_meta,
)

WEIGHTS_FILE = "weights.pt"
TRAIN_STATE_FILE = "train_state.pt"
CHECKPOINT_FORMAT = "dvt-search-torch-checkpoint/1"

#: Knobs of the shared loop, with the paper's settings (Adam, lr 1e-3, batch 10, lr / 10 every epoch).
COMMON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 10,
    "schedule": "step",
    "step_size": 1,
    "step_gamma": 0.1,
    "cosine_eta_min": 0.0,
    "warmup_epochs": 0,
    "max_epochs": 10,
    "grad_clip": 0.0,
    "seed": 0,
}

#: The network input knobs of the whole-slice families (see the module docstring; resolved by
#: :meth:`TorchFamily.model_spec`).
INPUT_DEFAULTS: dict[str, Any] = {"input_size": None, "context_slices": 0}
#: The most context slices on each side a model may take.
MAX_CONTEXT_SLICES = 8

_LOOP_FIELDS = {f.name for f in dataclasses.fields(LoopConfig)}


def input_spec(params: Mapping[str, Any], spec: DataSpec) -> DataSpec:
    """``spec`` with the ``input_size`` / ``context_slices`` of ``params`` (absent or ``None``: kept).

    Raises:
        ValueError: a size below 8 or a context outside ``0 .. MAX_CONTEXT_SLICES``, naming the param.
    """
    size, k = params.get("input_size"), params.get("context_slices")
    if size is not None:
        if isinstance(size, bool) or int(size) != size or int(size) < 8:
            raise ValueError(f"parameter 'input_size' must be an integer >= 8 or null, got {size!r}")
        size = int(size)
    if k is not None:
        if isinstance(k, bool) or int(k) != k or not 0 <= int(k) <= MAX_CONTEXT_SLICES:
            raise ValueError(
                f"parameter 'context_slices' must be an integer in [0, {MAX_CONTEXT_SLICES}], got {k!r}"
            )
        k = int(k)
    return spec.with_input(image_size=size, context_slices=k)


def slice_bce(outputs: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 1 on the slice logit: the whole loss of the classification-only families (no parts)."""
    return bce(outputs["logit"], batch["label"]), {}


class TorchModel(Model):
    """A CNN family's model: ``self.module`` is the bare ``nn.Module`` (the runtime may wrap it)."""

    #: whether the image side must be a multiple of 32 (encoder-decoder and patch-grid networks)
    needs_multiple_of_32: ClassVar[bool] = False
    #: whether the network has a vein detector (:meth:`vein_map` returns a map); the deployed scope check
    #: asks it where it sees veins (see :meth:`TorchScriptScorer.vein_fractions
    #: <dvt_search.families.torch_export.TorchScriptScorer.vein_fractions>`)
    detects_veins: ClassVar[bool] = False
    #: what ``compute_loss`` / ``val_collect`` read from a batch besides ``image`` and ``label``:
    #: ``"mask"`` and/or ``"patches"``. Training batches carry only these (see :meth:`training_view`).
    batch_targets: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool = True) -> None:
        super().__init__(params, spec)
        if self.needs_multiple_of_32 and spec.image_size % 32:
            raise ValueError(f"{self.family}: image_size must be a multiple of 32, got {spec.image_size}")
        self.loop_config()  # validates the loop knobs now rather than at fit time
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.params["seed"]))
            self.module: nn.Module = self.make_module(self.params, spec, load_pretrained=load_pretrained)
        self.train_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------- hooks for subclasses
    @abstractmethod
    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        """The network for ``params``; ``load_pretrained=False`` when a checkpoint will overwrite it."""

    @abstractmethod
    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss and its named parts (reported as ``train_loss_<name>``)."""

    def slice_scores(self, outputs: dict[str, Tensor]) -> Tensor:
        """Per-slice DVT probabilities ``[B]``."""
        return torch.sigmoid(outputs["logit"])

    def vein_map(self, outputs: dict[str, Tensor]) -> Tensor | None:
        """Vein probabilities ``[B, h, w]`` in [0, 1] (per pixel or per patch), or ``None`` without a detector.

        Overridden together with :attr:`detects_veins` by the families that learn where the veins are.
        """
        return None

    def val_collect(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """Per-batch values for :meth:`val_summarize` (none by default)."""
        return {}

    def val_summarize(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        """Extra validation metrics, reported as ``val_<name>`` (none by default)."""
        return {}

    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM explains (see :mod:`dvt_search.engine.cam`)."""
        return self.module.cam_layer()

    # ----------------------------------------------------------------- training and inference
    def loop_config(self, **overrides: Any) -> LoopConfig:
        """The engine configuration from this model's params (plus runtime ``overrides``)."""
        values = {k: v for k, v in self.params.items() if k in _LOOP_FIELDS}
        values.update(overrides)
        for key in ("batch_size", "step_size", "warmup_epochs", "max_epochs", "seed"):
            values[key] = int(values[key])
        return LoopConfig(**values)

    @property
    def uses_masks(self) -> bool:
        """Whether training batches must carry the vein mask (for the mask itself or the patch targets)."""
        return bool(self.batch_targets & {"mask", "patches"})

    def input_view(self, dataset: Any) -> Any:
        """A :class:`~dvt_search.data.dataset.SliceDataset` at this model's input (size, windows, context
        slices of :attr:`spec`); any other dataset as it is (it must yield the model's input itself)."""
        if not isinstance(dataset, SliceDataset):
            return dataset
        s = self.spec
        return dataset.with_input(size=s.image_size, windows=s.windows, context_slices=s.context_slices)

    def training_view(self, dataset: Any) -> Any:
        """What the loop trains/validates on: a :class:`~dvt_search.data.dataset.SliceDataset` becomes its
        compact view at the model's input (int16 HU of the context slices, a uint8 mask only when
        :attr:`uses_masks`), finished on the device; any other dataset is used as it is."""
        if not isinstance(dataset, SliceDataset):
            return dataset
        return CompactSlices(
            self.input_view(dataset), with_mask=self.uses_masks, patches="patches" in self.batch_targets
        )

    def _views(self, data: FitData, device: str | torch.device, is_main: bool) -> tuple[Any, Any]:
        """The training and validation views; resident in memory where ``data`` asks and they fit."""
        train, val = self.training_view(data.train), self.training_view(data.val)
        if data.resident_budget_gb <= 0:
            return train, val
        plan = plan_resident(
            {"train": train, "val": val},
            budget_bytes=data.resident_budget_gb * GIB,
            where=data.resident_on,
            device=resolve_device(device),
        )
        if is_main:  # on the resident module's logger: the runtime shows it in the trial's log
            (resident_log.info if any(plan.resident) else resident_log.warning)(
                "%s: %s", self.family, plan.message
            )
        return plan.views

    def _check_data(self, dataset: Any, what: str) -> None:
        image = self.input_view(dataset)[0]["image"]
        expected = (self.spec.in_channels, self.spec.image_size, self.spec.image_size)
        if tuple(image.shape) != expected:
            raise ValueError(
                f"{self.family}: {what} images have shape {tuple(image.shape)} but the model's data spec "
                f"expects {expected} (channels = (2 x context_slices + 1) x HU windows, image_size)"
            )

    def fit(
        self,
        data: FitData,
        epochs: int,
        callback: EpochCallback | None = None,
        *,
        device: str | torch.device = "auto",
        prepare_model: Callable[[nn.Module], nn.Module] | None = None,
        prepare_loader: Callable[[DataLoader], DataLoader] | None = None,
        is_main: bool = True,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> list[EpochReport]:
        """Train until ``epochs`` epochs are done in total; see :func:`dvt_search.engine.loop.fit`.

        ``device``/``prepare_model``/``prepare_loader``/``is_main`` let the runtime run DDP; ``amp`` and
        ``channels_last`` default to on for CUDA, off on CPU.
        """
        if epochs <= self.epochs_done:
            return []
        self._check_data(data.train, "training")
        self._check_data(data.val, "validation")
        cfg = self.loop_config(
            device=str(device), num_workers=data.num_workers, amp=amp, channels_last=channels_last
        )
        reports: list[EpochReport] = []

        def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> bool:
            self.epochs_done = epoch
            self.train_state = state
            report = EpochReport(epoch=epoch, metrics={k: float(v) for k, v in metrics.items()})
            self.history.append(report)
            reports.append(report)
            return bool(callback(report, self)) if callback is not None else False

        train_view, val_view = self._views(data, device, is_main)
        loop.fit(
            self.module,
            self,
            train_view,
            val_view,
            cfg,
            start_epoch=self.epochs_done,
            end_epoch=epochs,
            train_state=self.train_state,
            on_epoch=on_epoch,
            prepare_model=prepare_model,
            prepare_loader=prepare_loader,
            is_main=is_main,
        )
        return reports

    def _inference_config(self, device: str | torch.device | None, batch_size: int | None, num_workers: int):
        dev = resolve_device(device) if device is not None else next(self.module.parameters()).device
        self.module.to(dev)
        cfg = self.loop_config(device=str(dev), num_workers=num_workers, eval_batch_size=batch_size)
        return cfg, dev

    def predict(
        self,
        dataset: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
    ) -> np.ndarray:
        """Per-slice DVT probabilities (``float64[len(dataset)]``), on the module's device by default."""
        cfg, dev = self._inference_config(device, batch_size, num_workers)
        data = self.input_view(dataset)
        return loop.run_inference(self.module, self, data, cfg, dev, with_loss=False)["scores"]

    def evaluate(
        self,
        dataset: Any,
        *,
        prefix: str = "test_",
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
    ) -> dict[str, float]:
        """Loss, AUC, precision/recall (at this set's Youden threshold) and extras on ``dataset``."""
        cfg, dev = self._inference_config(device, batch_size, num_workers)
        return loop.evaluate(self.module, self, self.input_view(dataset), cfg, dev, prefix=prefix)

    # ----------------------------------------------------------------- parameters and export
    training_only_files: ClassVar[frozenset[str]] = frozenset({TRAIN_STATE_FILE})

    def n_params(self) -> int:
        """Trainable + frozen parameters of the network."""
        return int(sum(p.numel() for p in self.module.parameters()))

    def export(self, directory: Path) -> dict[str, Any]:
        """TorchScript ``model.ts`` and ONNX ``model.onnx`` (see :mod:`.torch_export`)."""
        from .torch_export import export_artefacts

        return export_artefacts(self, Path(directory))

    # ----------------------------------------------------------------- checkpoints
    def meta(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "torch": torch.__version__, **super().meta()}

    def save(self, directory: str | Path) -> Path:
        """Write ``meta.json``, ``weights.pt`` and (after training) ``train_state.pt`` atomically."""
        with atomic_directory(directory) as tmp:
            torch.save(cpu_state(self.module.state_dict()), tmp / WEIGHTS_FILE)
            if self.train_state is not None:
                torch.save(cpu_state(self.train_state), tmp / TRAIN_STATE_FILE)
            self.write_meta(tmp)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> TorchModel:
        """Rebuild the model from a checkpoint directory (weights-only loading, CPU)."""
        directory = Path(directory)
        meta = read_meta(directory)
        if meta.get("family") != cls.family:
            raise ValueError(f"{directory}: checkpoint of family {meta.get('family')!r}, not {cls.family!r}")
        model = cls(meta["params"], DataSpec.from_dict(meta["spec"]), load_pretrained=False)
        try:
            model.module.load_state_dict(load_tensors(directory / WEIGHTS_FILE))
        except RuntimeError as exc:
            raise ValueError(f"{directory / WEIGHTS_FILE}: weights do not fit the network ({exc})") from exc
        model.epochs_done = int(meta.get("epochs_done", 0))
        model.history = [
            EpochReport(epoch=int(h["epoch"]), metrics={k: float(v) for k, v in h.items() if k != "epoch"})
            for h in meta.get("history", [])
        ]
        if (directory / TRAIN_STATE_FILE).is_file():
            model.train_state = load_tensors(directory / TRAIN_STATE_FILE)
        return model


class TorchFamily(Family):
    """Base of the registered CNN families: ``build``/``load`` through ``model_cls``."""

    kind: ClassVar[str] = "torch"
    trains_by_epoch: ClassVar[bool] = True
    model_cls: ClassVar[type[TorchModel]]
    training_only_files: ClassVar[frozenset[str]] = TorchModel.training_only_files

    @classmethod
    def trial_needs(
        cls, *, max_epochs: int, cpus: float, gpus: float, train_workers: int, trainer: str
    ) -> TrialNeeds:
        """Epoch-budget trials on the engine: ``direct`` (process re-used) or Ray Train DDP, GPUs as asked."""
        return TrialNeeds(
            budget=int(max_epochs),
            trainer=trainer,
            workers=int(train_workers),
            cpus=float(cpus),
            gpus=float(gpus),
            reuse_actors=trainer == "direct",
        )

    @classmethod
    def fit_options(cls, *, device: str, cpus: float, use_cache: bool) -> dict[str, Any]:
        return {"device": device}

    @classmethod
    def model_spec(cls, params: Mapping[str, Any], spec: DataSpec) -> DataSpec:
        """The run's ``spec`` at the input the params choose (``input_size``, ``context_slices``)."""
        return input_spec(cls.resolve_params(params), spec)

    @classmethod
    def build(cls, params: Mapping[str, Any], spec: DataSpec) -> TorchModel:
        resolved = cls.resolve_params(params)
        return cls.model_cls(resolved, input_spec(resolved, spec))

    @classmethod
    def load(cls, directory: str | Path) -> TorchModel:
        return cls.model_cls.load(directory)

    @classmethod
    def open_export(cls, directory: str | Path, spec: DataSpec) -> ExportedScorer:
        """TorchScript scoring, Grad-CAM heat maps of the eager network (:mod:`.torch_export`)."""
        from .torch_export import TorchScriptScorer

        return TorchScriptScorer(cls, directory, spec)

"""Vein cascade: find the veins, then classify clot vs patent on native-resolution 2.5D crops (beyond the paper).

The paper's conclusion asks for "a cascaded framework with vein identification followed by a thrombosis
classification model"; this family is one (:mod:`.cascade_parts` holds the networks):

1. **Stage 1, vein localisation**: a small UNet on the centre slice downsampled to ``stage1_size``, trained
   on the vein masks with ``seg_bce_weight * BCE + seg_dice_weight * Dice`` (vein pixels weighted by
   ``sqrt((1 - f) / f)``, at most 10, with ``f`` the training vein fraction).
2. **Candidates**: up to ``candidates`` local maxima of the vein mass per slice (where the vein probability
   reaches ``vein_threshold`` times the slice's own peak, :func:`~.cascade_parts.vein_support`), mapped
   to native pixels. At validation, test and deployment they come from stage 1's PREDICTION only;
   in training the ground-truth veins come first (so every clotted vein is cropped), then predicted
   locations away from them (so stage 2 also sees what stage 1 gets wrong, e.g. arteries).
3. **Stage 2, clot vs patent**: a small ResNet (``depth`` basic blocks) on ``crop_size`` crops cut at the
   store's NATIVE resolution (:mod:`.cascade_data`: the slice is read at full size, not the run's network
   size) around each candidate, with the ``-k .. +k`` neighbouring slices of the same scan as channels
   (``context_slices``; :mod:`dvt_search.data.context`) plus stage 1's vein probability.
4. **Slice score**: the crops' logits pooled (``pooling``: ``max``, ``lse`` log-mean-exp, ``noisy_or``);
   a slice without a candidate scores the low prior ``empty_logit``. The scan score follows the run's
   exam-level rule like every family's.

Labels: the phantom (and the manifest schema) mark clot per SLICE only (no clot mask; the vein mask covers
the lumen, clotted or not), so stage 2 learns by multiple-instance learning: the pooled slice logit is
trained against the slice label with BCE (``pos_weight`` on positives), and the crops of a positive
slice need not be labelled one by one.

Both stages train jointly, epoch by epoch (``trains_by_epoch``: ASHA can stop a trial between epochs);
checkpoints are the torch families' (``meta.json``, ``weights.pt``, ``train_state.pt``, loaded with
``weights_only=True``). The model's :attr:`~dvt_search.families.base.Model.spec` records the native side
it reads (``image_size``) once it has seen data. Reported per epoch: ``train_loss`` and its parts
``train_loss_seg_bce`` / ``train_loss_seg_dice`` / ``train_loss_cls``, ``val_loss`` (slice BCE), ``val_auc``
and the usual ``val_precision`` / ``val_recall`` / ``val_threshold``, ``val_dice`` (stage 1, hard Dice at
0.5), ``lr``, ``wall_s``, ``img_per_s``. The trial trains in its own process (no DDP).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.device import epoch_seed, resolve_device, seed_all
from ..engine.errors import FitError
from ..engine.losses import dice_loss
from ..engine.metrics import classification_metrics, mean_dice
from ..engine.optim import build_optimizer
from . import register
from .base import DataSpec, EpochCallback, EpochReport, ExportedScorer, FitData, TrialNeeds
from .cascade_data import NativeSlices, store_side
from .cascade_parts import POOLINGS, CascadeNet
from .cnn_parts import check_choice, check_range
from .torch_family import COMMON_DEFAULTS, TorchFamily, TorchModel

#: Knobs of the cascade (the shared loop's lr / weight_decay / batch_size / schedule ones come first).
CASCADE_DEFAULTS: dict[str, Any] = {
    "stage1_size": 64,
    "crop_size": 16,
    "context_slices": 1,
    "depth": 2,
    "width": 16,
    "candidates": 4,
    "vein_threshold": 0.5,
    "seg_bce_weight": 1.0,
    "seg_dice_weight": 1.0,
    "pos_weight": 1.0,
    "pooling": "max",
    "dropout": 0.0,
    "empty_logit": -4.0,
    "flip": True,
}


def _int_knob(params: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = params[key]
    if isinstance(value, bool) or int(value) != value or not lo <= int(value) <= hi:
        raise ValueError(f"parameter {key!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


class VeinCascadeModel(TorchModel):
    """The cascade's model: ``self.module`` is the :class:`~.cascade_parts.CascadeNet`."""

    family = "vein_cascade"
    detects_veins = True

    # ----------------------------------------------------------------- network and loss
    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        stage1 = _int_knob(params, "stage1_size", 8, 1024)
        if stage1 % 4:
            raise ValueError(f"parameter 'stage1_size' must be a multiple of 4, got {stage1}")
        self.seg_bce_weight = check_range(params, "seg_bce_weight", 0.0, float("inf"))
        self.seg_dice_weight = check_range(params, "seg_dice_weight", 0.0, float("inf"))
        self.pos_weight = check_range(params, "pos_weight", 1e-6, float("inf"))
        f = min(max(float(spec.vein_fraction), 1e-4), 0.5)
        # vein pixels weighted by the square root of the class ratio (capped): a few % of a slice is vein
        self._vein_weight = torch.tensor(min(((1.0 - f) / f) ** 0.5, 10.0))
        return CascadeNet(
            windows=len(spec.windows),  # HU windows per slice (in_channels counts the context slices too)
            context=_int_knob(params, "context_slices", 0, 16),
            stage1_size=stage1,
            crop_size=_int_knob(params, "crop_size", 4, 512),
            candidates=_int_knob(params, "candidates", 1, 64),
            vein_threshold=check_range(params, "vein_threshold", 0.0, 1.0),
            depth=_int_knob(params, "depth", 1, 8),
            width=_int_knob(params, "width", 2, 256),
            dropout=check_range(params, "dropout", 0.0, 1.0),
            pooling=check_choice(params, "pooling", POOLINGS),
            empty_logit=float(params["empty_logit"]),
        )

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``seg_bce_weight * BCE + seg_dice_weight * Dice`` (stage 1) + slice BCE with ``pos_weight`` (stage 2)."""
        seg, veins = outputs["seg"], batch["veins"].reshape(outputs["seg"].shape)
        seg_bce = F.binary_cross_entropy_with_logits(seg, veins, pos_weight=self._vein_weight.to(seg.device))
        seg_dice = dice_loss(seg, veins)
        weight = torch.tensor(self.pos_weight, device=seg.device)
        cls = F.binary_cross_entropy_with_logits(outputs["logit"], batch["label"], pos_weight=weight)
        total = self.seg_bce_weight * seg_bce + self.seg_dice_weight * seg_dice + cls
        return total, {"seg_bce": seg_bce, "seg_dice": seg_dice, "cls": cls}

    def vein_map(self, outputs: dict[str, Tensor]) -> Tensor:
        """Stage 1's per-pixel vein probabilities ``[B, s1, s1]``."""
        return torch.sigmoid(outputs["seg"][:, 0])

    # ----------------------------------------------------------------- data at native resolution
    @property
    def native_size(self) -> int:
        """The side the model reads slices at (the store's; the run's network size until data was seen)."""
        return int(self.spec.image_size)

    def _bind(self, dataset: Any) -> None:
        """Take the store's native side from the first data the model sees (recorded in ``spec``)."""
        if not getattr(self, "_bound", False):
            self.spec = dataclasses.replace(self.spec, image_size=store_side(dataset))
            self._bound = True

    def _native(self, dataset: Any) -> NativeSlices:
        self._bind(dataset)
        return NativeSlices(dataset, self.native_size, self.spec.windows, self.module.context)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "native_bound": bool(getattr(self, "_bound", False))}

    @classmethod
    def load(cls, directory: str | Path) -> VeinCascadeModel:
        model = super().load(directory)
        from .base import read_meta

        model._bound = bool(read_meta(directory).get("native_bound", False))
        return model  # type: ignore[return-value]

    # ----------------------------------------------------------------- training
    def fit(
        self,
        data: FitData,
        epochs: int,
        callback: EpochCallback | None = None,
        *,
        device: str | torch.device = "auto",
        **_ignored: Any,
    ) -> list[EpochReport]:
        """Train both stages jointly until ``epochs`` epochs are done (see the module docstring)."""
        if epochs <= self.epochs_done:
            return []
        train, val = self._native(data.train), self._native(data.val)
        if len(train) == 0:
            raise FitError("vein_cascade: the training set is empty")
        cfg = self.loop_config(device=str(device))
        dev = resolve_device(cfg.device)
        self.module.to(dev)
        optimizer, scheduler = build_optimizer(
            self.module, cfg, start_epoch=0 if self.train_state else self.epochs_done
        )
        if self.train_state:
            optimizer.load_state_dict(self.train_state["optimizer"])
            scheduler.load_state_dict(self.train_state["scheduler"])
        s1 = self.module.stage1_size
        veins = train.vein_masks(np.arange(len(train)), s1)  # the only masks training reads
        labels = train.labels.astype(np.float32)
        reports: list[EpochReport] = []
        for epoch in range(self.epochs_done, epochs):
            t0 = time.perf_counter()
            seed = epoch_seed(int(self.params["seed"]), epoch)
            seed_all(seed)
            rng = np.random.default_rng(seed)
            lr = optimizer.param_groups[0]["lr"]
            metrics = self._train_epoch(train, veins, labels, optimizer, rng, dev, cfg, epoch)
            train_s = time.perf_counter() - t0
            scheduler.step()
            metrics.update(self._validate(val, dev, cfg.eval_batch, prefix="val_"))
            metrics.update(lr=lr, wall_s=time.perf_counter() - t0, img_per_s=len(train) / max(train_s, 1e-9))
            self.epochs_done = epoch + 1
            self.train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            report = EpochReport(epoch=epoch + 1, metrics={k: float(v) for k, v in metrics.items()})
            self.history.append(report)
            reports.append(report)
            if callback is not None and callback(report, self):
                break
        return reports

    def _train_epoch(
        self,
        train: NativeSlices,
        veins: np.ndarray,
        labels: np.ndarray,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        dev: torch.device,
        cfg: Any,
        epoch: int,
    ) -> dict[str, float]:
        self.module.train()
        order = rng.permutation(len(train))
        flip = bool(self.params["flip"])
        sums: dict[str, float] = {}
        n = 0
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            rows = order[start : start + cfg.batch_size]
            x, v = train.stacks(rows), veins[rows].astype(np.float32)
            if flip:  # left-right mirror (the two legs swap), the same for every context channel
                mirror = rng.random(len(rows)) < 0.5
                x[mirror] = x[mirror][..., ::-1]
                v[mirror] = v[mirror][..., ::-1]
            batch = {
                "veins": torch.from_numpy(np.ascontiguousarray(v)).to(dev),
                "label": torch.from_numpy(labels[rows]).to(dev),
            }
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(dev), veins=batch["veins"])
            loss, parts = self.compute_loss(out, batch)
            if not torch.isfinite(loss):
                detail = ", ".join(f"{k}={float(p):.4g}" for k, p in parts.items())
                raise FitError(
                    f"non-finite training loss {float(loss)} at epoch {epoch + 1}, batch {b} ({detail}); "
                    "try a lower lr or grad_clip"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
            optimizer.step()
            k = len(rows)
            for name, value in {
                "loss": loss.detach(),
                **{f"loss_{p}": t.detach() for p, t in parts.items()},
            }.items():
                sums[name] = sums.get(name, 0.0) + float(value) * k
            n += k
        return {f"train_{k}": v / max(n, 1) for k, v in sums.items()}

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def _infer(
        self, native: NativeSlices, dev: torch.device, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float64[N], stage-1 vein probabilities float32[N, s1, s1])`` from predicted candidates."""
        self.module.to(dev).eval()
        scores, veins = [], []
        for start in range(0, len(native), batch_size):
            rows = np.arange(start, min(start + batch_size, len(native)))
            out = self.module(torch.from_numpy(native.stacks(rows)).to(dev))
            scores.append(torch.sigmoid(out["logit"]).double().cpu().numpy())
            veins.append(torch.sigmoid(out["seg"][:, 0]).float().cpu().numpy())
        if not scores:
            s1 = self.module.stage1_size
            return np.zeros(0), np.zeros((0, s1, s1), np.float32)
        return np.concatenate(scores), np.concatenate(veins)

    def _validate(
        self, native: NativeSlices, dev: torch.device, batch_size: int, prefix: str
    ) -> dict[str, float]:
        scores, veins = self._infer(native, dev, batch_size)
        y = native.labels
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        metrics = {
            "loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")
        }
        metrics.update(classification_metrics(y, scores))
        # stage 1's Dice against the masks: a metric only, read after the scores are fixed
        masks = native.vein_masks(np.arange(len(native)), self.module.stage1_size)
        metrics["dice"] = mean_dice(masks, veins >= 0.5) if len(masks) else float("nan")
        return {f"{prefix}{k}": float(v) for k, v in metrics.items()}

    def _device(self, device: str | torch.device | None) -> torch.device:
        return resolve_device(device) if device is not None else next(self.module.parameters()).device

    def predict(
        self,
        dataset: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
    ) -> np.ndarray:
        """Per-slice DVT probabilities ``float64[len(dataset)]`` (candidates from stage 1 only; no mask read)."""
        bs = int(batch_size or self.loop_config().eval_batch)
        return self._infer(self._native(dataset), self._device(device), bs)[0]

    def evaluate(
        self,
        dataset: Any,
        *,
        prefix: str = "test_",
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        num_workers: int = 0,
    ) -> dict[str, float]:
        """Slice BCE, AUC, precision/recall at this set's Youden threshold and stage 1's ``dice``."""
        bs = int(batch_size or self.loop_config().eval_batch)
        return self._validate(self._native(dataset), self._device(device), bs, prefix)

    # ----------------------------------------------------------------- export
    def export(self, directory: Path) -> dict[str, Any]:
        """``model.ts`` (TorchScript of the whole cascade) and ``model.onnx`` where an exporter succeeds."""
        from .cascade_export import export_artefacts

        return export_artefacts(self, Path(directory))

    def preprocess_notes(self) -> dict[str, Any]:
        net = self.module
        return {
            "layout": f"float32 [batch, (2k+1) * channels, size, size], k = {net.context}: the windowed slices "
            "z-k .. z+k of the same series stacked slice-major (channel j * channels + c = window c of slice "
            "z - k + j), the series' edge slice repeated at its ends",
            "vein_cascade": {
                "native_size": self.native_size,
                "stage1_size": net.stage1_size,
                "crop_size": net.crop_size,
                "context_slices": net.context,
                "candidates": net.candidates,
                "vein_threshold": net.vein_threshold,
                "pooling": net.pooling,
                "context_rule": "dvt_search.data.context.volume_neighbours (edge slice repeated)",
            },
        }


@register
class VeinCascade(TorchFamily):
    """Vein-first cascade (stage 1 vein UNet, stage 2 native 2.5D crop classifier); not in the paper."""

    name = "vein_cascade"
    description = "Vein-first cascade: vein UNet, then clot vs patent on native 2.5D crops (beyond the paper)"
    model_cls = VeinCascadeModel
    #: not a configuration of the paper: the searcher enqueues no paper trial for it
    paper_configuration: ClassVar[bool] = False

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            **COMMON_DEFAULTS,
            # stage 1 needs steps more than big batches (veins are a few pixels of a 64^2 map): measured
            # with bench/cascade_learnability.py, batch 8 at lr 3e-3 learns in 3 epochs where 16 at 1e-3 does not
            "lr": 3e-3,
            "batch_size": 8,
            "schedule": "cosine",
            "cosine_eta_min": 0.05,
            **CASCADE_DEFAULTS,
        }

    @classmethod
    def trial_needs(
        cls, *, max_epochs: int, cpus: float, gpus: float, train_workers: int, trainer: str
    ) -> TrialNeeds:
        """One process per trial (the cascade trains ``direct``: no DDP), a GPU share as asked."""
        return TrialNeeds(
            budget=int(max_epochs), trainer="direct", workers=1, cpus=float(cpus), gpus=float(gpus)
        )

    @classmethod
    def open_export(cls, directory: str | Path, spec: DataSpec) -> ExportedScorer:
        """``model.ts`` scores whole context stacks; the eager cascade gives crop-evidence maps and veins."""
        from .cascade_export import CascadeScorer

        return CascadeScorer(cls, directory, spec)

"""Fully convolutional ResNet-50 patch model (paper section 4.4) with a slice-level DVT score.

The torchvision ResNet-50 trunk (stride 32) maps a ``S x S`` slice to a ``S/32 x S/32`` grid (16 x 16 at
512^2, one cell per 32 x 32 block = the dataset's ``patches`` target). Two 1 x 1 convolutions give, per
cell, a vein-presence logit (the paper's patchwise vein identification, weighted BCE with
``pos_weight`` on vein cells) and a DVT-evidence logit. The slice DVT logit pools the evidence map over
cells (``pool``: ``max``, or ``lse`` = log-mean-exp, a smooth maximum), so the family yields a slice
score comparable with the others. Loss: ``vein_bce + slice_loss_weight * slice_bce``; parts reported as
``train_loss_vein`` / ``train_loss_slice``; ``val_patch_auc`` is the vein-detection AUC over all cells
(paper: 0.9) and ``val_auc`` the slice DVT AUC. The image side must be a multiple of 32.

``forward`` returns ``{"logit": [B], "vein": [B, g, g], "dvt": [B, g, g]}``.

``input_size`` (a multiple of 32; ``None`` = the run's ``--size``) and ``context_slices`` (``±k``
neighbouring slices as extra channels) choose the network's own input (:mod:`~dvt_search.families.torch_family`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision import models

from ..engine.losses import bce, patch_bce
from ..engine.metrics import patch_auc
from . import register
from .base import DataSpec
from .cnn_parts import check_choice, check_range, load_torchvision_weights, pretrained_path, stem_and_conv
from .torch_family import COMMON_DEFAULTS, INPUT_DEFAULTS, TorchFamily, TorchModel

POOLS = ("max", "lse")


class PatchResNet50Net(nn.Module):
    """ResNet-50 trunk + per-cell vein and DVT-evidence logits + pooled slice logit."""

    def __init__(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> None:
        super().__init__()
        self.pool_mode = check_choice(params, "pool", POOLS)
        r = models.resnet50(weights=None)
        weights = pretrained_path(params, load_pretrained)
        if weights is not None:
            load_torchvision_weights(r, weights)
        self.stem, r.conv1 = stem_and_conv(
            params, spec.in_channels, r.conv1, weights is not None, slices=spec.depth
        )
        self.trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        self.vein_head = nn.Conv2d(2048, 1, kernel_size=1)
        self.dvt_head = nn.Conv2d(2048, 1, kernel_size=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(self.stem(x))
        vein = self.vein_head(features)[:, 0]
        dvt = self.dvt_head(features)[:, 0]
        flat = dvt.flatten(1)
        if self.pool_mode == "max":
            logit = flat.amax(1)
        else:
            logit = torch.logsumexp(flat, 1) - math.log(flat.shape[1])
        return {"logit": logit, "vein": vein, "dvt": dvt}

    def cam_layer(self) -> nn.Module:
        return self.trunk[-1]

    def cam_head(self) -> None:
        return None


class PatchResNet50Model(TorchModel):
    family = "patch_resnet50"
    needs_multiple_of_32 = True
    detects_veins = True
    batch_targets = frozenset({"patches"})

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        self.pos_weight = check_range(params, "pos_weight", 0.0, float("inf"))
        self.slice_loss_weight = check_range(params, "slice_loss_weight", 0.0, float("inf"))
        return PatchResNet50Net(params, spec, load_pretrained=load_pretrained)

    def _patch_targets(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        vein, patches = outputs["vein"], batch["patches"]
        if patches.numel() != vein.numel():
            raise ValueError(
                f"patch targets {tuple(patches.shape)} do not match the network's grid {tuple(vein.shape)}"
            )
        return patches.reshape(vein.shape)

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        vein = patch_bce(outputs["vein"], self._patch_targets(outputs, batch), pos_weight=self.pos_weight)
        slice_loss = bce(outputs["logit"], batch["label"])
        return vein + self.slice_loss_weight * slice_loss, {"vein": vein, "slice": slice_loss}

    def vein_map(self, outputs: dict[str, Tensor]) -> Tensor:
        """Per-cell vein-presence probabilities ``[B, S/32, S/32]`` of the patch grid."""
        return torch.sigmoid(outputs["vein"])

    def val_collect(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "patch_prob": torch.sigmoid(outputs["vein"]).flatten(1),
            "patch_target": self._patch_targets(outputs, batch).flatten(1),
        }

    def val_summarize(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        if "patch_prob" not in collected:
            return {"patch_auc": float("nan")}
        return {"patch_auc": patch_auc(collected["patch_target"], collected["patch_prob"])}


@register
class PatchResNet50(TorchFamily):
    name = "patch_resnet50"
    description = "Fully convolutional ResNet-50 patch vein detector + pooled slice DVT score (paper 4.4)"
    model_cls = PatchResNet50Model

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            **COMMON_DEFAULTS,
            **INPUT_DEFAULTS,
            "pos_weight": 10.0,
            "slice_loss_weight": 1.0,
            "pool": "max",
            "stem": "replicate",
            "pretrained_path": None,
        }

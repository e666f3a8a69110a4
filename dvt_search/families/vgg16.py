"""VGG-16 whole-slice classifier (paper section 4.2, eq. 1): the deep-learning baseline.

Knobs beyond the shared loop (:data:`~dvt_search.families.torch_family.COMMON_DEFAULTS`):

* ``head``: ``classifier`` (paper: torchvision's 4096-4096 classifier with its last layer replaced by one
  logit; ~120 M parameters at any input size) or ``gap`` (global average pooling + dropout + one linear
  layer on the 512 conv features; 14.7 M parameters, far faster on a CPU and CAM-capable).
* ``dropout``: dropout before the output layer (``classifier``: both torchvision classifier dropouts).
* ``batch_norm``: use the VGG-16-BN variant (trains from scratch far more reliably).
* ``stem``: ``replicate`` (HU windows repeated to 3 channels) or ``adapt`` (first convolution takes the
  windows directly; pretrained RGB kernels summed).
* ``pretrained_path``: local torchvision ImageNet ``state_dict`` of ``vgg16`` (or ``vgg16_bn`` with
  ``batch_norm``); never downloaded.
* ``input_size``, ``context_slices``: the network's own input side (``None`` = the run's ``--size``)
  and ``±k`` neighbouring slices as extra channels (0 = the paper's single slice); see
  :mod:`~dvt_search.families.torch_family`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models

from . import register
from .base import DataSpec
from .cnn_parts import check_choice, check_range, load_torchvision_weights, pretrained_path, stem_and_conv
from .torch_family import COMMON_DEFAULTS, INPUT_DEFAULTS, TorchFamily, TorchModel, slice_bce

HEADS = ("classifier", "gap")


class VGG16Net(nn.Module):
    """VGG-16 with a one-logit head; ``forward`` returns ``{"logit": [B]}``."""

    def __init__(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> None:
        super().__init__()
        head = check_choice(params, "head", HEADS)
        dropout = check_range(params, "dropout", 0.0, 1.0)
        build = models.vgg16_bn if params["batch_norm"] else models.vgg16
        net = build(weights=None, dropout=dropout)
        weights = pretrained_path(params, load_pretrained)
        if weights is not None:
            load_torchvision_weights(net, weights)
        self.stem, net.features[0] = stem_and_conv(
            params, spec.in_channels, net.features[0], weights is not None, slices=spec.depth
        )
        self.features = net.features
        self.gap = head == "gap"
        if self.gap:
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, 1))
        else:
            self.pool = net.avgpool
            net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, 1)
            self.head = net.classifier

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.features(self.stem(x))
        return {"logit": self.head(torch.flatten(self.pool(features), 1))[:, 0]}

    def cam_layer(self) -> nn.Module:
        return self.features

    def cam_head(self) -> tuple[nn.Module, nn.Linear] | None:
        return (self.features, self.head[-1]) if self.gap else None


class VGG16Model(TorchModel):
    family = "vgg16"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        return VGG16Net(params, spec, load_pretrained=load_pretrained)

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return slice_bce(outputs, batch)


@register
class VGG16(TorchFamily):
    name = "vgg16"
    description = "VGG-16 whole-slice DVT classifier, BCE (paper 4.2)"
    model_cls = VGG16Model

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            **COMMON_DEFAULTS,
            **INPUT_DEFAULTS,
            "head": "classifier",
            "dropout": 0.5,
            "batch_norm": False,
            "stem": "replicate",
            "pretrained_path": None,
        }

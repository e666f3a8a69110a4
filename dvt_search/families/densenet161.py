"""DenseNet-161 whole-slice classifier (paper sections 4.2 and 5.2, eq. 1).

The paper's decisive fix was dropout 0.2 before the replaced classification layer (test AUC 0.51 ->
0.66), hence the default. Knobs beyond the shared loop:

* ``dropout``: dropout before the one-logit linear head (paper: 0.2).
* ``block_dropout``: torchvision's ``drop_rate`` after every dense layer (0 = off, as in the paper).
* ``memory_efficient``: checkpointed dense layers (less GPU memory, ~15-20 % slower).
* ``stem``, ``pretrained_path``: as for VGG-16 (local torchvision ``densenet161`` ``state_dict``; the
  legacy ``norm.1``-style key names of the original ImageNet file are accepted).
* ``input_size``, ``context_slices``: the network's own input side (``None`` = the run's ``--size``)
  and ``±k`` neighbouring slices as extra channels (0 = the paper's single slice); see
  :mod:`~dvt_search.families.torch_family`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models

from . import register
from .base import DataSpec
from .cnn_parts import check_range, load_torchvision_weights, pretrained_path, stem_and_conv
from .torch_family import COMMON_DEFAULTS, INPUT_DEFAULTS, TorchFamily, TorchModel, slice_bce

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _remap_legacy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``...denselayer1.norm.1.weight`` -> ``...denselayer1.norm1.weight`` (original ImageNet file)."""
    out = {}
    for key, value in state.items():
        m = _LEGACY_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


class DenseNet161Net(nn.Module):
    """DenseNet-161 features + ReLU + global average pooling + dropout + one logit."""

    def __init__(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> None:
        super().__init__()
        dropout = check_range(params, "dropout", 0.0, 1.0)
        net = models.densenet161(
            weights=None,
            drop_rate=check_range(params, "block_dropout", 0.0, 1.0),
            memory_efficient=bool(params["memory_efficient"]),
        )
        weights = pretrained_path(params, load_pretrained)
        if weights is not None:
            load_torchvision_weights(net, weights, remap=_remap_legacy)
        self.stem, net.features.conv0 = stem_and_conv(
            params, spec.in_channels, net.features.conv0, weights is not None, slices=spec.depth
        )
        self.features = net.features
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.classifier.in_features, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.act(self.features(self.stem(x)))
        return {"logit": self.head(torch.flatten(self.pool(features), 1))[:, 0]}

    def cam_layer(self) -> nn.Module:
        return self.act

    def cam_head(self) -> tuple[nn.Module, nn.Linear]:
        return self.act, self.head[-1]


class DenseNet161Model(TorchModel):
    family = "densenet161"

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        return DenseNet161Net(params, spec, load_pretrained=load_pretrained)

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return slice_bce(outputs, batch)


@register
class DenseNet161(TorchFamily):
    name = "densenet161"
    description = "DenseNet-161 whole-slice DVT classifier with head dropout, BCE (paper 4.2, 5.2)"
    model_cls = DenseNet161Model

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            **COMMON_DEFAULTS,
            **INPUT_DEFAULTS,
            "dropout": 0.2,
            "block_dropout": 0.0,
            "memory_efficient": False,
            "stem": "replicate",
            "pretrained_path": None,
        }

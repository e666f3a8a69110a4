"""Multitask ResNet18-UNet: joint vein segmentation and DVT classification (paper 4.3, eqs. 2-4).

Architecture (paper Fig. 4): a torchvision ResNet-18 encoder (stem, layer1..layer4, stride 32); a UNet
decoder of transpose convolutions with skip connections back to the full input resolution and a
one-channel segmentation head; a classification branch that is "another ResNet-18": two further
ResNet-18 basic blocks (512 channels) on the encoder output, then global average pooling, dropout and
one logit. ``forward`` returns ``{"logit": [B], "seg": [B, 1, H, W]}``.

Loss (eq. 4 generalised): ``a * ClsBCE + (1 - a) * (b * PixelBCE(w0, w1) + (1 - b) * Dice)``, paper
``a = 0.5, b = 0.25``. ``w0`` weights vein pixels and ``w1`` background (paper naming); when left
``None`` they are derived from ``spec.vein_fraction`` with the "balanced" rule ``w0 = 1 / (2 f)``,
``w1 = 1 / (2 (1 - f))`` (see :func:`dvt_search.engine.losses.balanced_weights`). Reported per epoch:
``train_loss_cls``, ``train_loss_pix``, ``train_loss_dice`` (paper Fig. 3), their ``val_`` versions and
``val_dice`` (hard Dice of ``seg > 0.5``, mean over slices, 1 for a slice with no vein and no
prediction). The image side must be a multiple of 32.

``input_size`` (a multiple of 32; ``None`` = the run's ``--size``) and ``context_slices`` (``±k``
neighbouring slices as extra channels) choose the network's own input (:mod:`~dvt_search.families.torch_family`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

from ..engine.losses import PAPER_A, PAPER_B, balanced_weights, multitask_loss
from . import register
from .base import DataSpec
from .cnn_parts import check_range, load_torchvision_weights, pretrained_path, stem_and_conv
from .torch_family import COMMON_DEFAULTS, INPUT_DEFAULTS, TorchFamily, TorchModel


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class UpBlock(nn.Module):
    """Transpose convolution (x2), concatenation with the skip features, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = nn.Sequential(_conv_bn_relu(cout + skip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class MultitaskUNetNet(nn.Module):
    """ResNet-18 encoder, UNet segmentation decoder, ResNet-18-style classification branch."""

    def __init__(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> None:
        super().__init__()
        r = models.resnet18(weights=None)
        weights = pretrained_path(params, load_pretrained)
        if weights is not None:
            load_torchvision_weights(r, weights)
        self.stem, r.conv1 = stem_and_conv(
            params, spec.in_channels, r.conv1, weights is not None, slices=spec.depth
        )
        self.enc0 = nn.Sequential(r.conv1, r.bn1, r.relu)  # H/2, 64
        self.pool0 = r.maxpool
        self.enc1, self.enc2, self.enc3, self.enc4 = r.layer1, r.layer2, r.layer3, r.layer4  # H/4 .. H/32
        self.up4 = UpBlock(512, 256, 256)  # -> H/16
        self.up3 = UpBlock(256, 128, 128)  # -> H/8
        self.up2 = UpBlock(128, 64, 64)  # -> H/4
        self.up1 = UpBlock(64, 64, 32)  # -> H/2 (channels halve as resolution doubles: the top two
        self.up0 = UpBlock(32, 0, 16)  # -> H      levels dominate the cost at 512^2)
        self.seg_head = nn.Conv2d(16, 1, kernel_size=1)
        self.cls_branch = nn.Sequential(BasicBlock(512, 512), BasicBlock(512, 512))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.cls_head = nn.Sequential(nn.Dropout(check_range(params, "dropout", 0.0, 1.0)), nn.Linear(512, 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        e0 = self.enc0(self.stem(x))
        e1 = self.enc1(self.pool0(e0))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d = self.up1(self.up2(self.up3(self.up4(e4, e3), e2), e1), e0)
        seg = self.seg_head(self.up0(d))
        logit = self.cls_head(torch.flatten(self.pool(self.cls_branch(e4)), 1))[:, 0]
        return {"logit": logit, "seg": seg}

    def cam_layer(self) -> nn.Module:
        return self.cls_branch

    def cam_head(self) -> tuple[nn.Module, nn.Linear]:
        return self.cls_branch, self.cls_head[-1]


def hard_dice(seg_logits: Tensor, masks: Tensor) -> Tensor:
    """Per-slice Dice of ``sigmoid(seg) > 0.5`` against the mask; 1 when both are empty."""
    pred = (seg_logits > 0).flatten(1).float()
    target = masks.flatten(1).float()
    inter = (pred * target).sum(1)
    total = pred.sum(1) + target.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


class MultitaskUNetModel(TorchModel):
    family = "multitask_unet"
    needs_multiple_of_32 = True
    detects_veins = True
    batch_targets = frozenset({"mask"})

    def make_module(self, params: Mapping[str, Any], spec: DataSpec, *, load_pretrained: bool) -> nn.Module:
        self.a = check_range(params, "a", 0.0, 1.0)
        self.b = check_range(params, "b", 0.0, 1.0)
        auto_w0, auto_w1 = balanced_weights(spec.vein_fraction)
        self.w0 = auto_w0 if params["w0"] is None else check_range(params, "w0", 0.0, float("inf"))
        self.w1 = auto_w1 if params["w1"] is None else check_range(params, "w1", 0.0, float("inf"))
        return MultitaskUNetNet(params, spec, load_pretrained=load_pretrained)

    def compute_loss(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return multitask_loss(
            outputs["logit"],
            batch["label"],
            outputs["seg"],
            batch["mask"],
            a=self.a,
            b=self.b,
            w0=self.w0,
            w1=self.w1,
        )

    def vein_map(self, outputs: dict[str, Tensor]) -> Tensor:
        """Per-pixel vein probabilities ``[B, H, W]`` of the segmentation head."""
        return torch.sigmoid(outputs["seg"][:, 0])

    def val_collect(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"dice": hard_dice(outputs["seg"], batch["mask"])}

    def val_summarize(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        dice = collected.get("dice")
        return {"dice": float(np.mean(dice)) if dice is not None and dice.size else float("nan")}


@register
class MultitaskUNet(TorchFamily):
    name = "multitask_unet"
    description = "ResNet18-UNet joint segmentation + classification, loss eq. 4 (paper 4.3)"
    model_cls = MultitaskUNetModel

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            **COMMON_DEFAULTS,
            **INPUT_DEFAULTS,
            "a": PAPER_A,
            "b": PAPER_B,
            "w0": None,
            "w1": None,
            "dropout": 0.0,
            "stem": "replicate",
            "pretrained_path": None,
        }

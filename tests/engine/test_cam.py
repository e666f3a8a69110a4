"""Grad-CAM and CAM: shape and range on real families, and localisation on a toy model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dvt_search import families
from dvt_search.engine.cam import class_activation_map, grad_cam, normalize_maps
from dvt_search.families.base import DataSpec


class RegionModel(nn.Module):
    """Channel 0 = the input inside a fixed region, channel 1 = outside; the logit reads channel 0 only."""

    def __init__(self, size: int, box: tuple[int, int, int, int]) -> None:
        super().__init__()
        region = torch.zeros(1, 1, size, size)
        y0, y1, x0, x1 = box
        region[..., y0:y1, x0:x1] = 1
        self.register_buffer("region", region)
        self.features = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0.0]]))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(torch.cat([x * self.region, x * (1 - self.region)], dim=1))
        return {"logit": self.linear(self.pool(feats).flatten(1))[:, 0]}

    def cam_layer(self) -> nn.Module:
        return self.features

    def cam_head(self) -> tuple[nn.Module, nn.Linear]:
        return self.features, self.linear


@pytest.mark.parametrize("method", ["grad_cam", "cam"])
def test_toy_model_map_peaks_in_its_region(method: str) -> None:
    torch.manual_seed(0)
    size, box = 32, (4, 12, 18, 28)
    model = RegionModel(size, box)
    x = 0.5 + 0.5 * torch.rand(2, 1, size, size)  # strictly positive everywhere
    maps = grad_cam(model, x) if method == "grad_cam" else class_activation_map(model, x)
    assert maps.shape == (2, size, size)
    for m in maps:
        peak = divmod(int(m.argmax()), size)
        assert box[0] <= peak[0] < box[1] and box[2] <= peak[1] < box[3]
        inside = m[box[0] : box[1], box[2] : box[3]].mean()
        outside = m[20:, :10].mean()
        assert inside > 0.3 > outside


@pytest.mark.parametrize("name", ["vgg16", "densenet161", "multitask_unet", "patch_resnet50"])
def test_grad_cam_on_every_cnn_family(name: str) -> None:
    torch.set_num_threads(1)
    params = {"head": "gap"} if name == "vgg16" else {}
    model = families.get(name).build(params, DataSpec(image_size=64))
    x = torch.rand(2, 1, 64, 64)
    maps = grad_cam(model.module, x, layer=model.cam_layer())
    assert maps.shape == (2, 64, 64)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert model.module.training  # restored
    head = model.module.cam_head()
    if head is None:
        with pytest.raises(TypeError, match="grad_cam"):
            class_activation_map(model.module, x)
    else:
        cam = class_activation_map(model.module, x)
        assert cam.shape == (2, 64, 64) and float(cam.max()) == pytest.approx(1.0)


def test_normalize_constant_map_is_zero() -> None:
    maps = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])
    out = normalize_maps(maps)
    assert torch.all(out[0] == 0)
    assert float(out[1].min()) == 0.0 and float(out[1].max()) == 1.0

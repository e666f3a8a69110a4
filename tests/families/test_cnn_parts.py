"""Input stems and local pretrained weights of the CNN families (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from dvt_search import families
from dvt_search.families.base import DataSpec
from dvt_search.families.cnn_parts import InputStem

SPEC1 = DataSpec(image_size=64)
SPEC2 = DataSpec(image_size=64, windows=((40.0, 400.0), (100.0, 700.0)))


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    state = models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_replicate_stem_repeats_channels_and_normalizes() -> None:
    x = torch.rand(2, 2, 8, 8)
    out = InputStem(2, "replicate", normalize=False)(x)
    assert out.shape == (2, 3, 8, 8)
    assert (
        torch.equal(out[:, 0], x[:, 0])
        and torch.equal(out[:, 1], x[:, 1])
        and torch.equal(out[:, 2], x[:, 0])
    )
    norm = InputStem(1, "replicate", normalize=True)(torch.full((1, 1, 2, 2), 0.485))
    assert torch.allclose(norm[:, 0], torch.zeros(1, 2, 2), atol=1e-6)


def test_pretrained_weights_load_with_replicate_stem(resnet18_file) -> None:
    path, state = resnet18_file
    model = families.get("multitask_unet").build({"pretrained_path": str(path)}, SPEC1)
    net = model.module
    assert torch.equal(net.enc0[0].weight, state["conv1.weight"])
    assert torch.equal(net.enc2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert net.stem.normalize


def test_adapt_stem_sums_rgb_kernels(resnet18_file) -> None:
    path, state = resnet18_file
    model = families.get("patch_resnet50").build({"stem": "adapt"}, SPEC2)  # no weights: fresh kernels
    assert model.module.trunk[0].in_channels == 2
    model = families.get("multitask_unet").build({"stem": "adapt", "pretrained_path": str(path)}, SPEC2)
    conv = model.module.enc0[0]
    assert conv.in_channels == 2
    expected = state["conv1.weight"].sum(1, keepdim=True) / 2
    assert torch.allclose(conv.weight[:, :1], expected) and torch.allclose(conv.weight[:, 1:], expected)


def test_checkpoint_does_not_need_the_weights_file(resnet18_file, tmp_path: Path) -> None:
    path, _ = resnet18_file
    copy = tmp_path / "copy.pth"
    copy.write_bytes(path.read_bytes())
    family = families.get("multitask_unet")
    model = family.build({"pretrained_path": str(copy)}, SPEC1)
    ckpt = model.save(tmp_path / "ckpt")
    copy.unlink()
    loaded = family.load(ckpt)
    assert loaded.module.stem.normalize
    x = torch.rand(2, 1, 64, 64)
    model.module.eval()
    loaded.module.eval()
    with torch.no_grad():
        assert torch.equal(model.module(x)["logit"], loaded.module(x)["logit"])


def test_missing_or_mismatched_weights_file(resnet18_file, tmp_path: Path) -> None:
    path, _ = resnet18_file
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        families.get("vgg16").build({"pretrained_path": str(tmp_path / "absent.pth")}, SPEC1)
    with pytest.raises(ValueError, match="do not match torchvision VGG"):
        families.get("vgg16").build({"pretrained_path": str(path), "head": "gap"}, SPEC1)


def test_densenet_accepts_legacy_key_names(tmp_path: Path) -> None:
    torch.manual_seed(5)
    state = models.densenet161(weights=None).state_dict()
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert legacy != state
    path = tmp_path / "densenet161.pth"
    torch.save(legacy, path)
    model = families.get("densenet161").build({"pretrained_path": str(path)}, SPEC1)
    layer = model.module.features.denseblock1.denselayer1
    assert torch.equal(layer.norm1.weight, state["features.denseblock1.denselayer1.norm1.weight"])


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("vgg16", {"stem": "rgb"}, "stem"),
        ("vgg16", {"head": "mlp"}, "head"),
        ("densenet161", {"dropout": 1.5}, "dropout"),
        ("patch_resnet50", {"pool": "mean"}, "pool"),
        ("multitask_unet", {"schedule": "exp"}, "schedule"),
    ],
)
def test_invalid_knob_values_name_the_knob(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        families.get(name).build(params, SPEC1)


def test_encoder_decoder_families_need_multiples_of_32() -> None:
    for name in ("multitask_unet", "patch_resnet50"):
        with pytest.raises(ValueError, match="multiple of 32"):
            families.get(name).build({}, DataSpec(image_size=100))

"""The CNN families' own input: ``context_slices`` (2.5D) channels into the first convolution, ``input_size``.

Real networks, real phantom slices (the ``tiny`` 64^2 datasets of ``conftest.py``), one intra-op thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models

from dvt_search import families
from dvt_search.data.dataset import SliceDataset, spec_at_input, spec_for
from dvt_search.families.base import DataSpec, FitData
from dvt_search.families.cnn_parts import InputStem, spread_conv

CNN = ("vgg16", "densenet161", "multitask_unet", "patch_resnet50")
FAST = {
    "vgg16": {"head": "gap", "batch_norm": True},
    "densenet161": {},
    "multitask_unet": {},
    "patch_resnet50": {},
}


def test_replicate_stem_keeps_every_context_slice() -> None:
    """With 5 context slices of 2 windows the replicate stem gives 15 channels, 3 per slice, in order.

    Catches: the single-slice rule (repeat cyclically to 3 channels) applied to all 10 channels, which
    silently drops every context slice after the first one and a half.
    """
    x = torch.rand(2, 10, 4, 4)
    out = InputStem(10, "replicate", normalize=False, slices=5)(x)
    assert out.shape == (2, 15, 4, 4)
    for d in range(5):
        for c, src in enumerate((0, 1, 0)):
            assert torch.equal(out[:, 3 * d + c], x[:, 2 * d + src])


def test_spread_conv_answers_a_stack_of_equal_slices_like_the_pretrained_kernel() -> None:
    """Pretrained RGB kernels spread over 5 slices (divided by 5) respond to 5 copies of a slice as the
    original does to one. Catches: kernels copied without the 1/D (5x the activation scale the pretrained
    network expects) or only into the centre group."""
    torch.manual_seed(0)
    conv = models.resnet18(weights=None).conv1
    new = spread_conv(conv, 5, pretrained=True)
    x = torch.rand(1, 3, 32, 32)
    assert new.in_channels == 15
    torch.testing.assert_close(new(x.repeat(1, 5, 1, 1)), conv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, k", [(n, 2) for n in CNN] + [("vgg16", 1)])
def test_every_context_slice_reaches_the_network(name: str, k: int) -> None:
    """Changing only the first context slice changes the score; its first convolution takes every channel.

    Catches: a first convolution (or stem) that ignores the extra channels, for each family's network;
    ``k = 1`` with one window is 3 channels, which a stem must not mistake for RGB.
    """
    spec = DataSpec(image_size=64)
    model = families.get(name).build({**FAST[name], "context_slices": k}, spec)
    c = 2 * k + 1
    assert model.spec.context_slices == k and model.spec.in_channels == c
    net = model.module.eval()
    torch.manual_seed(1)
    x = torch.rand(2, c, 64, 64)
    y = x.clone()
    y[:, 0] = torch.rand(2, 64, 64)
    with torch.no_grad():
        a, b = net(x)["logit"], net(y)["logit"]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["vgg16", "multitask_unet"])
def test_own_input_size_reads_run_size_data(name: str, tiny) -> None:
    """A model with ``input_size`` 32 trains and predicts on 64^2 run datasets as on 32^2 ones.

    Catches: a model that ignores its own size (shape error, or scores of 64^2 images), a training view
    that resizes differently from ``predict``, and a vein fraction left at the run's size.
    """
    train, val, spec = tiny
    params = {**FAST[name], "input_size": 32, "context_slices": 1, "batch_size": 8}
    fam = families.get(name)
    own = spec_at_input(fam.model_spec(params, spec), train)
    assert own.image_size == 32 and own.context_slices == 1
    assert own.vein_fraction == pytest.approx(spec_for(train.with_input(size=32)).vein_fraction)
    assert own.vein_fraction != spec.vein_fraction  # any-coverage shrinking: more vein pixels at 32^2
    model = fam.build(params, own)
    model.fit(FitData(train=train, val=val), 1)
    at_run = model.predict(val)
    direct = SliceDataset(val.frame, val.root, size=32, windows=val.windows, context_slices=1)
    np.testing.assert_allclose(at_run, model.predict(direct), atol=1e-6)
    assert len(at_run) == len(val) and np.isfinite(at_run).all()


def test_bad_input_params_name_the_param() -> None:
    """Clear errors for a bad ``input_size`` / ``context_slices`` and the multiple-of-32 rule at the
    family's own size (not the run's). Catches: a negative k silently treated as 0, an input size only
    checked at the run's size."""
    spec = DataSpec(image_size=64)
    with pytest.raises(ValueError, match="context_slices"):
        families.get("vgg16").build({"context_slices": -1}, spec)
    with pytest.raises(ValueError, match="input_size"):
        families.get("vgg16").build({"input_size": 2}, spec)
    with pytest.raises(ValueError, match="multiple of 32, got 48"):
        families.get("multitask_unet").build({"input_size": 48}, spec)


@pytest.mark.parametrize("name", CNN)
def test_paper_default_is_the_single_slice_at_the_run_size(name: str) -> None:
    """Defaults leave the network exactly as before: run size, one slice, the unmodified first conv.

    Catches: a default context other than 0 or a default input size other than the run's.
    """
    fam = families.get(name)
    assert fam.default_params()["context_slices"] == 0 and fam.default_params()["input_size"] is None
    spec = DataSpec(image_size=64)
    assert fam.model_spec({}, spec) == spec
    assert fam.build({}, spec).spec.in_channels == 1


def test_checkpoint_keeps_the_models_own_input(tmp_path: Path) -> None:
    """``save``/``load`` round-trips the model's own size and context (the spec in meta.json).

    Catches: a loaded model rebuilt at the run's size or without context (weights would not fit).
    """
    fam = families.get("vgg16")
    model = fam.build({**FAST["vgg16"], "input_size": 32, "context_slices": 2}, DataSpec(image_size=64))
    back = fam.load(model.save(tmp_path / "ckpt"))
    assert (back.spec.image_size, back.spec.context_slices, back.spec.in_channels) == (32, 2, 5)
    x = torch.rand(1, 5, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.module.eval()(x)["logit"], model.module.eval()(x)["logit"])

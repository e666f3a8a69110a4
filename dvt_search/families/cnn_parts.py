"""Building blocks shared by the CNN families: grayscale input stems and local pretrained weights.

Nothing is ever downloaded: ImageNet weights come only from a local ``pretrained_path`` holding the
torchvision ``state_dict`` of the *unmodified* network (loaded with ``weights_only=True``); the stem and
head are adapted after loading.

Slice context (``context_slices = k``): the input holds ``D = 2k + 1`` context slices of ``W`` windows each
(slice-major channels, :data:`dvt_search.data.transform.CHANNEL_ORDER`). ``stem: replicate`` repeats each
slice's windows to 3 channels and the first convolution takes ``3 x D`` inputs, each slice's group holding
the pretrained RGB kernel divided by ``D`` (:func:`spread_conv`: a volume of ``D`` equal slices gives the
pretrained response of one); ``stem: adapt`` feeds the ``D x W`` channels to a first convolution rebuilt by
:func:`adapt_conv` (the pretrained kernel's RGB mean on every channel). Without pretrained weights the
rebuilt convolution is freshly initialised. ``k = 0`` leaves every network exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.checkpoint import load_tensors

STEMS = ("replicate", "adapt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_choice(params: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = params[key]
    if value not in choices:
        raise ValueError(f"parameter {key!r} must be one of {list(choices)}, got {value!r}")
    return str(value)


def check_range(params: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = float(params[key])
    if not lo <= value <= hi:
        raise ValueError(f"parameter {key!r} must be in [{lo}, {hi}], got {value}")
    return value


class InputStem(nn.Module):
    """Maps the ``C`` input channels (``slices`` context slices of ``C / slices`` windows) to what the first
    convolution expects.

    ``replicate``: repeat each slice's window channels cyclically to 3 (``[0, 0, 0]`` for one window and one
    slice; ``3 x slices`` channels in all). ``adapt``: pass the ``C`` channels through (the first convolution
    is rebuilt with ``C`` inputs by :func:`adapt_conv`). With pretrained weights the result is normalised
    with the ImageNet statistics (for ``adapt``, their channel means), since those networks were trained on
    normalised inputs.
    """

    def __init__(self, in_channels: int, mode: str, normalize: bool, slices: int = 1) -> None:
        super().__init__()
        self.mode = mode
        if slices < 1 or in_channels % slices:
            raise ValueError(f"{in_channels} input channels do not split into {slices} context slices")
        per = in_channels // slices
        if mode == "replicate":
            index = torch.cat([d * per + torch.arange(3) % per for d in range(slices)])
        else:
            index = torch.arange(in_channels)
        out = len(index)
        self.register_buffer("index", index, persistent=False)
        self.repeat = not torch.equal(index, torch.arange(in_channels))
        self.normalize = normalize
        if mode == "replicate":
            mean = torch.tensor(IMAGENET_MEAN).repeat(slices)
            std = torch.tensor(IMAGENET_STD).repeat(slices)
        else:
            mean = torch.full((out,), sum(IMAGENET_MEAN) / 3)
            std = torch.full((out,), sum(IMAGENET_STD) / 3)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.repeat:
            x = x.index_select(1, self.index)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x


def adapt_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` rebuilt with ``in_channels`` inputs.

    Pretrained RGB kernels are summed over their 3 input channels and divided by ``in_channels`` (for one
    channel this equals feeding the gray image as R = G = B); otherwise the kernel is freshly initialised
    (Kaiming normal, fan-out, as torchvision does).
    """
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        if pretrained:
            new.weight.copy_(conv.weight.sum(1, keepdim=True).expand_as(new.weight) / in_channels)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


def spread_conv(conv: nn.Conv2d, slices: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` (3 RGB inputs) rebuilt for ``slices`` groups of 3: the kernel repeated per group / ``slices``.

    Without pretrained kernels the new convolution is freshly initialised (Kaiming normal, fan-out).
    """
    if slices == 1:
        return conv
    new = _like(conv, conv.in_channels * slices)
    with torch.no_grad():
        if pretrained:
            new.weight.copy_(conv.weight.repeat(1, slices, 1, 1) / slices)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            _fresh(new)
    return new


def _like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )


def _fresh(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def load_torchvision_weights(
    net: nn.Module,
    path: str | Path,
    remap: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
) -> None:
    """Load a local torchvision ``state_dict`` into the unmodified network ``net`` (strict)."""
    state = load_tensors(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    if remap is not None:
        state = remap(state)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not match torchvision {type(net).__name__}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def stem_and_conv(
    params: Mapping[str, Any], in_channels: int, conv: nn.Conv2d, loaded: bool, *, slices: int = 1
) -> tuple[InputStem, nn.Conv2d]:
    """The input stem and (for ``stem: adapt``, or context slices) the rebuilt first convolution.

    The stem normalises with ImageNet statistics whenever the configuration names pretrained weights
    (also when a checkpoint is loaded and the weights file is not read); ``loaded`` says whether ``conv``
    holds pretrained kernels right now. ``slices`` is ``2k + 1`` for ``k`` context slices.
    """
    mode = check_choice(params, "stem", STEMS)
    stem = InputStem(
        in_channels, mode, normalize=params.get("pretrained_path") not in (None, ""), slices=slices
    )
    if mode == "adapt":
        return stem, adapt_conv(conv, in_channels, loaded)
    return stem, spread_conv(conv, slices, loaded)


def pretrained_path(params: Mapping[str, Any], load: bool) -> Path | None:
    """The configured weights file when it is to be loaded now (``None`` otherwise); must exist."""
    value = params.get("pretrained_path")
    if not load or value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path {path} does not exist (weights are never downloaded)")
    return path

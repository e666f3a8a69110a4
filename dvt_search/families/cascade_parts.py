"""The networks and tensor steps of the vein cascade (:mod:`.vein_cascade`), all plain torch, traceable.

* :class:`VeinSegNet` — stage 1: a small two-level UNet (widths 8, 16, 32) on the centre slice downsampled to ``stage1_size``,
  one vein logit per pixel.
* :func:`vein_support` / :func:`find_candidates` — up to ``K`` candidate vein locations per slice: local
  maxima of the local vein mass (3 x 3 sum of the probability where it reaches ``vein_threshold`` times
  the slice's peak, and at least :data:`MIN_VEIN_PROBABILITY`), at least ``nms // 2 + 1`` pixels apart,
  ranked by that mass; a slot without a candidate is marked invalid.
* :func:`to_native` / :func:`crop_at` — candidate centres mapped to native pixels, and ``crop x crop``
  windows of a native-resolution stack cut around them (zero padding outside the slice).
* :class:`CropNet` — stage 2: a small ResNet (``depth`` basic blocks) scoring each crop clot vs patent.
* :func:`pool_logits` — the slice logit from its crop logits (``max``, ``lse`` = log-mean-exp, or
  ``noisy_or``); a slice without any valid candidate gets the fixed low prior ``empty_logit``.
* :class:`CascadeNet` — the whole chain: ``[B, (2k+1)*C, S, S]`` windowed context stacks at native size
  (slice-major channels, centre slice = channels ``k*C .. k*C + C - 1``) -> ``{"logit", "seg", ...}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

POOLINGS = ("max", "lse", "noisy_or")
#: base width of stage 1 (a light net: it only has to find bright tubes)
STAGE1_WIDTH = 8


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class VeinSegNet(nn.Module):
    """Stage 1: a two-level UNet (widths ``w, 2w, 4w``); input side a multiple of 4, output ``[B, 1, s, s]``."""

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.enc1 = nn.Sequential(_conv_bn_relu(in_channels, w), _conv_bn_relu(w, w))
        self.enc2 = nn.Sequential(_conv_bn_relu(w, 2 * w), _conv_bn_relu(2 * w, 2 * w))
        self.mid = nn.Sequential(_conv_bn_relu(2 * w, 4 * w), _conv_bn_relu(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _conv_bn_relu(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _conv_bn_relu(2 * w, w)
        self.head = nn.Conv2d(w, 1, 1)
        nn.init.constant_(self.head.bias, -3.0)  # veins are a few % of a slice: start near that prior

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


class CropNet(nn.Module):
    """Stage 2: stem + ``depth`` ResNet basic blocks (stride 2 from the second on), GAP, dropout, one logit."""

    def __init__(self, in_channels: int, depth: int, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        w = int(width)
        self.stem = _conv_bn_relu(in_channels, w)
        blocks: list[nn.Module] = []
        ch = w
        for i in range(int(depth)):
            out = w * 2 ** min(i, 3)
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or out != ch:
                down = nn.Sequential(nn.Conv2d(ch, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            blocks.append(BasicBlock(ch, out, stride=stride, downsample=down))
            ch = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        f = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))[:, 0]


def nms_window(stage1_size: int) -> int:
    """Odd max-filter side of :func:`find_candidates` at ``stage1_size`` (5 at 64, 9 at 128: ~1.2 cm)."""
    return 2 * max(1, int(stage1_size) // 32) + 1


#: a slice whose vein probability never reaches this has no candidate (it scores ``empty_logit``)
MIN_VEIN_PROBABILITY = 0.01


def vein_support(prob: Tensor, threshold: float) -> Tensor:
    """``prob`` where it is at least ``threshold`` times the slice's own peak (and ``MIN_VEIN_PROBABILITY``), else 0.

    Relative to each slice's strongest vein response, so a stage 1 that already ranks the veins first but
    is not yet calibrated (early epochs: a vein is a few pixels of a 64^2 map) still proposes them.
    """
    peak = prob.flatten(1).amax(1).reshape(-1, 1, 1)
    keep = (prob >= threshold * peak) & (prob >= MIN_VEIN_PROBABILITY)
    return prob * keep.to(prob.dtype)


def find_candidates(support: Tensor, k: int, nms: int) -> tuple[Tensor, Tensor, Tensor]:
    """Up to ``k`` candidate locations of each ``[B, h, w]`` map (zero = no vein; :func:`vein_support`).

    Candidates are the local maxima (``nms`` x ``nms`` max filter) of the local mass (3 x 3 sum of the map),
    ranked by that mass.

    Returns:
        ``(ys, xs, valid)``: ``int64[B, k]`` pixel coordinates in the map and ``bool[B, k]``; slots are
        ordered by decreasing mass, invalid ones (fewer than ``k`` maxima) point at pixel 0.
    """
    b, h, w = support.shape
    kept = support
    mass = F.avg_pool2d(kept[:, None], 3, stride=1, padding=1, count_include_pad=True)[:, 0] * 9.0
    # ties broken by the pixel's own value, then by position (a plateau yields one maximum, and
    # a lone pixel's maximum is the pixel itself rather than a neighbour sharing its 3 x 3 mass)
    ramp = torch.arange(h * w, device=kept.device, dtype=kept.dtype).reshape(1, h, w) / (h * w) * 1e-7
    mass = mass + 1e-3 * kept + ramp * (mass > 0).to(kept.dtype)
    peak = (mass == F.max_pool2d(mass[:, None], nms, stride=1, padding=nms // 2)[:, 0]) & (kept > 0)
    score = torch.where(peak, mass, torch.full_like(mass, -1.0)).flatten(1)
    kk = min(int(k), h * w)
    vals, idx = score.topk(kk, dim=1)
    valid = vals > 0
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    return idx // w, idx % w, valid


def to_native(coord: Tensor, small: int, native: int) -> Tensor:
    """Map pixel coordinates of a ``small``-side map to the pixel of a ``native``-side slice under its centre."""
    scale = float(native) / float(small)
    return ((coord.to(torch.float32) + 0.5) * scale).floor().to(torch.int64).clamp(0, int(native) - 1)


def crop_at(stack: Tensor, cy: Tensor, cx: Tensor, size: int) -> Tensor:
    """``[B*K, C, size, size]`` windows of ``stack`` (``[B, C, H, W]``) centred on ``(cy, cx)`` (``[B, K]``).

    Pixel ``(cy, cx)`` lands at ``(size // 2, size // 2)`` of its crop; outside the slice the crop is 0.
    """
    b, c, _, _ = stack.shape
    k = cy.shape[1]
    half = size // 2
    padded = F.pad(stack, (half, size - half, half, size - half)).permute(0, 2, 3, 1)  # [B, H', W', C]
    ar = torch.arange(size, device=stack.device)
    rows = (cy[:, :, None] + ar)[:, :, :, None]  # [B, K, size, 1]
    cols = (cx[:, :, None] + ar)[:, :, None, :]  # [B, K, 1, size]
    bidx = torch.arange(b, device=stack.device)[:, None, None, None]
    patch = padded[bidx, rows, cols]  # [B, K, size, size, C]
    return patch.permute(0, 1, 4, 2, 3).reshape(b * k, c, size, size)


def pool_logits(logits: Tensor, valid: Tensor, how: str, empty_logit: float) -> Tensor:
    """Slice logits ``[B]`` from crop logits ``[B, K]`` over the valid slots (``empty_logit`` when none)."""
    any_valid = valid.any(1)
    neg = torch.full_like(logits, -1e4)
    if how == "max":
        pooled = torch.where(valid, logits, neg).amax(1)
    elif how == "lse":
        count = valid.sum(1).clamp_min(1).to(logits.dtype)
        pooled = torch.logsumexp(torch.where(valid, logits, neg), 1) - torch.log(count)
    elif how == "noisy_or":
        # log P(no clot in any crop) = sum log(1 - p_i); slice logit = log(1 - e^S) - S
        s = torch.where(valid, -F.softplus(logits), torch.zeros_like(logits)).sum(1).clamp_max(-1e-6)
        pooled = torch.log(-torch.expm1(s)) - s
    else:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    return torch.where(any_valid, pooled, torch.full_like(pooled, float(empty_logit)))


def downsample(x: Tensor, size: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, size, size]``: area averaging when shrinking, bilinear when enlarging."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class CascadeNet(nn.Module):
    """Stage 1 + candidates + native crops + stage 2 + pooling (see the module docstring).

    Args:
        windows: HU-window channels per slice (``C``).
        context: ``k``, context slices on each side.
        stage1_size, crop_size, candidates, vein_threshold, depth, width, dropout, pooling, empty_logit:
            the family's knobs of the same names.
    """

    def __init__(
        self,
        *,
        windows: int,
        context: int,
        stage1_size: int,
        crop_size: int,
        candidates: int,
        vein_threshold: float,
        depth: int,
        width: int,
        dropout: float,
        pooling: str,
        empty_logit: float,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.windows, self.context = int(windows), int(context)
        self.stage1_size, self.crop_size = int(stage1_size), int(crop_size)
        self.candidates, self.vein_threshold = int(candidates), float(vein_threshold)
        self.pooling, self.empty_logit = pooling, float(empty_logit)
        self.nms = nms_window(self.stage1_size)
        self.stage1 = VeinSegNet(self.windows, STAGE1_WIDTH)
        # every context slice's windows + the stage-1 vein probability at native size
        self.stage2 = CropNet(self.windows * (2 * self.context + 1) + 1, depth, width, dropout)

    @property
    def stack_channels(self) -> int:
        return self.windows * (2 * self.context + 1)

    def centre(self, x: Tensor) -> Tensor:
        """The centre slice's windows of a context stack."""
        c = self.windows
        return x[:, self.context * c : (self.context + 1) * c]

    def forward(self, x: Tensor, veins: Tensor | None = None) -> dict[str, Tensor]:
        """Score ``x`` (``[B, (2k+1)*C, S, S]``; a ``[B, C, S, S]`` single slice is used as its own context).

        ``veins`` (training only): ``[B, s1, s1]`` ground-truth vein map. Candidates then come from the
        true veins first and from stage 1's prediction away from them (``max(10 veins, p (1 - dilate(veins)))``);
        without it (validation, test, deployment) they come from the prediction alone. The crops always
        carry the predicted vein probability.
        """
        if x.shape[1] == self.windows and self.context > 0:
            x = x.repeat(1, 2 * self.context + 1, 1, 1)
        b, _, h, w = x.shape
        seg = self.stage1(downsample(self.centre(x), self.stage1_size))
        prob = torch.sigmoid(seg)
        predicted = prob[:, 0].detach()
        if veins is None:
            support = vein_support(predicted, self.vein_threshold)
        else:
            # predictions are kept only outside the true veins' suppression window (+ the 3 x 3 mass
            # radius), so the true vein pixels, outranking any predicted mass (at most 9), stay maxima
            near = F.max_pool2d(veins[:, None], self.nms + 2, stride=1, padding=self.nms // 2 + 1)[:, 0]
            support = torch.maximum(10.0 * veins, vein_support(predicted * (1.0 - near), self.vein_threshold))
        ys, xs, valid = find_candidates(support, self.candidates, self.nms)
        cy, cx = to_native(ys, self.stage1_size, h), to_native(xs, self.stage1_size, w)
        prob_native = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
        if self.training:
            prob_native = prob_native.detach()  # stage 2 does not train stage 1
        crops = crop_at(torch.cat([x, prob_native], 1), cy, cx, self.crop_size)
        crop_logits = self.stage2(crops).reshape(b, -1)
        logit = pool_logits(crop_logits, valid, self.pooling, self.empty_logit)
        return {"logit": logit, "seg": seg, "crop_logit": crop_logits, "cy": cy, "cx": cx, "valid": valid}

    def cam_layer(self) -> nn.Module:
        """Grad-CAM layer: stage 1's last decoder block (the slice logit reaches it through the crops)."""
        return self.stage1.dec1


class CascadeProbability(nn.Module):
    """What ``model.ts`` holds: ``[B, (2k+1)*C, S, S]`` context stacks -> ``[B]`` slice probabilities."""

    def __init__(self, net: CascadeNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x)["logit"]).reshape(-1).float()


def evidence_maps(out: dict[str, Tensor], size: int, crop: int) -> Tensor:
    """``[B, size, size]`` in [0, 1]: each valid crop's clot probability over its square (max where they overlap)."""
    prob = torch.sigmoid(out["crop_logit"])
    b, k = prob.shape
    maps = torch.zeros(b, size, size)
    half = crop // 2
    for i in range(b):
        for j in range(k):
            if not bool(out["valid"][i, j]):
                continue
            y, x = int(out["cy"][i, j]), int(out["cx"][i, j])
            y0, x0 = max(0, y - half), max(0, x - half)
            y1, x1 = min(size, y - half + crop), min(size, x - half + crop)
            region = maps[i, y0:y1, x0:x1]
            maps[i, y0:y1, x0:x1] = torch.maximum(region, prob[i, j].detach().cpu().float())
    return maps


__all__ = [
    "POOLINGS",
    "CascadeNet",
    "CascadeProbability",
    "CropNet",
    "VeinSegNet",
    "crop_at",
    "downsample",
    "evidence_maps",
    "find_candidates",
    "vein_support",
    "nms_window",
    "pool_logits",
    "to_native",
]

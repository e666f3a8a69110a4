"""Class activation maps for the error analysis of paper section 5.4.

* :func:`grad_cam` (Selvaraju et al.) works for every CNN family: the target layer is the module's
  ``cam_layer()`` unless given.
* :func:`class_activation_map` (Zhou et al.) needs a head that is global average pooling followed by a
  linear layer; such modules expose ``cam_head() -> (feature_module, linear)`` where the output of
  ``feature_module`` is exactly what is pooled.

Both return ``[B, H, W]`` maps upsampled (bilinear) to the input size and min-max normalised to [0, 1]
per image (an all-constant map becomes all zeros).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _default_score(outputs: dict[str, Tensor] | Tensor) -> Tensor:
    return outputs["logit"] if isinstance(outputs, dict) else outputs.reshape(outputs.shape[0], -1)[:, 0]


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each ``[B, H, W]`` map to [0, 1]."""
    flat = maps.flatten(1)
    lo = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


class _Capture:
    """Forward hook keeping a layer's output (and letting gradients flow to it)."""

    def __init__(self, layer: nn.Module) -> None:
        self.value: Tensor | None = None
        self.handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: object, output: Tensor) -> None:
        self.value = output

    def remove(self) -> None:
        self.handle.remove()


def grad_cam(
    module: nn.Module,
    images: Tensor,
    layer: nn.Module | None = None,
    score_fn: Callable[[dict[str, Tensor] | Tensor], Tensor] | None = None,
) -> Tensor:
    """Grad-CAM maps of the DVT logit: ``ReLU(sum_k mean(dS/dA_k) * A_k)`` at ``layer``.

    Args:
        module: the network (put in eval mode for the call, restored afterwards).
        images: ``[B, C, H, W]`` on the module's device.
        layer: target layer (default ``module.cam_layer()``).
        score_fn: maps the forward output to per-image scores ``[B]`` (default ``outputs["logit"]``).
    """
    layer = layer if layer is not None else module.cam_layer()
    score_fn = score_fn or _default_score
    capture = _Capture(layer)
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)
            scores = score_fn(module(x))
            acts = capture.value
            if acts is None:
                raise RuntimeError("the CAM target layer was not called in the forward pass")
            (grads,) = torch.autograd.grad(scores.sum(), acts)
        weights = grads.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * acts.detach().float()).sum(1))
    finally:
        capture.remove()
        module.train(was_training)
    return normalize_maps(_upsample(cam, tuple(images.shape[-2:])))


def class_activation_map(module: nn.Module, images: Tensor) -> Tensor:
    """CAM (Zhou et al.): ``sum_k w_k * A_k`` for a GAP + linear head exposed by ``module.cam_head()``.

    Raises:
        TypeError: when the module has no GAP + linear head (use :func:`grad_cam`).
    """
    head = getattr(module, "cam_head", None)
    parts = head() if callable(head) else None
    if parts is None:
        raise TypeError(f"{type(module).__name__} has no global-average-pooling + linear head; use grad_cam")
    layer, linear = parts
    capture = _Capture(layer)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(images)
            acts = capture.value
            if acts is None:
                raise RuntimeError("the CAM feature layer was not called in the forward pass")
            weight = linear.weight.float().reshape(-1)
            cam = torch.einsum("bchw,c->bhw", acts.float(), weight)
    finally:
        capture.remove()
        module.train(was_training)
    return normalize_maps(_upsample(cam, tuple(images.shape[-2:])))

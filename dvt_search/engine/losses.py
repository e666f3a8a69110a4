"""The paper's losses (section 4, eqs. 1-4), all computed from logits for numerical stability.

With ``z`` a logit and ``s = sigmoid(z)``: ``log s = -softplus(-z)`` and ``log(1 - s) = -softplus(z)``,
so no probability is ever clamped and large logits cannot produce ``inf``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Paper defaults for eq. 4: weight of the classification term and, inside the segmentation term, of
#: the pixelwise BCE (the rest goes to Dice): 0.5 * ClsBCE + 0.5 * (0.25 * PixelBCE + 0.75 * Dice).
PAPER_A = 0.5
PAPER_B = 0.25


def bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Eq. 1, binary cross-entropy: ``-(1/n) sum(y log yhat + (1 - y) log(1 - yhat))``.

    Args:
        logits: any shape; ``yhat = sigmoid(logits)``.
        targets: same number of elements, values in [0, 1].

    Returns:
        Scalar mean over all elements.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float().reshape(logits.shape))


def pixel_bce(logits: Tensor, targets: Tensor, w0: float = 1.0, w1: float = 1.0) -> Tensor:
    """Eq. 2, weighted pixelwise BCE, exactly as printed in the paper.

    ``-(1/n) sum(w0 * y * log(yhat) + w1 * (1 - y) * log(1 - yhat))`` with ``n`` the number of pixels
    (all pixels of the batch). Note the paper's naming: ``w0`` multiplies the **y = 1** (vein) term and
    ``w1`` the y = 0 (background) term; this function keeps that naming.

    Args:
        logits: segmentation logits, e.g. ``[B, 1, H, W]``.
        targets: 0/1 mask with the same number of elements.
        w0: weight of the positive (y = 1) term.
        w1: weight of the negative (y = 0) term.
    """
    z = logits.float()
    y = targets.float().reshape(z.shape)
    per_pixel = w0 * y * F.softplus(-z) + w1 * (1.0 - y) * F.softplus(z)
    return per_pixel.mean()


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """Eq. 3, soft Dice loss ``1 - (2 sum(p * phat) + 1) / (sum(p) + sum(phat) + 1)``.

    ``phat = sigmoid(logits)`` is soft (the paper writes ``phat`` in {0, 1}; a hard mask has no gradient).
    The sums run over the pixels of each sample; the loss is the mean of the per-sample values, so a
    slice without vein pixels contributes ``1 - 1 / (sum(phat) + 1)``, small when nothing is predicted.

    Args:
        logits: ``[B, ...]`` segmentation logits.
        targets: 0/1 mask with the same number of elements.
        smooth: the ``+ 1`` of the paper.
    """
    phat = torch.sigmoid(logits.float()).flatten(1)
    p = targets.float().reshape(phat.shape)
    inter = (p * phat).sum(1)
    per_sample = 1.0 - (2.0 * inter + smooth) / (p.sum(1) + phat.sum(1) + smooth)
    return per_sample.mean()


def multitask_loss(
    cls_logits: Tensor,
    labels: Tensor,
    seg_logits: Tensor,
    masks: Tensor,
    *,
    a: float = PAPER_A,
    b: float = PAPER_B,
    w0: float = 1.0,
    w1: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 4, generalised: ``a * ClsBCE + (1 - a) * (b * PixelBCE + (1 - b) * Dice)``.

    At the defaults ``a = 0.5, b = 0.25`` this is exactly the paper's
    ``0.5 * ClsBCE + 0.5 * (0.25 * PixelBCE + 0.75 * Dice)``.

    Returns:
        ``(total, {"cls": ..., "pix": ..., "dice": ...})`` with the unweighted terms (for Fig. 3).
    """
    cls = bce(cls_logits, labels)
    pix = pixel_bce(seg_logits, masks, w0=w0, w1=w1)
    dice = dice_loss(seg_logits, masks)
    total = a * cls + (1.0 - a) * (b * pix + (1.0 - b) * dice)
    return total, {"cls": cls, "pix": pix, "dice": dice}


def patch_bce(logits: Tensor, targets: Tensor, pos_weight: float = 1.0) -> Tensor:
    """Weighted BCE over patch cells (paper section 4.4): eq. 2 with ``w0 = pos_weight``, ``w1 = 1``."""
    return pixel_bce(logits, targets, w0=pos_weight, w1=1.0)


def balanced_weights(positive_fraction: float) -> tuple[float, float]:
    """``(w0, w1)`` that balance the two classes of eq. 2 (scikit-learn's "balanced" rule).

    ``w0 = 1 / (2 f)`` for the positive term and ``w1 = 1 / (2 (1 - f))`` for the negative one, so the
    mean weight over pixels is 1. ``f`` is clamped to ``[1e-4, 1 - 1e-4]``.
    """
    f = min(max(float(positive_fraction), 1e-4), 1.0 - 1e-4)
    return 1.0 / (2.0 * f), 1.0 / (2.0 * (1.0 - f))

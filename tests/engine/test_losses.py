"""Eqs. 1-4 of the paper against values computed by hand with Python's math module."""

from __future__ import annotations

import math

import pytest
import torch

from dvt_search.engine.losses import (
    PAPER_A,
    PAPER_B,
    balanced_weights,
    bce,
    dice_loss,
    multitask_loss,
    patch_bce,
    pixel_bce,
)


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


Z = [0.3, -1.2, 2.0, -0.4]
Y = [1.0, 0.0, 1.0, 0.0]


def hand_bce(z: list[float], y: list[float], w0: float = 1.0, w1: float = 1.0) -> float:
    terms = [w0 * t * math.log(sig(v)) + w1 * (1 - t) * math.log(1 - sig(v)) for v, t in zip(z, y)]
    return -sum(terms) / len(terms)


def hand_dice(z: list[float], y: list[float]) -> float:
    p = [sig(v) for v in z]
    inter = sum(a * b for a, b in zip(p, y))
    return 1 - (2 * inter + 1) / (sum(y) + sum(p) + 1)


def test_eq1_bce_matches_hand_computation() -> None:
    got = bce(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(hand_bce(Z, Y), rel=1e-6)


def test_eq2_pixel_bce_weights_follow_paper_naming() -> None:
    z = torch.tensor(Z).reshape(1, 1, 2, 2)
    y = torch.tensor(Y).reshape(1, 1, 2, 2)
    got = pixel_bce(z, y, w0=3.0, w1=0.5)
    assert got.item() == pytest.approx(hand_bce(Z, Y, w0=3.0, w1=0.5), rel=1e-6)
    # w0 multiplies the y = 1 term: with only positives, w1 has no effect and w0 scales linearly.
    ones = torch.ones(1, 1, 2, 2)
    assert pixel_bce(z, ones, w0=2.0, w1=7.0).item() == pytest.approx(2 * pixel_bce(z, ones).item(), rel=1e-6)


def test_eq2_is_stable_for_extreme_logits() -> None:
    z = torch.tensor([200.0, -200.0])
    y = torch.tensor([0.0, 1.0])
    got = pixel_bce(z, y, w0=2.0, w1=1.0)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx((200.0 + 2 * 200.0) / 2, rel=1e-6)


def test_eq3_dice_per_sample_then_mean() -> None:
    z2 = [-0.5, 1.5, 0.1, -2.0]
    y2 = [0.0, 1.0, 1.0, 0.0]
    z = torch.tensor([Z, z2]).reshape(2, 1, 2, 2)
    y = torch.tensor([Y, y2]).reshape(2, 1, 2, 2)
    expected = (hand_dice(Z, Y) + hand_dice(z2, y2)) / 2
    assert dice_loss(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_eq3_dice_has_gradient() -> None:
    z = torch.tensor(Z, requires_grad=True)
    dice_loss(z.reshape(1, 4), torch.tensor(Y).reshape(1, 4)).backward()
    assert z.grad is not None and torch.all(z.grad != 0)


def test_eq4_paper_defaults_and_terms() -> None:
    assert (PAPER_A, PAPER_B) == (0.5, 0.25)
    cls_z, cls_y = [0.7, -0.2], [1.0, 0.0]
    seg_z = torch.tensor([Z, Z[::-1]]).reshape(2, 1, 2, 2)
    seg_y = torch.tensor([Y, Y[::-1]]).reshape(2, 1, 2, 2)
    total, parts = multitask_loss(torch.tensor(cls_z), torch.tensor(cls_y), seg_z, seg_y, w0=4.0, w1=0.8)
    cls = hand_bce(cls_z, cls_y)
    pix = (hand_bce(Z, Y, 4.0, 0.8) + hand_bce(Z[::-1], Y[::-1], 4.0, 0.8)) / 2
    dice = (hand_dice(Z, Y) + hand_dice(Z[::-1], Y[::-1])) / 2
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert parts["pix"].item() == pytest.approx(pix, rel=1e-6)
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-6)
    # The paper's eq. 4 literally: 0.5 * Cls + 0.5 * (0.25 * Pixel + 0.75 * Dice).
    assert total.item() == pytest.approx(0.5 * cls + 0.5 * (0.25 * pix + 0.75 * dice), rel=1e-6)


def test_eq4_generalised_weights() -> None:
    cls_z = torch.tensor([0.7, -0.2])
    cls_y = torch.tensor([1.0, 0.0])
    seg_z = torch.tensor(Z).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    seg_y = torch.tensor(Y).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    only_cls, parts = multitask_loss(cls_z, cls_y, seg_z, seg_y, a=1.0)
    assert only_cls.item() == pytest.approx(parts["cls"].item())
    only_dice, parts = multitask_loss(cls_z, cls_y, seg_z, seg_y, a=0.0, b=0.0)
    assert only_dice.item() == pytest.approx(parts["dice"].item())


def test_patch_bce_is_eq2_with_positive_weight() -> None:
    z = torch.tensor(Z).reshape(1, 2, 2)
    y = torch.tensor(Y).reshape(1, 2, 2)
    assert patch_bce(z, y, pos_weight=5.0).item() == pytest.approx(hand_bce(Z, Y, w0=5.0, w1=1.0), rel=1e-6)


def test_balanced_weights() -> None:
    w0, w1 = balanced_weights(0.1)
    assert (w0, w1) == (pytest.approx(5.0), pytest.approx(1 / 1.8))
    # mean weight over pixels is one
    assert 0.1 * w0 + 0.9 * w1 == pytest.approx(1.0)
    assert math.isfinite(balanced_weights(0.0)[0])

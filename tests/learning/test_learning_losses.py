"""Hybrid loss: exact values on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_octseg.learning.losses import IGNORE_INDEX, HybridLoss, soft_dice


def _onehot_logits(target: torch.Tensor, n: int, scale: float = 50.0) -> torch.Tensor:
    return F.one_hot(target, n).permute(0, 3, 1, 2).float() * scale


def test_perfect_prediction_dice_term_is_zero():
    target = torch.tensor([[[0, 1], [2, 2]]])
    logits = _onehot_logits(target, 4, scale=1e4)  # softmax is exactly one-hot in float32
    assert float(soft_dice(logits, target)) == 1.0
    loss = HybridLoss(4)(logits, target)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_uniform_logits_exact_value():
    # Uniform softmax over 2 classes, target all class 0 on 4 pixels:
    # CE = ln 2; dice0 = (2*2 + 1)/(2 + 4 + 1) = 5/7; dice1 = (0 + 1)/(2 + 0 + 1) = 1/3.
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    logits = torch.zeros(1, 2, 2, 2)
    dice = (5 / 7 + 1 / 3) / 2
    assert float(soft_dice(logits, target)) == pytest.approx(dice)
    assert float(HybridLoss(2, dice_weight=0.5)(logits, target)) == pytest.approx(math.log(2) + 0.5 * (1 - dice))
    assert float(HybridLoss(2, dice_weight=0.0)(logits, target)) == pytest.approx(math.log(2))


def test_ignored_pixels_do_not_count():
    target = torch.tensor([[[0, IGNORE_INDEX]]])
    logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # pixel 2 "wrong", but ignored
    full = HybridLoss(2)(logits, target)
    only = HybridLoss(2)(logits[..., :1], target[..., :1])
    assert float(full) == pytest.approx(float(only), rel=1e-6)


def test_class_weights_change_loss_and_are_validated():
    target = torch.tensor([[[0, 1, 1, 1]]])
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, 1] = 3.0  # one class-1 pixel predicted as class 0
    plain = HybridLoss(2)(logits, target)
    weighted = HybridLoss(2, class_weights=[0.1, 10.0])(logits, target)
    assert float(weighted) != pytest.approx(float(plain))
    with pytest.raises(ValueError):
        HybridLoss(2, class_weights=[1.0])
    with pytest.raises(ValueError):
        HybridLoss(2, class_weights=[1.0, float("nan")])


def test_gradient_flows():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    HybridLoss(3)(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

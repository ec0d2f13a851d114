"""The hybrid loss of the paper: cross-entropy + ``dice_weight`` x (1 - soft Dice over classes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Label value of pixels that carry no ground truth (padding, pixels rotated in from outside).
IGNORE_INDEX = 255


def soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    class_weights: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Dice coefficient, averaged over classes (optionally weighted), pooled over the batch.

    Parameters
    ----------
    logits
        (N, C, H, W) raw network outputs.
    target
        (N, H, W) integer labels in ``0 .. C - 1``, or ``ignore_index`` for pixels not scored.
    class_weights
        (C,) weights of the per-class Dice in the mean; ``None`` weighs classes equally.
    smooth
        Added to numerator and denominator: a class absent from both target and prediction
        scores 1, and the gradient stays finite.

    Returns
    -------
    Scalar tensor in [0, 1]; 1 for a perfect one-hot prediction.
    """
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    valid = (target != ignore_index).unsqueeze(1)
    safe_target = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
    onehot = F.one_hot(safe_target.long(), n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    probs = probs * valid
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if class_weights is None:
        return dice.mean()
    w = class_weights.to(dice)
    return (dice * w).sum() / w.sum()


class HybridLoss(nn.Module):
    """Cross-entropy + ``dice_weight`` x (1 - soft Dice).

    Parameters
    ----------
    n_classes
        Number of classes C (checked against the logits).
    dice_weight
        Weight of the Dice term (the paper: 0.5).
    class_weights
        Optional (C,) weights, used by the cross-entropy and in the Dice class mean; they help the
        thin layers and the rare fluid class against the large background classes.
    ignore_index
        Target value of pixels left out of both terms.
    """

    def __init__(
        self,
        n_classes: int,
        dice_weight: float = 0.5,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=torch.float32)
            if w.shape != (n_classes,) or not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"class_weights must be {n_classes} finite non-negative numbers")
            self.register_buffer("class_weights", w)
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of (N, C, H, W) logits against (N, H, W) integer targets; a scalar tensor."""
        if logits.shape[1] != self.n_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, the loss expects {self.n_classes}")
        target = target.long()
        ce = F.cross_entropy(logits.float(), target, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.dice_weight == 0:
            return ce
        dice = soft_dice(logits, target, self.ignore_index, self.class_weights)
        return ce + self.dice_weight * (1.0 - dice)

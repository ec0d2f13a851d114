"""Grad-CAM's backward passes through a SegNet decoder, one row band per class (exact, hand-written).

Why hand-written: autograd runs each backward pass over the whole B-scan, yet a class scored on its
predicted pixels (a retinal layer: a band of rows) has a gradient only within the network's footprint
of those pixels (``SegNet.gradcam_footprint``: 6 rows at ``decoder.2``). On a foveal Duke B-scan the
classes' bands, margins included, add up to about twice the B-scan's height, against 7 full-height passes
for autograd, which cannot be told to skip rows whose gradient is zero. The decoder levels after the
Grad-CAM layer are a chain this module differentiates by hand, on each class's band only:

    seed at the classifier's input -> per finer decoder level j (finest first):
        ReLU (mask of its saved output) -> 3x3 conv (transposed) -> ReLU -> 3x3 conv over
        cat([unpooled, skip]) (transposed, the unpooled channels only: the encoder's skip is constant)
        -> max-unpool (the gradient gathered back through the pooling indices of level j)

A 3x3 conv spreads a gradient by one position of its level, so a band widened by the footprint's radius
(rounded to whole blocks of the layer) holds every position the gradient reaches, and the zero padding
at the band's edges adds nothing: the result equals autograd's (the tests compare both).

At the bottleneck (the deepest encoder block) the deepest decoder level's skip is the layer itself: its
gradient is the skip half's plus the unpooled half's, passed back through unpooling and pooling with the
same indices (to each 2 x 2 block's maximum).

The forward pass then runs without autograd; hooks keep the decoder's ReLU outputs (their positive masks)
and the pooling indices. Networks or layers this does not fit (another architecture, BatchNorm in training
mode, active dropout before the classifier) return ``None`` from :func:`band_plan`, and
:func:`~napari_octseg.explain._batch.gradcam_batch` uses autograd as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models.segnet import SplitInputConv

#: Rows added on each side of a class's pixels beyond the footprint's radius (safety; costs ~1 %).
_EXTRA_ROWS = 2


@dataclass
class _Level:
    """One decoder level after the Grad-CAM layer: its two convs and what the backward pass needs."""

    #: Forward weights (out, in, 3, 3) of the level's first conv, its unpooled input channels only.
    first: torch.Tensor
    #: Forward weights of the second conv.
    second: torch.Tensor
    #: Per-channel factor of an eval-mode BatchNorm after each conv (``None``: none, or folded).
    scale_first: torch.Tensor | None
    scale_second: torch.Tensor | None
    relus: tuple[nn.Module, nn.Module]
    #: Filled by the forward hooks: the two ReLU outputs (batch, channels, rows, cols).
    saved: list[torch.Tensor] = field(default_factory=list)


@dataclass
class BandPlan:
    """How to differentiate ``net`` by hand from its classifier's input back to ``decoder.<level>``."""

    level: int
    #: The decoder levels ``level - 1`` .. 0, in the order the gradient passes them (coarsest first
    #: in the network's order, so this list is indexed by level).
    levels: list[_Level]
    #: ``net.pool``, whose forward calls (levels 0, 1, ...) give the pooling indices.
    pool: nn.Module
    #: Pooling indices per level, filled by the hook.
    indices: list[torch.Tensor] = field(default_factory=list)
    #: Rows a class's band reaches beyond its pixels (full resolution).
    radius: int = 0
    #: The layer is the bottleneck (the deepest encoder block): ``levels`` then also holds the deepest
    #: decoder level, whose input is ``cat([unpool(pool(A)), A])``, its first conv with all input channels.
    bottleneck: bool = False
    #: Channels of the layer's output.
    channels: int = 0

    def hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        """Register the forward hooks that save what the backward passes need (remove them after)."""
        self.indices.clear()
        handles = [self.pool.register_forward_hook(lambda _m, _i, out: self.indices.append(out[1]))]
        for lv in self.levels:
            lv.saved.clear()
            for relu in lv.relus:
                handles.append(relu.register_forward_hook(lambda _m, _i, out, lv=lv: lv.saved.append(out)))
        return handles


def _unit(block: nn.Sequential, start: int) -> tuple[torch.Tensor, torch.Tensor | None, nn.Module] | None:
    """``block[start:start + 3]`` as (3x3 conv weight (out, in, 3, 3), BatchNorm factor or None, ReLU), or
    ``None``. A :class:`~napari_octseg.models.segnet.SplitInputConv` counts as the conv it was split from."""
    conv, norm, relu = block[start], block[start + 1], block[start + 2]
    parts = [conv.up, conv.skip] if isinstance(conv, SplitInputConv) else [conv]
    convs = [c for c in parts if isinstance(c, nn.Conv2d)]
    if not isinstance(relu, nn.ReLU) or len(convs) != len(parts):
        return None
    for c in convs:
        if c.kernel_size != (3, 3) or c.stride != (1, 1) or c.padding != (1, 1) or c.groups != 1:
            return None
        if c.dilation != (1, 1):
            return None
    weight = torch.cat([c.weight.detach() for c in convs], dim=1)
    if isinstance(norm, nn.Identity):
        return weight, None, relu
    if isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None:
        factor = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            factor = factor * norm.weight
        return weight, factor.detach(), relu
    return None


def band_plan(net: nn.Module, layer: str) -> BandPlan | None:
    """A plan for hand-written row-band backward passes to ``layer`` (``"decoder.<i>"``, 0 < i < depth)
    of a SegNet-shaped ``net``, or ``None`` where it does not apply (autograd is used then)."""
    decoder, pool, unpool = (getattr(net, name, None) for name in ("decoder", "pool", "unpool"))
    if not isinstance(decoder, nn.ModuleList) or not isinstance(pool, nn.MaxPool2d):
        return None
    if not isinstance(unpool, nn.MaxUnpool2d) or not (layer.startswith("decoder.") or layer == "bottleneck"):
        return None
    if pool.kernel_size not in (2, (2, 2)) or pool.stride not in (2, (2, 2)) or not pool.return_indices:
        return None
    encoder = getattr(net, "encoder", None)
    dropout = getattr(net, "dropout", None)
    if net.training or (isinstance(dropout, nn.Module) and dropout.training):
        return None  # active dropout before the classifier: the seed is not M^T times the pixel weights
    bottleneck = layer == "bottleneck"
    level = len(decoder) - 1 if bottleneck else int(layer[8:]) if layer[8:].isdigit() else -1
    if not (0 < level < len(decoder)) or (bottleneck and not isinstance(encoder, nn.ModuleList)):
        return None
    levels: list[_Level] = []
    for j in range(level + 1 if bottleneck else level):
        block = decoder[j]
        if not isinstance(block, nn.Sequential) or len(block) != 6:
            return None
        a, b = _unit(block, 0), _unit(block, 3)
        if a is None or b is None:
            return None
        # the level's input is cat([unpooled output of the level below, skip]); below the deepest decoder
        # level is the pooled bottleneck, and its skip is the bottleneck itself (both need the gradient)
        after = encoder[-1] if j == len(decoder) - 1 and encoder is not None else decoder[j + 1]
        n_up = after[-3].out_channels if isinstance(after, nn.Sequential) and isinstance(after[-3], nn.Conv2d) else 0
        if n_up <= 0 or a[0].shape[1] <= n_up:
            return None
        n_in = 2 * n_up if j == len(decoder) - 1 else n_up
        if a[0].shape[1] < n_in:
            return None
        levels.append(_Level(a[0][:, :n_in], b[0], a[1], b[1], (a[2], b[2])))
    # how far a gradient spreads from the pixels it starts at (SegNet.gradcam_footprint, tested there)
    footprint = getattr(net, "gradcam_footprint", None)
    reach = footprint(layer) if callable(footprint) else None
    if reach is None:
        return None
    channels = levels[-1].first.shape[1] // 2 if bottleneck else levels[-1].first.shape[1]
    return BandPlan(level, levels, pool, radius=int(reach[1]), bottleneck=bottleneck, channels=channels)


def _rows(weights: torch.Tensor) -> tuple[int, int] | None:
    """First and last row (inclusive) where a (depth, width) seed is non-zero; ``None`` if it is empty."""
    rows = torch.nonzero(weights.abs().sum(-1) > 0).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1])


def _band_indices(idx: torch.Tensor, top: int, cols: int) -> torch.Tensor:
    """Pooling indices (channels, rows / 2, cols / 2), flat in the finer level's whole plane, made flat in its
    band starting at row ``top``: (channels, rows / 2 * cols / 2)."""
    return (idx - top * cols).reshape(idx.shape[0], -1)


def _unpool_back(g: torch.Tensor, idx: torch.Tensor, top: int) -> torch.Tensor:
    """Gradient of max-unpool's input on a band: ``g`` (channels, rows, cols) on the finer level's rows
    ``top ..``; ``idx`` the pooling indices (channels, rows / 2, cols / 2) of the same band."""
    channels, _, cols = g.shape
    return torch.gather(g.reshape(channels, -1), 1, _band_indices(idx, top, cols)).reshape(idx.shape)


def band_channel_grads(
    plan: BandPlan,
    head: torch.Tensor,
    classes: Sequence[int],
    weights: torch.Tensor,
    padded: tuple[int, int],
) -> torch.Tensor:
    """Gradients of every class score with respect to ``decoder.<level>``'s output, summed over its
    positions: (len(classes), batch, channels), as autograd would give them.

    Parameters
    ----------
    plan
        From :func:`band_plan`, after a forward pass with its hooks.
    head
        The classifier's 1x1 weights (n_classes, channels): ``logits = head @ top + bias``.
    classes
        Class values, one per row of the result.
    weights
        (batch, len(classes), depth, width): d score / d logit of each class at each pixel of the image.
    padded
        The network's padded input size (rows, cols); the classifier's input has this size.
    """
    # bands start and end on whole blocks of the layer's grid (of the pooling below it for the bottleneck)
    stride = 2 ** (plan.level + 1) if plan.bottleneck else 2**plan.level
    n_rows, n_cols = padded
    batch, k = weights.shape[:2]
    height, width = weights.shape[-2:]
    out = torch.zeros((k, batch, plan.channels), dtype=torch.float32, device=weights.device)
    idx = torch.as_tensor(list(classes), device=weights.device)
    rows_m = head.to(weights.dtype)[idx]  # (k, channels at the classifier's input)
    for b in range(batch):
        for i in range(k):
            span = _rows(weights[b, i])
            if span is None:
                continue
            lo = max(0, (span[0] - plan.radius - _EXTRA_ROWS) // stride * stride)
            hi = min(n_rows, -(-(span[1] + 1 + plan.radius + _EXTRA_ROWS) // stride) * stride)
            g = torch.zeros((rows_m.shape[1], hi - lo, n_cols), dtype=weights.dtype, device=weights.device)
            seed = weights[b, i, lo : min(hi, height)]
            g[:, : seed.shape[0], :width] = rows_m[i][:, None, None] * seed
            top = lo
            for j in range(plan.level):
                lv = plan.levels[j]
                g = _level_back(lv, g, b, top)
                idx_j = plan.indices[j][b, :, top // 2 : top // 2 + g.shape[1] // 2]
                g = _unpool_back(g, idx_j, top)
                top //= 2
            if plan.bottleneck:
                g = _bottleneck_back(plan, g, b, top)
            out[i, b] = g.sum((-2, -1)).float()
    return out


def _bottleneck_back(plan: BandPlan, g: torch.Tensor, b: int, top: int) -> torch.Tensor:
    """From the deepest decoder level's output back to the bottleneck ``A`` on a band: its input is
    ``cat([unpool(pool(A)), A])``, so ``A``'s gradient is the skip half's plus the unpooled half's, which
    pooling and unpooling with the same indices pass back to the position each 2 x 2 block's maximum came
    from (a mask)."""
    g = _level_back(plan.levels[plan.level], g, b, top)
    up, skip = g[: plan.channels], g[plan.channels :]
    rows, cols = up.shape[-2:]
    idx = plan.indices[plan.level][b, :, top // 2 : top // 2 + rows // 2]
    local = _band_indices(idx, top, cols)
    kept = torch.zeros((plan.channels, rows * cols), dtype=up.dtype, device=up.device).scatter_(1, local, 1.0)
    return skip + up * kept.reshape(up.shape)


def _level_back(lv: _Level, g: torch.Tensor, b: int, top: int) -> torch.Tensor:
    """Back through one decoder level on a band: (channels out, rows, cols) -> (unpooled channels, ...)."""
    rows = g.shape[1]
    relu_first, relu_second = (s[b, :, top : top + rows] for s in lv.saved)
    g = g * (relu_second > 0)
    if lv.scale_second is not None:
        g = g * lv.scale_second[:, None, None]
    g = F.conv_transpose2d(g[None], lv.second, padding=1)[0]
    g = g * (relu_first > 0)
    if lv.scale_first is not None:
        g = g * lv.scale_first[:, None, None]
    return F.conv_transpose2d(g[None], lv.first, padding=1)[0]

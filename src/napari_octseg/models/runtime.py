"""Runtime helpers for running a network: an inference-ready copy and the GPU cache hand-back.

Shared by :mod:`napari_octseg.inference` (segmentation) and :mod:`napari_octseg.explain` (Grad-CAM).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .segnet import DecoderBlock, SplitInputConv


def release_cached(device: torch.device) -> None:
    """Hand the GPU allocator's cached blocks back to the driver (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _fuse_conv_bn(net: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the conv before it (same outputs, ~15 % less CPU time)."""
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None:
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    return net


def _split_decoder_inputs(net: nn.Module) -> nn.Module:
    """Replace each SegNet decoder level's first conv by a :class:`SplitInputConv` (no concatenation)."""
    for block in net.modules():
        if isinstance(block, DecoderBlock) and isinstance(block[0], nn.Conv2d) and block[0].in_channels % 2 == 0:
            block[0] = SplitInputConv(block[0], block[0].in_channels // 2)
    return net


def inference_network(net: nn.Module, device: torch.device) -> nn.Module:
    """An eval-mode copy of ``net`` on ``device``, BatchNorm folded, decoder inputs not concatenated,
    channels-last where that is faster.

    Working on a copy leaves the caller's network (its device, mode and modules) untouched.
    """
    fast = _split_decoder_inputs(_fuse_conv_bn(copy.deepcopy(net).eval())).to(device)
    if device.type in ("cpu", "cuda"):
        # oneDNN and cuDNN run these small-channel convs markedly faster in NHWC
        # (Module.to accepts memory_format at run time; torch's overload stubs leave it out)
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fast

"""Enhanced SegNet (arXiv 2509.07795): SegNet with pooling indices plus full-resolution skips.

Encoder: ``depth`` blocks of 2 x (conv 3x3 + BN + ReLU), each followed by a 2x2 max-pool that keeps
its indices. Decoder: per level, max-unpool with those indices, concatenate the encoder block's
features (the skip), 2 x (conv 3x3 + BN + ReLU). A 1x1 conv maps to class logits (softmax is applied
by the loss / at inference, not inside the network).

Width and depth are configuration: the paper's ``(64, 128, 256, 512, 512)`` and a light default that
is fast on a CPU. Any input height/width works: the input is padded to a multiple of ``2 ** depth``
and the logits are cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SegNetConfig:
    """Architecture of a :class:`SegNet` (stored in every checkpoint and rebuilt from it)."""

    in_channels: int = 1
    n_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64, 128, 128)
    batch_norm: bool = True
    dropout: float = 0.0
    architecture: str = field(default="segnet", init=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SegNetConfig:
        d = dict(d)
        d.pop("architecture", None)
        d["widths"] = tuple(int(w) for w in d["widths"])
        return cls(**d)


#: Named configurations: the light CPU default and the paper's full size.
PRESETS: dict[str, SegNetConfig] = {
    "light": SegNetConfig(widths=(16, 32, 64, 128, 128)),
    "paper": SegNetConfig(widths=(64, 128, 256, 512, 512)),
}


def _units(c_in: int, c_mid: int, c_out: int, bn: bool) -> list[nn.Module]:
    def unit(a: int, b: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(a, b, 3, padding=1, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU(inplace=True))
        return layers

    return [*unit(c_in, c_mid), *unit(c_mid, c_out)]


def _double_conv(c_in: int, c_mid: int, c_out: int, bn: bool) -> nn.Sequential:
    return nn.Sequential(*_units(c_in, c_mid, c_out, bn))


class SplitInputConv(nn.Module):
    """A decoder level's first conv over ``cat([unpooled, skip])`` as two convs whose outputs are added.

    The same output as the conv over the concatenation (to float rounding) without building the
    concatenation: on a CPU, concatenating channels-last feature maps along the channels cost about as much
    as the conv itself at full resolution (``benchmarks/bench_segment.py``). Made from a trained conv by
    :func:`napari_octseg.models.runtime.inference_network`; training keeps the single conv.
    """

    def __init__(self, conv: nn.Conv2d, n_up: int) -> None:
        super().__init__()
        if conv.groups != 1 or not 0 < n_up < conv.in_channels:
            raise ValueError("SplitInputConv needs an ungrouped conv with both inputs")
        weight = conv.weight.detach()
        args = {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding}
        self.up = nn.Conv2d(n_up, conv.out_channels, bias=False, **args)  # type: ignore[arg-type]
        self.skip = nn.Conv2d(conv.in_channels - n_up, conv.out_channels, bias=conv.bias is not None, **args)  # type: ignore[arg-type]
        with torch.no_grad():
            self.up.weight.copy_(weight[:, :n_up])
            self.skip.weight.copy_(weight[:, n_up:])
            if conv.bias is not None and self.skip.bias is not None:
                self.skip.bias.copy_(conv.bias.detach())
        self.to(device=weight.device, dtype=weight.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The equivalent single conv's weight (out, n_up + n_skip, k, k)."""
        return torch.cat([self.up.weight, self.skip.weight], dim=1)

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.skip(skip) + self.up(up)
        return out


class DecoderBlock(nn.Sequential):
    """One decoder level: 2 x (conv 3x3 + BN + ReLU) over ``cat([unpooled, skip])``, called as ``block(up, skip)``.

    A :class:`nn.Sequential` (the same modules and state-dict keys as before it took two inputs); its first
    module is a conv over the concatenation, or a :class:`SplitInputConv` that does without it.
    """

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        modules = iter(self)
        first = next(modules)
        x: torch.Tensor = first(up, skip) if isinstance(first, SplitInputConv) else first(torch.cat([up, skip], dim=1))
        for module in modules:
            x = module(x)
        return x


class _MaxUnpool2x2(nn.MaxUnpool2d):
    """2x2 max-unpooling (``nn.MaxUnpool2d(2, 2)``) that calls the ATen operator directly.

    ``F.max_unpool2d`` checks the output size in Python with ``torch._check``, whose first call imports
    sympy: about 1.1 s of every process's first segmentation (measured in ``octseg segment``). The sizes
    here are the encoder's own feature-map sizes, which the operator checks again in C++.
    """

    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(self, input: torch.Tensor, indices: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        size = [2 * input.shape[-2], 2 * input.shape[-1]] if output_size is None else list(output_size)[-2:]
        out: torch.Tensor = torch.ops.aten.max_unpool2d(input, indices, [int(v) for v in size])
        return out


class SegNet(nn.Module):
    """Enhanced SegNet. Input (N, in_channels, H, W) float32; output logits (N, n_classes, H, W)."""

    def __init__(self, config: SegNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegNetConfig()
        w = self.config.widths
        bn = self.config.batch_norm
        self.encoder = nn.ModuleList()
        c_prev = self.config.in_channels
        for c in w:
            self.encoder.append(_double_conv(c_prev, c, c, bn))
            c_prev = c
        # decoder[i] works at the resolution of encoder[i]; it outputs the width the next (finer)
        # level's pooling indices expect, and the base width at level 0.
        self.decoder = nn.ModuleList()
        for i, c in enumerate(w):
            c_out = w[i - 1] if i > 0 else w[0]
            self.decoder.append(DecoderBlock(*_units(2 * c, c, c_out, bn)))
        self.dropout = nn.Dropout2d(self.config.dropout) if self.config.dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(w[0], self.config.n_classes, 1)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = _MaxUnpool2x2()

    @property
    def depth(self) -> int:
        return len(self.config.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips, indices = [], []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
        for i in reversed(range(self.depth)):
            x = self.unpool(x, indices[i], output_size=skips[i].shape[-2:])
            x = self.decoder[i](x, skips[i])
        x = self.classifier(self.dropout(x))
        return x[..., :h, :w]

    def gradcam_layers(self) -> dict[str, nn.Module]:
        """Layers suited to Grad-CAM, by name; a layer's output is its feature maps ``A``.

        ``"decoder.<i>"`` is the last conv of decoder level ``i`` (0 = finest) **with its BatchNorm and
        ReLU**: the rectified feature maps Grad-CAM is defined on (a Keras ``Conv2D(activation="relu")``,
        as in the paper, outputs the same). ``"decoder"`` (the default) is level 0, the last decoder
        refinement conv at full resolution; ``"final"`` is the 1x1 classifier (the logits, as in the paper);
        ``"bottleneck"`` is the deepest encoder block (1/16 resolution for depth 5, its BatchNorm and ReLU).
        """
        layers: dict[str, nn.Module] = {f"decoder.{i}": block for i, block in enumerate(self.decoder)}
        layers["decoder"] = layers["decoder.0"]
        layers["final"] = self.classifier
        layers["bottleneck"] = self.encoder[-1]
        return layers

    def gradcam_footprint(self, layer: str) -> tuple[int, int] | None:
        """``(stride, radius)``: where a class score's gradient can reach a Grad-CAM layer.

        The gradient of logits at full-resolution pixels ``P`` with respect to the layer's output is zero
        at every layer position ``q`` whose block of ``stride x stride`` input pixels lies farther than
        ``radius`` pixels (Chebyshev distance, at full resolution) from ``P``: each 3x3 conv of decoder
        level ``i`` spreads it by ``2 ** i`` pixels, unpooling maps a position to its own 2x2 block, and
        the 1x1 classifier does not spread it. ``"bottleneck"`` (the deepest encoder block) feeds
        decoder level ``depth - 1`` through its skip and through pooling. ``None`` for an unknown layer.
        """
        if layer in ("decoder", "final"):
            return 1, 0
        if layer == "bottleneck":
            j = self.depth - 1
            # its 3x3 convs at level j (2 px there), the pooling block's other positions (up to 2 px
            # there, through pooling + unpooling), then the finer levels as for "decoder.<j>"
            return 2**j, 4 * 2**j + 2 * (2**j - 1)
        if layer.startswith("decoder.") and layer[8:].isdigit() and int(layer[8:]) < self.depth:
            i = int(layer[8:])
            return 2**i, 2 * (2**i - 1)
        return None

    def pointwise_head(self, layer: str) -> torch.Tensor | None:
        """The matrix ``M`` (n_classes, channels) with ``logits[p] = M @ A[p] + bias`` at every pixel ``p``.

        Defined for the Grad-CAM layers followed by nothing but the 1x1 classifier in eval mode
        (``"decoder"``, ``"decoder.0"``: the classifier's weights; ``"final"``: the identity), where the
        gradient of any class score with respect to ``A`` is known without a backward pass; ``None``
        for every other layer, and while dropout is active.
        """
        if self.training and not isinstance(self.dropout, nn.Identity):
            return None
        if layer in ("decoder", "decoder.0"):
            return self.classifier.weight[:, :, 0, 0].detach()
        if layer == "final":
            n = self.config.n_classes
            return torch.eye(n, dtype=self.classifier.weight.dtype, device=self.classifier.weight.device)
        return None

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


#: Architecture name (a checkpoint config's ``"architecture"``) -> (its config class, its network class).
ARCHITECTURES: dict[str, tuple[type[SegNetConfig], type[SegNet]]] = {"segnet": (SegNetConfig, SegNet)}


def build_model(config: SegNetConfig | dict[str, Any]) -> SegNet:
    """Rebuild a network from its configuration (a config object, or its dict form).

    The dict's ``"architecture"`` (default ``"segnet"``) picks the network class in :data:`ARCHITECTURES`.

    Raises
    ------
    ValueError
        An architecture this version does not know.
    """
    if not isinstance(config, dict):
        return SegNet(config)
    name = str(config.get("architecture", "segnet"))
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    config_class, network_class = ARCHITECTURES[name]
    return network_class(config_class.from_dict(config))

"""IMDN: Information Multi-Distillation Network (Hui et al.), NTIRE 2022 ESR baseline.

Key-compatible with `imdn_baseline.pth` (nc=64, 8 IMDBs, ×4; KAIR's layout
`model.0` head, `model.1.sub.{0..nb-1}` blocks, `model.1.sub.{nb}` conv,
`model.2` upsampler conv). Input and output in 0–1. The number of blocks is free
(the CLB paper prunes 8 → 7).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_same, lrelu
from .registry import SRModel, register_model, scale_from_upsampler


class IMDB(nn.Module):
    """Information multi-distillation block. (N, C, H, W) -> (N, C, H, W).

    conv1..3 (3×3 + LReLU) each split off `d` distilled channels and pass the remaining
    `r` on; conv4 (3×3) makes the last distilled part; conv1x1 fuses them; residual add.
    Split sizes are read from the convs, so pruned blocks keep working.
    """

    #: builds the 3×3 convs conv1..conv4: (in channels, out channels, kernel size) -> module
    block_conv = staticmethod(conv_same)

    def __init__(self, channels: int = 64, distill_rate: float = 0.25,
                 negative_slope: float = 0.05):
        super().__init__()
        d = int(channels * distill_rate)
        r = channels - d
        self.conv1 = nn.Sequential(self.block_conv(channels, channels, 3), lrelu(negative_slope))
        self.conv2 = nn.Sequential(self.block_conv(r, channels, 3), lrelu(negative_slope))
        self.conv3 = nn.Sequential(self.block_conv(r, channels, 3), lrelu(negative_slope))
        self.conv4 = self.block_conv(r, d, 3)
        self.conv1x1 = nn.Conv2d(d * 4, channels, 1)

    @staticmethod
    def _split(features: torch.Tensor, remaining: int):
        return torch.split(features, [features.shape[1] - remaining, remaining], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = self._split(self.conv1(x), self.conv2[0].in_channels)
        d2, r2 = self._split(self.conv2(r1), self.conv3[0].in_channels)
        d3, r3 = self._split(self.conv3(r2), self.conv4.in_channels)
        d4 = self.conv4(r3)
        return x + self.conv1x1(torch.cat((d1, d2, d3, d4), dim=1))


class ShortcutBlock(nn.Module):
    """x + sub(x) (KAIR's ShortcutBlock; the attribute name keeps the checkpoint keys)."""

    def __init__(self, sub: nn.Module):
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


@register_model
class IMDN(SRModel):
    """IMDN. (N, 3, H, W) in 0–1 -> (N, 3, sH, sW) in 0–1."""

    input_range = 1.0
    min_input_size = 1
    #: the tensor of block `model.1.sub.{i}` whose presence counts the blocks of a state_dict
    block_key = 'conv1.0.weight'

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 64, nb: int = 8,
                 upscale: int = 4, negative_slope: float = 0.05,
                 conv_overrides: dict | None = None):
        super().__init__()
        self.scale = upscale
        self.num_blocks = nb
        body = [self.make_block(nc, negative_slope) for _ in range(nb)]
        body.append(conv_same(nc, nc, 3))
        self.model = nn.Sequential(
            conv_same(in_nc, nc, 3),
            ShortcutBlock(nn.Sequential(*body)),
            conv_same(nc, out_nc * upscale ** 2, 3),
            nn.PixelShuffle(upscale),
        )
        self._finish_init(conv_overrides)

    def make_block(self, nc: int, negative_slope: float) -> nn.Module:
        return IMDB(nc, negative_slope=negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- compression hooks (see SRModel) ------------------------------------------------
    def block_names(self) -> list:
        return [f'model.1.sub.{i}' for i in range(self.num_blocks)]

    def drop_blocks_state(self, state: dict, keep: list):
        """The IMDBs renumbered (SRModel's rule), and the body conv after them,
        `model.1.sub.{nb}`, moved down to `model.1.sub.{len(keep)}`."""
        out = super().drop_blocks_state(state, keep)
        body, new_body = f'model.1.sub.{self.num_blocks}.', f'model.1.sub.{len(keep)}.'
        for key in [k for k in out if k.startswith(body)]:
            out[new_body + key[len(body):]] = out.pop(key)
        return out

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return 'model.0.weight' in sd and 'model.1.sub.0.conv1.0.weight' in sd

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        nb = 0
        while f'model.1.sub.{nb}.{cls.block_key}' in sd:
            nb += 1
        head = sd['model.0.weight']
        return dict(in_nc=int(head.shape[1]), nc=int(head.shape[0]), nb=nb,
                    upscale=scale_from_upsampler(sd['model.2.weight']))

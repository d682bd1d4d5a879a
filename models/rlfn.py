"""RLFN: Residual Local Feature Network (Kong et al., NTIRE 2022 ESR winner, ByteESR).

Two key layouts of the same network exist among the official checkpoints:
- `RLFN` — `conv_1`, `block_1..n`, `conv_2`, `upsampler` (NTIRE 2024 baseline
  `team00_rlfn.pth`, widths 46/48; AdvancedSR's kernel- and bias-pruned `team17_AdvancedSR.pth`);
- `RLFN_NTIRE2022` — `fea_conv`, `B1..Bn`, `LR_conv`, `upsampler` (`team04_rlfn.pth`).
Every conv's width, kernel size and bias flag may differ from the defaults (read back from
the checkpoint by the builder). Input and output in 0–255.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import LightESA, conv_same, lrelu, pixelshuffle_upsampler
from .registry import SRModel, count_indexed, register_model, scale_from_upsampler


class RLFB(nn.Module):
    """Residual local feature block: three conv+LReLU, a residual add, c5 (1×1) and ESA.

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_channels: int, mid_channels: int, esa_channels: int = 16):
        super().__init__()
        self.c1_r = conv_same(in_channels, mid_channels, 3)
        self.c2_r = conv_same(mid_channels, mid_channels, 3)
        self.c3_r = conv_same(mid_channels, in_channels, 3)
        self.c5 = nn.Conv2d(in_channels, in_channels, 1)
        self.esa = LightESA(in_channels, esa_channels)
        self.act = lrelu(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))


@register_model
class RLFN(SRModel):
    """RLFN with NTIRE 2024 key names. (N, 3, H, W) in 0–255 -> (N, 3, sH, sW) in 0–255."""

    input_range = 255.0
    min_input_size = LightESA.min_size
    attention_types = (LightESA,)
    head_name, block_prefix, tail_name = 'conv_1', 'block_', 'conv_2'

    def __init__(self, in_channels: int = 3, out_channels: int = 3, feature_channels: int = 46,
                 mid_channels: int = 48, esa_channels: int = 16, num_blocks: int = 4,
                 upscale: int = 4, conv_overrides: dict | None = None):
        super().__init__()
        self.scale = upscale
        self.num_blocks = num_blocks
        setattr(self, self.head_name, conv_same(in_channels, feature_channels, 3))
        for i in range(1, num_blocks + 1):
            setattr(self, f'{self.block_prefix}{i}',
                    RLFB(feature_channels, mid_channels, esa_channels))
        setattr(self, self.tail_name, conv_same(feature_channels, feature_channels, 3))
        self.upsampler = pixelshuffle_upsampler(feature_channels, out_channels, upscale)
        self._finish_init(conv_overrides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_feature = getattr(self, self.head_name)(x)
        h = out_feature
        for i in range(1, self.num_blocks + 1):
            h = getattr(self, f'{self.block_prefix}{i}')(h)
        out_low_resolution = getattr(self, self.tail_name)(h) + out_feature
        return self.upsampler(out_low_resolution)

    # -- compression hooks (see SRModel) ------------------------------------------------
    def block_names(self) -> list:
        return [f'{self.block_prefix}{i}' for i in range(1, self.num_blocks + 1)]

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return (f'{cls.head_name}.weight' in sd and f'{cls.block_prefix}1.c1_r.weight' in sd
                and f'{cls.block_prefix}1.c1_d.weight' not in sd
                and f'{cls.block_prefix}1.esa.conv_max.weight' not in sd)

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        head = sd[f'{cls.head_name}.weight']
        p = cls.block_prefix
        return dict(in_channels=int(head.shape[1]), feature_channels=int(head.shape[0]),
                    mid_channels=int(sd[f'{p}1.c1_r.weight'].shape[0]),
                    esa_channels=int(sd[f'{p}1.esa.conv1.weight'].shape[0]),
                    num_blocks=count_indexed(sd, p, '.c1_r.weight'),
                    upscale=scale_from_upsampler(sd['upsampler.0.weight']))


@register_model
class RLFN_NTIRE2022(RLFN):
    """RLFN with the key names of the NTIRE 2022 checkpoint `team04_rlfn.pth`."""

    head_name, block_prefix, tail_name = 'fea_conv', 'B', 'LR_conv'

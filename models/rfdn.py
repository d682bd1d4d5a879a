"""RFDN: Residual Feature Distillation Network (Liu et al., AIM 2020 winner).

Key-compatible with the NTIRE 2022/2023 baseline checkpoint `rfdn_baseline.pth`
(nf=50, 4 RFDBs, ×4). Input and output in 0–255.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import ESA, conv_same, lrelu, pixelshuffle_upsampler
from .registry import SRModel, count_indexed, register_model, scale_from_upsampler


class RFDB(nn.Module):
    """Residual feature distillation block: three distillation steps, c4, c5 and ESA.

    (N, C, H, W) -> (N, C, H, W). Widths are read from the convolutions at run time, so
    pruned blocks with irregular widths work unchanged.
    """

    def __init__(self, in_channels: int, distilled_channels: int | None = None,
                 esa_channels: int | None = None, steps: int = 3):
        super().__init__()
        dc = distilled_channels if distilled_channels is not None else in_channels // 2
        rc = in_channels
        self.steps = steps
        for i in range(1, steps + 1):
            setattr(self, f'c{i}_d', nn.Conv2d(rc, dc, 1))
            setattr(self, f'c{i}_r', conv_same(rc, rc, 3))
        self.c4 = conv_same(rc, dc, 3)
        self.act = lrelu(0.05)
        self.c5 = nn.Conv2d(dc * (steps + 1), in_channels, 1)
        self.esa = ESA(in_channels, esa_channels)

    def distilled_parts(self, x: torch.Tensor) -> list:
        """[d1, ..., d_steps, r4]: the parts that are concatenated and fused by c5."""
        distilled = []
        r = x
        for i in range(1, self.steps + 1):
            distilled.append(self.act(getattr(self, f'c{i}_d')(r)))
            r = self.act(getattr(self, f'c{i}_r')(r) + r)
        distilled.append(self.act(self.c4(r)))
        return distilled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.c5(torch.cat(self.distilled_parts(x), dim=1)))


@register_model
class RFDN(SRModel):
    """RFDN. (N, 3, H, W) in 0–255 -> (N, 3, sH, sW) in 0–255."""

    input_range = 255.0
    min_input_size = ESA.min_size
    attention_types = (ESA,)

    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3,
                 upscale: int = 4, conv_overrides: dict | None = None):
        super().__init__()
        self.scale = upscale
        self.num_modules = num_modules
        self.fea_conv = conv_same(in_nc, nf, 3)
        for i in range(1, num_modules + 1):
            setattr(self, f'B{i}', RFDB(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), lrelu(0.05))
        self.LR_conv = conv_same(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_nc, upscale)
        self._finish_init(conv_overrides)

    def block_outputs(self, x: torch.Tensor) -> list:
        """[fea_conv(x), B1 output, B2 output, ...] (feature-distillation targets)."""
        outs = [self.fea_conv(x)]
        for i in range(1, self.num_modules + 1):
            outs.append(getattr(self, f'B{i}')(outs[-1]))
        return outs

    def distillation_features(self, x: torch.Tensor) -> list:
        """Teacher features matched by BranchRFDN's SRFDBs: outputs of B1..B_{n-1}."""
        return self.block_outputs(x)[1:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail(self.block_outputs(x))

    def _tail(self, outs: list) -> torch.Tensor:
        """SR image from block_outputs' [fea, B1, ..., Bn]."""
        out_b = self.c(torch.cat(outs[1:], dim=1))
        out_lr = self.LR_conv(out_b) + outs[0]
        return self.upsampler(out_lr)

    def output_and_features(self, x: torch.Tensor) -> tuple:
        """(forward(x), distillation_features(x)) from one pass."""
        outs = self.block_outputs(x)
        return self._tail(outs), outs[1:-1]

    # -- compression hooks (see SRModel) ------------------------------------------------
    def block_names(self) -> list:
        return [f'B{i}' for i in range(1, self.num_modules + 1)]

    def drop_blocks_state(self, state: dict, keep: list):
        """The blocks renumbered (SRModel's rule), and the fusion conv `c.0` (1×1 over the
        concatenated block outputs, weight (nf, Σ block widths, 1, 1)) keeping the input
        columns of the kept blocks, in order."""
        out = super().drop_blocks_state(state, keep)
        w = state['c.0.weight']
        widths = [int(state[f'{name}.c5.weight'].shape[0]) for name in self.block_names()]
        if sum(widths) != w.shape[1]:
            raise RuntimeError(f'c.0 has {w.shape[1]} inputs, the blocks output {sum(widths)}')
        starts = [sum(widths[:i]) for i in range(len(widths))]
        cols = [w[:, starts[i - 1]:starts[i - 1] + widths[i - 1]] for i in keep]
        out['c.0.weight'] = torch.cat(cols, dim=1).clone()
        return out

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return ('fea_conv.weight' in sd and 'B1.c1_d.weight' in sd and 'c.0.weight' in sd
                and 'fea_conv1.weight' not in sd)

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        w = sd['fea_conv.weight']
        return dict(in_nc=int(w.shape[1]), nf=int(w.shape[0]),
                    num_modules=count_indexed(sd, 'B', '.c1_d.weight'),
                    upscale=scale_from_upsampler(sd['upsampler.0.weight']))

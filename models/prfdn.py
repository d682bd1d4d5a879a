"""PRFDN family: the branch model built from a pre-trained RFDN (seed 000, Branching).

`BranchRFDN` turns RFDN's four sequential RFDBs into four independent branches:

    branch 1:  B1(fea_conv(x))
    branch k:  B_k(S_{k-1}(fea_conv{k-1}(x)))      k = 2, 3, 4

where `S_j` is a small SRFDB (one distillation step + c4 + c5 + ESA) trained to stand in
for the teacher's chain B1..B_j, i.e. to reproduce the teacher's block-j output. The tail is
RFDN's: `c` over the concatenated branch outputs, `LR_conv`, `+ fea_conv(x)`, pixel shuffle.
Input and output in 0–255, like RFDN.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import ESA, conv_same, lrelu, pixelshuffle_upsampler
from .registry import SRModel, count_indexed, register_model, scale_from_upsampler
from .rfdn import RFDB, RFDN


def SRFDB(in_channels: int) -> RFDB:
    """Short RFDB: one distillation step (c1_d, c1_r), c4, c5 and ESA. (N,C,H,W)->(N,C,H,W)."""
    return RFDB(in_channels, steps=1)


@register_model
class BranchRFDN(SRModel):
    """RFDN with independent branches. (N, 3, H, W) in 0–255 -> (N, 3, sH, sW) in 0–255."""

    input_range = 255.0
    min_input_size = ESA.min_size

    def __init__(self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3,
                 upscale: int = 4, conv_overrides: dict | None = None):
        super().__init__()
        self.scale = upscale
        self.num_modules = num_modules
        self.fea_conv = conv_same(in_nc, nf, 3)
        for j in range(1, num_modules):
            setattr(self, f'fea_conv{j}', conv_same(in_nc, nf, 3))
            setattr(self, f'S{j}', SRFDB(nf))
        for k in range(1, num_modules + 1):
            setattr(self, f'B{k}', RFDB(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), lrelu(0.05))
        self.LR_conv = conv_same(nf, nf, 3)
        self.upsampler = pixelshuffle_upsampler(nf, out_nc, upscale)
        self._finish_init(conv_overrides)

    def branch_inputs(self, x: torch.Tensor) -> list:
        """[input of B1, input of B2, ...]: fea_conv(x), then S_{k-1}(fea_conv{k-1}(x))."""
        inputs = [self.fea_conv(x)]
        for j in range(1, self.num_modules):
            inputs.append(getattr(self, f'S{j}')(getattr(self, f'fea_conv{j}')(x)))
        return inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.branch_inputs(x)
        outs = [getattr(self, f'B{k + 1}')(h) for k, h in enumerate(inputs)]
        out_b = self.c(torch.cat(outs, dim=1))
        out_lr = self.LR_conv(out_b) + inputs[0]
        return self.upsampler(out_lr)

    def distillation_features(self, x: torch.Tensor) -> list:
        """Student features for feature distillation: the SRFDB outputs S_1..S_{n-1}
        (to match the teacher's block outputs B_1..B_{n-1}, see RFDN.block_outputs)."""
        return self.branch_inputs(x)[1:]

    @classmethod
    def from_rfdn(cls, rfdn: RFDN) -> 'BranchRFDN':
        """A branch model holding every tensor of a pre-trained RFDN.

        RFDBs, `c`, `LR_conv`, upsampler and `fea_conv` are copied; each extra head conv
        `fea_conv{j}` starts as a copy of `fea_conv`; only the SRFDBs start fresh.
        """
        nf = rfdn.fea_conv.out_channels
        model = cls(in_nc=rfdn.fea_conv.in_channels, nf=nf, num_modules=rfdn.num_modules,
                    out_nc=rfdn.upsampler[0].out_channels // rfdn.scale ** 2, upscale=rfdn.scale)
        own = model.state_dict()
        for k, v in rfdn.state_dict().items():
            if k not in own or own[k].shape != v.shape:
                raise ValueError(f'RFDN tensor {k} has no place in BranchRFDN (widths differ?)')
            own[k] = v.clone()
        for j in range(1, rfdn.num_modules):
            own[f'fea_conv{j}.weight'] = rfdn.fea_conv.weight.detach().clone()
            own[f'fea_conv{j}.bias'] = rfdn.fea_conv.bias.detach().clone()
        model.load_state_dict(own, strict=True)
        return model

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return 'fea_conv1.weight' in sd and 'S1.c1_d.weight' in sd and 'B1.c1_d.weight' in sd

    @classmethod
    def config_from_state_dict(cls, sd: dict) -> dict:
        w = sd['fea_conv.weight']
        return dict(in_nc=int(w.shape[1]), nf=int(w.shape[0]),
                    num_modules=count_indexed(sd, 'B', '.c1_d.weight'),
                    upscale=scale_from_upsampler(sd['upsampler.0.weight']))

"""Over-parametrized convolution kernels for training, collapsed exactly for inference.

`expand_conv_kernels(model, gain)` re-parametrizes the weight of every ungrouped `nn.Conv2d`
in `model` as

    W_eff = W + B · M · A        W: (out, in, kh, kw), the conv's own kernel
                                 A: (gain·in, in)               (a bias-free 1×1 conv)
                                 M: (gain·out, gain·in, kh, kw) (a bias-free kh×kw conv)
                                 B: (out, gain·out)             (a bias-free 1×1 conv)

the kernel of the linear chain 1×1 → kh×kw → 1×1 at `gain` times the width, added to the
conv's own kernel: the expanded training form of SPAN's Conv3XC (Wan et al., AAAI 2024) and
of ExpandNets (Guo et al., NeurIPS 2020). The chain has no bias and no non-linearity, so it is
one kernel for any stride or padding, and the conv computes exactly `conv2d(x, W_eff)`. B
starts at zero, so an expanded model starts as the very function it was built from, while A
and M (random) give B a non-zero gradient from the first step.

The factors are registered with `torch.nn.utils.parametrize`, so the conv's forward,
`conv.weight` and every caller are unchanged; only the parameters differ
(`<conv>.parametrizations.weight.original` = W, `.0.expand` = A, `.0.spatial` = M,
`.0.reduce` = B). `plain_state_dict(model)` gives the state_dict of the collapsed model,
whose keys are the unexpanded model's: what checkpoints for inference hold.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class ExpandedKernel(nn.Module):
    """The parametrization W -> W + B·M·A of a (out, in, kh, kw) kernel W (see the module
    docstring); `gain` ≥ 1 sets the width of the inner chain."""

    def __init__(self, out_channels: int, in_channels: int, kernel_size: tuple, gain: int,
                 device=None, dtype=None):
        super().__init__()
        if gain < 1:
            raise ValueError(f'the expansion gain must be at least 1, got {gain}')
        kh, kw = kernel_size
        inner_in, inner_out = gain * in_channels, gain * out_channels
        kwargs = {'device': device, 'dtype': dtype}
        # A and M with variance 1/fan-in, so that the chain's kernel is on the scale of a conv's
        self.expand = nn.Parameter(torch.randn(inner_in, in_channels, **kwargs) / math.sqrt(in_channels))
        self.spatial = nn.Parameter(torch.randn(inner_out, inner_in, kh, kw, **kwargs)
                                    / math.sqrt(inner_in * kh * kw))
        self.reduce = nn.Parameter(torch.zeros(out_channels, inner_out, **kwargs))

    def chain_kernel(self) -> torch.Tensor:
        """B·M·A as one (out, in, kh, kw) kernel."""
        return torch.einsum('oq,qpyx,pi->oiyx', self.reduce, self.spatial, self.expand)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.chain_kernel()


def expandable_convs(model: nn.Module) -> list:
    """(name, conv) of every ungrouped nn.Conv2d in `model` not expanded yet."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and not parametrize.is_parametrized(m, 'weight')]


def expand_conv_kernels(model: nn.Module, gain: int) -> int:
    """Over-parametrize, in place, the kernel of every ungrouped conv of `model` (module
    docstring); returns how many. The model computes the same function as before (B = 0).
    The factors start from the torch RNG: seed it first for a reproducible start."""
    convs = expandable_convs(model)
    for _, conv in convs:
        w = conv.weight
        parametrize.register_parametrization(
            conv, 'weight', ExpandedKernel(w.shape[0], w.shape[1], tuple(w.shape[2:]), gain,
                                           device=w.device, dtype=w.dtype))
    return len(convs)


@torch.no_grad()
def plain_state_dict(model: nn.Module) -> OrderedDict:
    """`model.state_dict()`, with expanded kernels collapsed (W + B·M·A computed once): the
    keys of the model before `expand_conv_kernels`, loadable strictly into it. Unexpanded
    models: their state_dict. `model` is left as it is."""
    expanded = {name: module for name, module in model.named_modules()
                if isinstance(module, nn.Conv2d) and parametrize.is_parametrized(module, 'weight')}
    plain = OrderedDict()
    for key, value in model.state_dict().items():
        owner, sep, _ = key.partition('.parametrizations.weight.')
        if not sep:
            owner = key.rpartition('.')[0]
        if owner in expanded:
            # the collapsed kernel takes W's place, ahead of the bias as in a plain conv
            if f'{owner}.weight' not in plain:
                plain[f'{owner}.weight'] = expanded[owner].weight.detach().clone()
            if sep:  # W and the factors go
                continue
        plain[key] = value
    return plain

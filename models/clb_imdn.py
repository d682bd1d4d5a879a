"""CLB-IMDN: IMDN with Collapsible Linear Blocks (Wang et al., CVPRW 2022).

During training every 3×3 convolution inside an IMDB is a `CollapsibleConv`: a k×k conv
and a parallel 1×1 conv (optionally also an identity branch) whose outputs are summed
*before* the non-linearity. The sum of linear maps is one linear map, so after training
each CollapsibleConv folds into a single k×k conv (`CollapsibleConv.collapse`) and the
whole network becomes a plain `IMDN` with the same inference cost
(`utils.compress.collapse.collapse_model`).

Checkpoint layout (uncollapsed): IMDN's keys, except that each block conv
`model.1.sub.{i}.conv{1,2,3}.0` / `model.1.sub.{i}.conv4` gains a level: `.conv.weight`,
`.conv.bias`, `.conv1x1.weight`, `.conv1x1.bias`. After collapsing, the keys are exactly
IMDN's. Input and output in 0–1, like IMDN.

`CLBIMDN` has no identity branches: an identity branch holds no tensor, so whether a
checkpoint was trained with one could not be read back from its tensors, and the same
tensors would silently compute a different function. `CollapsibleConv` itself still
supports `identity=True` for other uses; its identity folds into the collapsed weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import conv_overrides_from_state_dict, conv_same
from .imdn import IMDB, IMDN
from .registry import register_model


class CollapsibleConv(nn.Module):
    """k×k conv + parallel 1×1 conv (+ identity when asked), summed.

    (N, Cin, H, W) -> (N, Cout, H, W). Both convs are 'same' convolutions of stride 1, so
    the 1×1 branch is the k×k conv whose only non-zero tap is the kernel centre, and the
    identity is the 1×1 conv with the unit matrix: `collapse()` adds them there.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = True, identity: bool = False):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f'CollapsibleConv needs an odd kernel, got {kernel_size}')
        if identity and in_channels != out_channels:
            raise ValueError(f'an identity branch needs in == out channels, '
                             f'got {in_channels} -> {out_channels}')
        self.conv = conv_same(in_channels, out_channels, kernel_size, bias=bias)
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.identity = identity

    # the attributes IMDB's forward reads from its convolutions
    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @property
    def kernel_size(self) -> tuple:
        return self.conv.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + self.conv1x1(x)
        if self.identity:
            y = y + x
        return y

    @torch.no_grad()
    def collapse(self) -> nn.Conv2d:
        """One k×k conv computing exactly `self.forward` (a new module, weights copied)."""
        conv, point = self.conv, self.conv1x1
        k = conv.kernel_size[0]
        if (conv.kernel_size[0] != conv.kernel_size[1] or k % 2 != 1
                or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or conv.padding != (k // 2, k // 2) or point.kernel_size != (1, 1)
                or point.stride != (1, 1) or point.padding != (0, 0) or point.groups != 1):
            raise ValueError('only odd square same-padded stride-1 convs collapse exactly')
        if (point.in_channels, point.out_channels) != (conv.in_channels, conv.out_channels):
            raise ValueError('the k×k and 1×1 branches have different widths')
        weight = conv.weight.detach().clone()
        c = k // 2
        weight[:, :, c, c] += point.weight.detach()[:, :, 0, 0]
        if self.identity:
            if conv.in_channels != conv.out_channels:
                raise ValueError('an identity branch needs in == out channels')
            idx = torch.arange(conv.out_channels, device=weight.device)
            weight[idx, idx, c, c] += 1
        has_bias = conv.bias is not None or point.bias is not None
        out = nn.Conv2d(conv.in_channels, conv.out_channels, k, padding=c, bias=has_bias,
                        device=weight.device, dtype=weight.dtype)
        out.weight.copy_(weight)
        if has_bias:
            bias = torch.zeros(conv.out_channels, device=weight.device, dtype=weight.dtype)
            for b in (conv.bias, point.bias):
                if b is not None:
                    bias += b.detach()
            out.bias.copy_(bias)
        return out


def collapse_modules(module: nn.Module) -> nn.Module:
    """Replace, in place, every CollapsibleConv inside `module` by its collapsed conv.

    Returns `module` (or the collapsed conv when `module` itself is a CollapsibleConv).
    """
    if isinstance(module, CollapsibleConv):
        return module.collapse()
    for name, child in list(module.named_children()):
        if isinstance(child, CollapsibleConv):
            setattr(module, name, child.collapse())  # nn.Sequential children too ('0')
        else:
            collapse_modules(child)
    return module


class CLBIMDB(IMDB):
    """IMDB whose 3×3 convs (conv1..conv4) are CollapsibleConvs. (N,C,H,W) -> (N,C,H,W).

    Same splits and LeakyReLU placement as IMDB (its constructor and forward are reused);
    the fusion `conv1x1` stays a plain 1×1 conv. After `collapse_modules` the keys are IMDB's.
    """

    block_conv = CollapsibleConv


@register_model
class CLBIMDN(IMDN):
    """IMDN with collapsible linear blocks. (N, 3, H, W) in 0–1 -> (N, 3, sH, sW) in 0–1.

    Same constructor as IMDN (nc, nb, upscale, ...). Train this form, then
    `utils.compress.collapse.collapse_model(model)` gives the plain IMDN for inference.
    """

    block_key = 'conv1.0.conv.weight'  # conv1's k×k branch

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 64, nb: int = 8,
                 upscale: int = 4, negative_slope: float = 0.05,
                 conv_overrides: dict | None = None):
        super().__init__(in_nc=in_nc, out_nc=out_nc, nc=nc, nb=nb, upscale=upscale,
                         negative_slope=negative_slope, conv_overrides=conv_overrides)
        self.in_nc, self.out_nc, self.nc = in_nc, out_nc, nc
        self.negative_slope = negative_slope

    def make_block(self, nc: int, negative_slope: float) -> nn.Module:
        return CLBIMDB(nc, negative_slope=negative_slope)

    def imdn_config(self) -> dict:
        """Constructor arguments of the plain IMDN this model collapses into."""
        return dict(in_nc=self.in_nc, out_nc=self.out_nc, nc=self.nc, nb=self.num_blocks,
                    upscale=self.scale, negative_slope=self.negative_slope)

    @classmethod
    def from_imdn(cls, imdn: IMDN) -> 'CLBIMDN':
        """A CLBIMDN computing exactly `imdn`'s function.

        Every IMDN tensor is copied (block convs into the `conv` branches); the 1×1
        branches start at zero weight and zero bias. Pruned IMDNs (irregular widths,
        kernels, bias flags) are followed through conv overrides.
        """
        head, up = imdn.model[0], imdn.model[2]
        kwargs = dict(in_nc=head.in_channels, out_nc=up.out_channels // imdn.scale ** 2,
                      nc=head.out_channels, nb=imdn.num_blocks, upscale=imdn.scale)
        slopes = [m.negative_slope for m in imdn.modules() if isinstance(m, nn.LeakyReLU)]
        if slopes:
            kwargs['negative_slope'] = slopes[0]
        blocks = {f'model.1.sub.{i}.{name}' for i in range(imdn.num_blocks)
                  for name in ('conv1.0', 'conv2.0', 'conv3.0', 'conv4')}
        mapped = {}
        for k, v in imdn.state_dict().items():
            prefix, leaf = k.rsplit('.', 1)
            mapped[f'{prefix}.conv.{leaf}' if prefix in blocks else k] = v.detach().clone()
        # the 1×1 branches: zero, as wide as their k×k partners (pruned IMDNs included)
        for prefix in blocks:
            w = mapped[f'{prefix}.conv.weight']
            mapped[f'{prefix}.conv1x1.weight'] = torch.zeros_like(w[:, :, :1, :1])
            if f'{prefix}.conv.bias' in mapped:
                mapped[f'{prefix}.conv1x1.bias'] = torch.zeros_like(mapped[f'{prefix}.conv.bias'])
        model = cls(**kwargs)
        overrides = conv_overrides_from_state_dict(model, mapped)
        if overrides:
            model = cls(**kwargs, conv_overrides=overrides)
        model.load_state_dict(mapped, strict=True)
        return model

    @classmethod
    def recognises(cls, sd: dict) -> bool:
        return ('model.0.weight' in sd and 'model.1.sub.0.conv1.0.conv.weight' in sd
                and 'model.1.sub.0.conv1.0.conv1x1.weight' in sd)


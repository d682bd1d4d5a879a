"""Building blocks shared by the architecture families (RFDN, RLFN, IMDN, ...).

All blocks work on feature maps of shape (N, C, H, W); none of them cares about the
value range of its input (the models document theirs).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_same(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
              stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A convolution whose padding keeps the spatial size (odd kernels, stride 1)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=bias, groups=groups)


def lrelu(negative_slope: float = 0.05) -> nn.LeakyReLU:
    # Not in-place: in-place activations confuse Torch-Pruning's tracer and fvcore.
    return nn.LeakyReLU(negative_slope)


def pixelshuffle_upsampler(in_channels: int, out_channels: int, scale: int,
                           kernel_size: int = 3, bias: bool = True) -> nn.Sequential:
    """conv (in -> out·scale²) followed by PixelShuffle; keys `0.weight`, `0.bias`."""
    return nn.Sequential(conv_same(in_channels, out_channels * scale ** 2, kernel_size, bias=bias),
                         nn.PixelShuffle(scale))


class ESA(nn.Module):
    """Enhanced Spatial Attention as in RFDN (with `conv_max` and `conv3_`).

    Input (N, C, H, W) with H, W >= 15 (strided 3×3 conv without padding, then a 7×7 max
    pool of stride 3); output has the input's shape: the input gated by a sigmoid mask.
    """

    min_size = 15

    def __init__(self, n_feats: int, esa_channels: int | None = None):
        super().__init__()
        f = esa_channels if esa_channels is not None else n_feats // 4
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = conv_same(f, f, 3)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = conv_same(f, f, 3)
        self.conv3_ = conv_same(f, f, 3)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        v_range = self.relu(self.conv_max(v_max))
        c3 = self.relu(self.conv3(v_range))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode='bilinear', align_corners=False)
        cf = self.conv_f(c1_)
        mask = self.sigmoid(self.conv4(c3 + cf))
        return x * mask


class LightESA(nn.Module):
    """ESA as in RLFN: no `conv_max` / `conv3_` branch. Same shapes and size limit as ESA."""

    min_size = 15

    def __init__(self, n_feats: int, esa_channels: int = 16):
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = conv_same(f, f, 3)
        self.conv4 = nn.Conv2d(f, n_feats, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        c3 = self.conv3(v_max)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode='bilinear', align_corners=False)
        cf = self.conv_f(c1_)
        mask = self.sigmoid(self.conv4(c3 + cf))
        return x * mask


def convs_inside(root: nn.Module, module_types) -> list:
    """Every Conv2d inside a submodule of `root` that is an instance of `module_types`
    (a class or tuple of classes), in module order, each once."""
    found, seen = [], set()
    for module in root.modules():
        if isinstance(module, module_types):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d) and id(conv) not in seen:
                    seen.add(id(conv))
                    found.append(conv)
    return found


# --------------------------------------------------------------------------------------
# Irregular widths, kernel sizes and bias flags (pruned models) described by the tensors
# --------------------------------------------------------------------------------------
ConvSpec = tuple  # (in_channels, out_channels, kernel_size, bias)


def _parent_and_attr(root: nn.Module, dotted: str):
    parts = dotted.split('.')
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p) if not p.isdigit() else parent[int(p)]
    return parent, parts[-1]


def conv_spec(conv: nn.Conv2d) -> ConvSpec:
    """(input channels per group, output channels, kernel size, bias): what the tensors show."""
    return (conv.in_channels // conv.groups, conv.out_channels, conv.kernel_size[0],
            conv.bias is not None)


def apply_conv_overrides(model: nn.Module, overrides: dict | None) -> None:
    """Replace the named convolutions by ones of the given (in per group, out, k, bias).

    Padding follows the kernel for 'same' convolutions (so a 3×3 pruned to 1×1 keeps the
    spatial size) and is kept as it was otherwise (ESA's strided conv has none).
    """
    if not overrides:
        return
    for name, spec in overrides.items():
        in_ch, out_ch, k, bias = spec
        parent, attr = _parent_and_attr(model, name)
        old = parent[int(attr)] if attr.isdigit() else getattr(parent, attr, None)
        if not isinstance(old, nn.Conv2d):
            raise KeyError(f'{name} is not a convolution of {type(model).__name__}')
        same = old.padding[0] == old.kernel_size[0] // 2 and old.stride[0] == 1
        padding = k // 2 if same else old.padding
        new = nn.Conv2d(in_ch * old.groups, out_ch, k, stride=old.stride, padding=padding,
                        bias=bias, groups=old.groups)
        if attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)


def conv_overrides_from_state_dict(model: nn.Module, state_dict: dict) -> dict:
    """The overrides that make `model`'s convolutions match the tensors of `state_dict`."""
    overrides = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        weight = state_dict.get(f'{name}.weight')
        if weight is None or weight.dim() != 4:
            continue
        spec = (int(weight.shape[1]), int(weight.shape[0]), int(weight.shape[2]),
                f'{name}.bias' in state_dict)
        if spec != conv_spec(module):
            overrides[name] = spec
    return overrides

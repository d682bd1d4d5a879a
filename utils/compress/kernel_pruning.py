"""Kernel pruning (k×k -> 1×1) and bias pruning, after AdvancedSR (NTIRE 2024, team 17).

AdvancedSR started from the NTIRE 2024 baseline RLFN (`team00_rlfn.pth`), measured how
much of each 3×3 convolution's response its centre tap carries, replaced the least
sensitive 3×3 convs by 1×1 convs initialised with the centre weights
(`block_4.c2_r`, `conv_2`, `upsampler.0` in `team17_AdvancedSR.pth`), then removed the
biases of every conv except the first conv's and ESA's, and fine-tuned.

- `eligible_convs(model)`: the convs considered (k > 1, stride 1, none of the model's
  `kernel_prune_keep()` convs: the first conv and the attention convs, whose large
  receptive field is their purpose).
- `centre_tap_share(model, images)`: share of each eligible conv's response carried by the
  centre tap, measured on real inputs.
- `replace_with_1x1(model, names)`: the kernel-pruning step itself (in place).
- `psnr_drop_table(model, names, eval_set)`: the sensitivity analysis (PSNR-Y drop when a
  single conv is replaced), ranked.
- `bias_prune(model, keep)`: the bias-pruning step (in place); by default it keeps the
  biases of the model's `kernel_prune_keep()` convs.

Neither pruning step is exact in general: `replace_with_1x1` is exact iff the kernel is zero
outside its centre, `bias_prune` iff the removed biases are zero. Both are meant to be
followed by fine-tuning (AdvancedSR: L2 loss, Adam, lr 2e-5). The pruned models hold
their kernel sizes and bias flags in their tensors, so they save as plain state_dicts and
load back with `models.load_model`.
"""
from __future__ import annotations

import copy
import fnmatch

import numpy as np
import torch
import torch.nn as nn

from models.blocks import apply_conv_overrides, conv_spec
from models.registry import compression_hooks
from utils.engine.evaluate import mean_psnr_y
from utils.engine.inference import forward_padded
from utils.io.image_io import uint8_to_tensor


def _named_convs(model: nn.Module) -> dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _get_conv(model: nn.Module, name: str) -> nn.Conv2d:
    module = dict(model.named_modules()).get(name)
    if not isinstance(module, nn.Conv2d):
        raise KeyError(f'{name!r} is not a convolution of {type(model).__name__}')
    return module


def _is_same_kxk(conv: nn.Conv2d) -> bool:
    """A square k×k conv (k > 1, odd), stride 1, dilation 1, 'same' zero padding."""
    k = conv.kernel_size
    return (k[0] == k[1] and k[0] > 1 and k[0] % 2 == 1 and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and tuple(conv.padding) == (k[0] // 2, k[0] // 2)
            and conv.padding_mode == 'zeros')


def _same_kxk_convs(model: nn.Module, names) -> dict:
    """{name: conv} for `names`; ValueError naming the first that is not a square k×k
    (k > 1, odd) stride-1 'same' conv (only those have a centre tap to keep)."""
    convs = {}
    for name in names:
        conv = _get_conv(model, name)
        if not _is_same_kxk(conv):
            raise ValueError(f'{name}: needs a square k×k (k > 1) stride-1 conv with same '
                             f'padding, got kernel {tuple(conv.kernel_size)}, stride '
                             f'{tuple(conv.stride)}, padding {tuple(conv.padding)}')
        convs[name] = conv
    return convs


def eligible_convs(model: nn.Module) -> list:
    """Names of the convs that kernel pruning considers, in module order.

    Every square 'same' conv with k > 1 and stride 1, except the model's
    `kernel_prune_keep()` convs (by default the first conv, whose input is the image, and
    the `attention_convs()`, e.g. those inside ESA). The tail conv and the upsampler conv
    are included.
    """
    keep = {id(m) for m in compression_hooks(model).kernel_prune_keep()}
    return [name for name, conv in _named_convs(model).items()
            if id(conv) not in keep and _is_same_kxk(conv)]


def _as_batch(img: torch.Tensor) -> torch.Tensor:
    if img.dim() == 3:
        img = img.unsqueeze(0)
    if img.dim() != 4:
        raise ValueError(f'expected (3, H, W) or (N, 3, H, W) tensors, got {tuple(img.shape)}')
    return img


@torch.no_grad()
def centre_tap_share(model: nn.Module, images, names: list | None = None) -> dict:
    """Share of each conv's response carried by its kernel's centre tap, on real inputs.

    images: a list of LR tensors (3, H, W) or (N, 3, H, W) in the model's input range
    (`model.input_range`); inputs smaller than `model.min_input_size` are padded.
    names: the convs to measure (default `eligible_convs(model)`); each must be a square
    'same' conv with k > 1 and stride 1.

    For a conv with weight W, let W_c be W with every tap but the centre zeroed and
    W_o = W - W_c. With x the conv's actual input during the forward pass (hooks) and
    y_c = conv(x; W_c), y_o = conv(x; W_o) (biases excluded, the conv's own padding),

        share = ||y_c||_2 / (||y_c||_2 + ||y_o||_2)  in [0, 1],

    the L2 norms taken over all images (squared norms summed over images, then the square
    root). 1.0 means the centre tap carries the whole response (replacing the conv by its
    centre 1×1 is exact), 0.0 that it carries none. A conv whose response is zero on every
    input (both norms 0) gets 1.0: the replacement changes nothing there.
    Returns {conv name: share} in module order.
    """
    names = eligible_convs(model) if names is None else list(names)
    convs = _same_kxk_convs(model, names)
    sq_centre = {n: 0.0 for n in names}
    sq_other = {n: 0.0 for n in names}

    def make_hook(name, conv):
        k = conv.kernel_size[0]
        mask = torch.zeros_like(conv.weight)
        mask[:, :, k // 2, k // 2] = 1.0
        w_centre = conv.weight * mask
        w_other = conv.weight - w_centre

        def hook(module, inputs, output):
            x = inputs[0]
            y_c = module._conv_forward(x, w_centre.to(x.dtype), None).double()
            y_o = module._conv_forward(x, w_other.to(x.dtype), None).double()
            sq_centre[name] += float((y_c * y_c).sum())
            sq_other[name] += float((y_o * y_o).sum())
        return hook

    handles = [conv.register_forward_hook(make_hook(n, conv)) for n, conv in convs.items()]
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        scale = getattr(model, 'scale', 1)
        for img in images:
            x = _as_batch(torch.as_tensor(img)).to(p.device, p.dtype)
            forward_padded(model, x, scale)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    shares = {}
    for n in names:
        c, o = np.sqrt(sq_centre[n]), np.sqrt(sq_other[n])
        shares[n] = 1.0 if c + o == 0 else float(c / (c + o))
    return shares


@torch.no_grad()
def replace_with_1x1(model: nn.Module, names) -> nn.Module:
    """Replace each named k×k 'same' conv by a 1×1 conv (padding 0) initialised from the
    centre weights `w[:, :, k//2, k//2]` and the same bias; in place, returns `model`.

    Same input/output widths, groups and bias flag; device and dtype kept. Exact iff the
    kernel is zero outside its centre; otherwise fine-tune afterwards.
    """
    if isinstance(names, str):
        names = [names]
    olds = _same_kxk_convs(model, names)
    overrides = {}
    for name, conv in olds.items():
        in_ch, out_ch, _, bias = conv_spec(conv)
        overrides[name] = (in_ch, out_ch, 1, bias)
    apply_conv_overrides(model, overrides)
    for name, old in olds.items():
        new = _get_conv(model, name).to(old.weight.device, old.weight.dtype)
        _set_module(model, name, new)
        k = old.kernel_size[0]
        new.weight.copy_(old.weight[:, :, k // 2:k // 2 + 1, k // 2:k // 2 + 1])
        if old.bias is not None:
            new.bias.copy_(old.bias)
        new.train(old.training)
    return model


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parts = name.split('.')
    parent = model
    for p in parts[:-1]:
        parent = parent[int(p)] if p.isdigit() else getattr(parent, p)
    if parts[-1].isdigit():
        parent[int(parts[-1])] = module
    else:
        setattr(parent, parts[-1], module)


def psnr_drop_table(model: nn.Module, names, eval_set, device='cpu') -> list:
    """Sensitivity analysis: the PSNR-Y drop on `eval_set` when a single conv is replaced.

    For each name, a copy of `model` gets that one conv replaced by its centre 1×1
    (`replace_with_1x1`, no fine-tuning) and is evaluated with `utils.engine.evaluate.evaluate`.
    Returns [{'name', 'centre_share', 'psnr_y_drop'}], ascending by drop (the convs that
    are safest to prune first); drop = mean PSNR-Y of `model` - mean PSNR-Y of the copy
    (dB, border = scale). `centre_share` is `centre_tap_share` on the set's LR images.
    """

    names = list(names)
    model = model.to(device).eval()

    value_range = getattr(model, 'input_range', 255.0)
    images = [uint8_to_tensor(item.load_lr(), value_range) for item in eval_set.items]
    shares = centre_tap_share(model, images, names)
    base = mean_psnr_y(model, eval_set, device)
    rows = []
    for name in names:
        pruned = replace_with_1x1(copy.deepcopy(model), [name])
        rows.append({'name': name, 'centre_share': shares[name],
                     'psnr_y_drop': base - mean_psnr_y(pruned, eval_set, device)})
    rows.sort(key=lambda r: (r['psnr_y_drop'], r['name']))
    return rows


@torch.no_grad()
def bias_prune(model: nn.Module, keep=None) -> list:
    """Remove the bias of every conv not kept; in place. Returns the names whose bias was
    removed, in module order.

    keep: fnmatch patterns (case-sensitive) of the conv names whose bias stays, or None for
    the model's `kernel_prune_keep()` convs: the first conv and the attention convs, which
    for RLFN is what AdvancedSR kept (`conv_1` and ESA). The function is unchanged iff the
    removed biases were zero: otherwise fine-tune afterwards (AdvancedSR retrained the
    bias-free subnet).
    """
    if isinstance(keep, str):
        keep = (keep,)
    kept_ids = {id(m) for m in compression_hooks(model).kernel_prune_keep()} if keep is None else set()
    overrides, olds = {}, {}
    for name, conv in _named_convs(model).items():
        if conv.bias is None or id(conv) in kept_ids:
            continue
        if keep is not None and any(fnmatch.fnmatchcase(name, pat) for pat in keep):
            continue
        in_ch, out_ch, k, _ = conv_spec(conv)
        overrides[name] = (in_ch, out_ch, k, False)
        olds[name] = conv
    apply_conv_overrides(model, overrides)
    for name, old in olds.items():
        new = _get_conv(model, name).to(old.weight.device, old.weight.dtype)
        _set_module(model, name, new)
        new.weight.copy_(old.weight)
        new.train(old.training)
    return list(olds)

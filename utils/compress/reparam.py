"""Exact re-parametrizations: branch merge (PRFDN, Eq. 1 of Yin et al.) and 1×1-conv folding.

All functions return new modules computing the same function as their input (up to float
rounding); tests compare outputs numerically.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models import model_from_state_dict
from models.prfdn import BranchRFDN, ParallelRFDN, WideRFDB


# -- Eq. 1 ------------------------------------------------------------------------------
@torch.no_grad()
def stack_output_channels(convs: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convs sharing one input merge by stacking their kernels along the output axis."""
    weight = torch.cat([c.weight for c in convs], dim=0)
    bias = torch.cat([c.bias for c in convs]) if convs[0].bias is not None else None
    return weight, bias


@torch.no_grad()
def merge_block_diagonal(convs: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convs on separate inputs: concatenated inputs, block-diagonal kernel (Eq. 1).

    K_i of shape (o_i, c_i, k, k) -> (Σo_i, Σc_i, k, k) with K_i on the diagonal and
    explicit zero blocks elsewhere (the dense realization).
    """
    out_total = sum(c.weight.shape[0] for c in convs)
    in_total = sum(c.weight.shape[1] for c in convs)
    k = convs[0].weight.shape[2:]
    weight = convs[0].weight.new_zeros(out_total, in_total, *k)
    o = i = 0
    for c in convs:
        co, ci = c.weight.shape[:2]
        weight[o:o + co, i:i + ci] = c.weight
        o, i = o + co, i + ci
    bias = torch.cat([c.bias for c in convs]) if convs[0].bias is not None else None
    return weight, bias


def _assign(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if conv.weight.shape != weight.shape:
        raise ValueError(f'merged kernel {tuple(weight.shape)} does not fit {tuple(conv.weight.shape)}')
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)


def _part_major_to_branch_major(parts: list, n: int) -> torch.Tensor:
    """Index map of the concatenation before c5.

    The wide block concatenates part by part ([d1 of branches 1..n, d2 of 1..n, ...]);
    a branch's c5 wants its own parts together. Returns `src` such that
    branch_major = part_major[:, src].  `parts` = channels per part per branch.
    """
    src = []
    offsets = [sum(parts[:p]) * n for p in range(len(parts))]
    for b in range(n):
        for p, width in enumerate(parts):
            start = offsets[p] + b * width
            src.extend(range(start, start + width))
    return torch.tensor(src)


@torch.no_grad()
def merge_rfdbs(blocks: list, wide: WideRFDB) -> WideRFDB:
    """Fill `wide` with the n branch blocks (RFDB or SRFDB), dense or grouped."""
    n = len(blocks)
    grouped = wide.groups > 1
    names = [name for name, m in blocks[0].named_modules() if isinstance(m, nn.Conv2d)]
    own = dict(wide.named_modules())
    for name in names:
        convs = [dict(b.named_modules())[name] for b in blocks]
        if name == 'c5':
            continue
        w, b = stack_output_channels(convs) if grouped else merge_block_diagonal(convs)
        _assign(own[name], w, b)
    # c5 and the part-major concatenation
    parts = [blocks[0].c1_d.out_channels] * blocks[0].steps + [blocks[0].c4.out_channels]
    src = _part_major_to_branch_major(parts, n)
    c5s = [b.c5 for b in blocks]
    w_bm, b5 = stack_output_channels(c5s) if grouped else merge_block_diagonal(c5s)
    if wide.cat_mode == 'plain':
        w = torch.zeros_like(w_bm)
        w[:, src] = w_bm                           # column src[j] of the cat feeds column j
        _assign(wide.c5, w, b5)
    else:
        _assign(wide.c5, w_bm, b5)
        if wide.cat_mode == 'conv':
            perm = torch.zeros_like(wide.cat_conv.weight)
            perm[torch.arange(len(src)), src, 0, 0] = 1.0
            wide.cat_conv.weight.copy_(perm)
    return wide


@torch.no_grad()
def branch_to_parallel(model: BranchRFDN, grouped: bool = False, cat_as_conv: bool = False,
                       split_as_conv: bool = False) -> ParallelRFDN:
    """Re-parametrize a BranchRFDN into the equivalent ParallelRFDN.

    grouped: Eq. 1 as groups=n convolutions (n× fewer FLOPs) instead of dense kernels with
    zero blocks; cat_as_conv: the concatenation before c5 re-ordered by a 1×1 permutation
    conv (else by permuting c5's input columns, or a channel shuffle when grouped);
    split_as_conv: the split of the stacked head as two 1×1 selection convs.
    """
    if not isinstance(model, BranchRFDN):
        raise TypeError(f'merge needs a BranchRFDN, got {type(model).__name__}')
    n = model.num_modules
    nf = model.fea_conv.out_channels
    blocks = [getattr(model, f'B{k}') for k in range(1, n + 1)]
    srfdbs = [getattr(model, f'S{j}') for j in range(1, n)]
    heads = [model.fea_conv] + [getattr(model, f'fea_conv{j}') for j in range(1, n)]
    for group, what in ((blocks, 'RFDB'), (srfdbs, 'SRFDB'), (heads, 'head conv')):
        shapes = {tuple(p.shape for p in m.parameters()) for m in group}
        if len(shapes) != 1:
            raise ValueError(f'the {what}s of the branches differ in width: not mergeable')
    cat_mode = 'conv' if cat_as_conv else ('shuffle' if grouped else 'plain')
    out_nc = model.upsampler[0].out_channels // model.scale ** 2
    par = ParallelRFDN(in_nc=model.fea_conv.in_channels, nf=nf, num_modules=n, out_nc=out_nc,
                       upscale=model.scale, groups=grouped, cat_mode=cat_mode,
                       split_as_conv=split_as_conv, srfdb_steps=srfdbs[0].steps)
    _assign(par.head, *stack_output_channels(heads))
    if split_as_conv:
        eye = torch.eye(nf * n).view(nf * n, nf * n, 1, 1)
        par.split_res.weight.copy_(eye[:nf])
        par.split_s.weight.copy_(eye[nf:])
    merge_rfdbs(srfdbs, par.S)
    merge_rfdbs(blocks, par.B)
    for name in ('c.0', 'LR_conv', 'upsampler.0'):
        src, dst = dict(model.named_modules())[name], dict(par.named_modules())[name]
        _assign(dst, src.weight, src.bias)
    return par.eval()


# -- fold: remove the helper 1×1 convs again -----------------------------------------------
def _is_plain_1x1(conv) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1 \
        and conv.bias is None


@torch.no_grad()
def fold_parallel(model: ParallelRFDN) -> ParallelRFDN:
    """Absorb `cat_conv` (into c5) and the split convs (into the head): same function, no
    identity or permutation convs left. Works on pruned models too (any 1×1 linear map)."""
    if not isinstance(model, ParallelRFDN):
        raise TypeError(f'fold needs a ParallelRFDN, got {type(model).__name__}')
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for block in ('S', 'B'):
        key = f'{block}.cat_conv.weight'
        if key in sd:
            perm = sd.pop(key)[:, :, 0, 0]                       # (out, in)
            if model.B.groups > 1:
                raise ValueError('fold of a grouped cat_conv: use the dense model')
            c5 = sd[f'{block}.c5.weight']                          # (o, out, 1, 1)
            sd[f'{block}.c5.weight'] = torch.einsum('om,mi->oi', c5[:, :, 0, 0], perm)[..., None, None]
    if 'split_res.weight' in sd:
        sel_res = sd.pop('split_res.weight')[:, :, 0, 0]
        sel_s = sd.pop('split_s.weight')[:, :, 0, 0]
        w, b = sd['head.weight'], sd['head.bias']
        mix = torch.cat([sel_res, sel_s], dim=0)                    # (new heads, old heads)
        sd['head.weight'] = torch.einsum('no,oikl->nikl', mix, w)
        sd['head.bias'] = mix @ b
    return model_from_state_dict(sd, 'ParallelRFDN', label='folded model').eval()

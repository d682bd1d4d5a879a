"""Exact re-parametrizations of a checkpoint, checked numerically before anything is written.

    python reparam.py --input branch.pth --output parallel.pth              # merge (dense, Eq. 1)
    python reparam.py --input branch.pth --output parallel_g.pth --grouped  # merge, groups=n convs
    python reparam.py --input branch.pth --output p.pth --cat-as-conv --split-as-conv
    python reparam.py --mode collapse --input clb_imdn.pth --output imdn.pth
    python reparam.py --mode fold --input pruned.pth --output deploy.pth

The input's architecture is recognised from the checkpoint. Prints a before/after table
(params, FLOPs by both methods, #conv, longest serial conv path, CPU runtime at 256×256
median of 5) and the largest absolute output difference (0–255 range) on random LR inputs
and on a real image; refuses to write when it exceeds --tolerance (1e-3).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from models import BranchRFDN, load_recognised_model
from models.clb_imdn import CollapsibleConv
from utils.compress.collapse import collapse_model
from utils.compress.reparam import branch_to_parallel, fold_parallel
from utils.io.checkpoint import check_output_file, save_state_dict
from utils.io.config import parse_with_config, shared_dir
from utils.io.errors import UserError, check_option, run_cli
from utils.io.image_io import imread_rgb, uint8_to_tensor
from utils.metrics.model_summary import (
    count_params,
    fvcore_flops,
    longest_conv_path,
    measure_runtime,
    ntire_counts,
)

DEFAULT_IMAGE = os.path.join(shared_dir(), 'benchmark', 'Set5', 'LR_bicubic', 'X4', 'butterflyx4.png')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True)
    p.add_argument('--output', required=True)
    p.add_argument('--mode', default='merge', choices=['merge', 'collapse', 'fold'])
    p.add_argument('--grouped', action='store_true',
                   help='merge: groups=n convs instead of dense zero blocks')
    p.add_argument('--cat-as-conv', dest='cat_as_conv', action='store_true',
                   help='merge: re-order the concatenation before c5 with a 1×1 permutation conv')
    p.add_argument('--split-as-conv', dest='split_as_conv', action='store_true',
                   help='merge: split the stacked head with two 1×1 selection convs')
    p.add_argument('--fold', action='store_true', help='merge: also fold the helper 1×1 convs afterwards')
    p.add_argument('--scale', type=int, default=None, help='check that the model has this scale')
    p.add_argument('--tolerance', type=float, default=1e-3, help='largest |Δ| (0–255) accepted')
    p.add_argument('--image', default=None,
                   help='real LR image for the exactness check (default: Set5 butterfly under '
                   '$ESR_SHARED/benchmark, when it is there)')
    p.add_argument('--no_runtime', action='store_true', help='skip the runtime column')
    p.add_argument('--also', nargs='+', default=[], metavar='CKPT',
                   help='more checkpoints to describe in the same table (measured in this run)')
    return parse_with_config(p, argv)


def transform(model, args):
    if args.mode == 'merge':
        if not isinstance(model, BranchRFDN):
            raise UserError(f'{args.input} is a {type(model).__name__}, not a BranchRFDN: nothing to merge')
        try:
            out = branch_to_parallel(model, args.grouped, args.cat_as_conv, args.split_as_conv)
        except ValueError as exc:
            raise UserError(f'{args.input} is not mergeable: {exc}') from None
        return fold_parallel(out) if args.fold else out
    if args.mode == 'collapse':
        if not any(isinstance(m, CollapsibleConv) for m in model.modules()):
            raise UserError(f'{args.input} is a {type(model).__name__} without collapsible convs: '
                            'nothing to collapse')
        try:
            return collapse_model(model)
        except (TypeError, ValueError) as exc:
            raise UserError(f'{args.input}: cannot collapse: {exc}') from None
    try:
        return fold_parallel(model)
    except (TypeError, ValueError) as exc:
        raise UserError(f'{args.input}: cannot fold: {exc}') from None


def max_difference(a, b, image_path: str | None) -> dict:
    """Largest |a(x) - b(x)| in 0–255 units on random LR inputs and on a real image."""
    rng = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, h, w, generator=rng) for h, w in ((32, 32), (48, 37), (64, 64))]
    names = ['random 32×32', 'random 48×37', 'random 64×64']
    if image_path and os.path.isfile(image_path):
        inputs.append(uint8_to_tensor(imread_rgb(image_path), 1.0))
        names.append(os.path.basename(image_path))
    out = {}
    with torch.no_grad():
        for name, x in zip(names, inputs):
            ya = a(x * a.input_range) * (255.0 / a.input_range)
            yb = b(x * b.input_range) * (255.0 / b.input_range)
            out[name] = float((ya - yb).abs().max())
    return out


def describe(model, runtime: bool) -> dict:
    flops, _, convs = ntire_counts(model)
    row = {'model': type(model).__name__, 'params M': count_params(model) / 1e6,
           'FLOPs G': flops / 1e9, 'fvcore G': fvcore_flops(model) / 1e9,
           '#conv': convs, 'serial convs': longest_conv_path(model)}
    if runtime:
        x = torch.rand(1, 3, 256, 256) * model.input_range
        row['CPU ms 256²'] = measure_runtime(model, x, warmup=2, repeats=5)['median_ms']
    return row


def print_table(rows: list) -> None:
    keys = list(rows[0].keys())
    cells = [[k for k in keys]] + [[f'{r[k]:.3f}' if isinstance(r[k], float) else str(r[k]) for k in keys]
                                   for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    for j, c in enumerate(cells):
        print(' | '.join(x.rjust(w) for x, w in zip(c, widths)))
        if j == 0:
            print('-+-'.join('-' * w for w in widths))


@torch.no_grad()  # no gradients needed; leaves the caller's grad mode as it was
def main(argv=None) -> int:
    args = parse_args(argv)
    check_option('--tolerance', args.tolerance, at_least=0)
    check_option('--scale', args.scale, at_least=1)
    merge_only = [flag for flag, on in (('--grouped', args.grouped), ('--cat-as-conv', args.cat_as_conv),
                                        ('--split-as-conv', args.split_as_conv), ('--fold', args.fold)) if on]
    if merge_only and args.mode != 'merge':
        raise UserError(f'{" ".join(merge_only)}: for --mode merge only, not --mode {args.mode}')
    if args.image is not None and not os.path.isfile(args.image):
        raise UserError(f'--image {args.image}: no such file')
    image = args.image or DEFAULT_IMAGE
    if not os.path.isfile(image):
        print(f'note: {image} not found: exactness checked on random inputs only')
    # before any work: --output must be writable and must not replace a checkpoint this run reads
    check_output_file(args.output, '--output', inputs=[args.input, *args.also])
    model = load_recognised_model(args.input, what='--input')
    extra = [load_recognised_model(c, what='--also') for c in args.also]
    if args.scale and model.scale != args.scale:
        raise UserError(f'{args.input} is a ×{model.scale} model, not ×{args.scale}')
    new = transform(model, args).eval()
    diffs = max_difference(model, new, image)
    worst = max(diffs.values())
    rows = [describe(m, not args.no_runtime) for m in extra]
    rows += [describe(model, not args.no_runtime), describe(new, not args.no_runtime)]
    for row, label in zip(rows, [*args.also, args.input, args.output]):
        row['model'] = f'{row["model"]} ({os.path.basename(label)})'
    print_table(rows)
    print('max |Δ| of the outputs (0–255): ' + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
    if not np.isfinite(worst) or worst > args.tolerance:
        raise UserError(f'not exact: max |Δ| {worst:.3e} > {args.tolerance:g}; nothing written')
    save_state_dict(new.state_dict(), args.output)
    print(f'wrote {args.output} ({type(new).__name__}); max |Δ| {worst:.2e} <= {args.tolerance:g}')
    return 0


if __name__ == '__main__':
    run_cli(main)

"""Visual comparison figure: crops of bicubic / model A / model B / ... / HR, per image.

    python -m utils.engine.figures --out docs/visual.png --hr ../shared/benchmark/Set14/HR/baboon.png \
        ../shared/benchmark/Set14/HR/comic.png --checkpoint model_zoo/team01_PRFDN.pth \
        ../shared/pretrained/rfdn_baseline.pth --labels PRFDN RFDN
Each LR is made from the HR with the project's MATLAB bicubic (×scale); the crop is the
HR-resolution window of --crop pixels at the centre (or --at Y X, per image).
"""
from __future__ import annotations

import argparse
import os

import torch

from models import load_model
from utils.data.eval_sets import bicubic_lr
from utils.engine.inference import super_resolve
from utils.io.atomic import atomic_path
from utils.io.checkpoint import check_output_file
from utils.io.errors import UserError, check_option
from utils.io.image_io import imread_rgb
from utils.io.matlab_functions import imresize, modcrop
from utils.metrics.psnr_ssim import calculate_psnr


def comparison_rows(hr_paths: list, models: list, labels: list, scale: int = 4, crop: int = 96,
                    at: list | None = None) -> list:
    """[(image name, [(label, crop uint8 HxWx3, PSNR-Y of the whole image or None)])]."""
    rows = []
    for i, path in enumerate(hr_paths):
        hr = modcrop(imread_rgb(path), scale)
        lr = bicubic_lr(hr, scale)
        h, w = hr.shape[:2]
        y, x = (at[i] if at else ((h - crop) // 2, (w - crop) // 2))
        y, x = max(0, min(y, h - crop)), max(0, min(x, w - crop))
        outputs = [('bicubic', imresize(lr, float(scale)))]
        outputs += [(label, super_resolve(m, lr)) for label, m in zip(labels, models)]
        cells = [(label, sr[y:y + crop, x:x + crop],
                  calculate_psnr(sr, hr, border=scale, y_channel=True)) for label, sr in outputs]
        cells.append(('HR', hr[y:y + crop, x:x + crop], None))
        rows.append((os.path.splitext(os.path.basename(path))[0], cells))
    return rows


def save_figure(rows: list, out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ncol = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.4 * ncol, 2.6 * len(rows)), squeeze=False)
    for r, (name, cells) in enumerate(rows):
        for c, (label, img, psnr) in enumerate(cells):
            ax = axes[r][c]
            ax.imshow(img, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label + (f'\n{psnr:.2f} dB' if psnr is not None else f'\n{name}'), fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _figure_formats() -> set:
    """File extensions matplotlib can save a figure as (they depend on the installed backends)."""
    from matplotlib.figure import Figure
    return set(Figure().canvas.get_supported_filetypes())


@torch.no_grad()  # evaluation only; leaves the caller's grad mode as it was
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', required=True)
    p.add_argument('--hr', nargs='+', required=True)
    p.add_argument('--checkpoint', nargs='+', required=True)
    p.add_argument('--labels', nargs='+', default=None)
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--crop', type=int, default=96)
    p.add_argument('--at', type=int, nargs='+', default=None, help='Y X per image (top-left, HR pixels)')
    args = p.parse_args(argv)

    check_option('--scale', args.scale, at_least=1)
    check_option('--crop', args.crop, at_least=1)
    check_output_file(args.out, '--out', inputs=args.hr + args.checkpoint)
    ext = os.path.splitext(args.out)[1][1:].lower()
    writable = sorted(_figure_formats())
    if ext and ext not in writable:
        raise UserError(f'--out {args.out}: cannot write .{ext} figures; use one of {", ".join(writable)}')
    labels = args.labels or [os.path.splitext(os.path.basename(c))[0] for c in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        raise UserError('give one --labels entry per --checkpoint')
    at = None
    if args.at:
        if len(args.at) != 2 * len(args.hr):
            raise UserError('--at needs Y X for every --hr image')
        at = [(args.at[2 * i], args.at[2 * i + 1]) for i in range(len(args.hr))]
        for path, (y, x) in zip(args.hr, at):
            height, width = imread_rgb(path).shape[:2]
            h, w = height - height % args.scale, width - width % args.scale  # the figure's modcrop
            if not (0 <= y <= h - args.crop and 0 <= x <= w - args.crop):
                fits = (f'Y in [0, {h - args.crop}], X in [0, {w - args.crop}]' if min(h, w) >= args.crop
                        else 'the crop is larger than the image')
                raise UserError(f'--at {y} {x} puts the {args.crop}-pixel crop outside {path} '
                                f'({width}×{height} pixels): {fits}')
    models = [load_model(c) for c in args.checkpoint]
    for path, model in zip(args.checkpoint, models):
        if model.scale != args.scale:
            raise UserError(f'--checkpoint {path} is ×{model.scale}, --scale is {args.scale}')
    save_figure(comparison_rows(args.hr, models, labels, args.scale, args.crop, at), args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    from utils.io.errors import run_cli
    run_cli(main)

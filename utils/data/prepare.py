"""Crop training pairs into overlapping sub-images (PNG), optionally packed into LMDBs.

    python -m utils.data.prepare --data_dir DIV2K LSDIR --out data/train_sub --scale 4 --lmdb

writes OUT/HR/{name}_s001.png ... and the aligned LR crops OUT/X4/{name}_s001.png, the
way BasicSR's sub-image extraction does it (480² HR crops every 240 pixels, plus one
flush with the right/bottom edge when more than --thresh pixels would be left over; an
image smaller than --crop gives one sub-image of its own size). LR crops come from the
LR file, or from the MATLAB bicubic of the whole HR image when there is none. With
--lmdb the sub-images are also packed, bytes unchanged, into OUT/HR.lmdb and OUT/X4.lmdb
(data.mdb + meta_info.txt, BasicSR's layout). `train.py --data_dir OUT` reads the PNG
sub-images, `--data_dir OUT/HR.lmdb` the LMDB.

Resumable and atomic: every PNG is written to a temporary file and renamed, an image
whose sub-images all exist is not decoded again, an LMDB is committed every 500 images
and gets its meta_info.txt last; rerunning the same command after an interruption
finishes the job. Unreadable input images are skipped with a warning naming them.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import warnings

import numpy as np
from tqdm import tqdm

from utils.data.discovery import find_training_pairs
from utils.data.lmdb_store import pack_lmdb, read_lmdb_rgb
from utils.data.training_set import header_size
from utils.io.checkpoint import check_output_apart, check_output_dir
from utils.io.errors import UserError, check_option, run_cli
from utils.io.image_io import imread_rgb, imwrite_rgb
from utils.io.matlab_functions import imresize, modcrop


def sub_image_starts(length: int, crop: int, step: int, thresh: int) -> list:
    """Start offsets along one axis: every `step` while a `crop` fits, plus one flush with
    the end when more than `thresh` pixels would be left (BasicSR's rule)."""
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def sub_image_boxes(hr_h: int, hr_w: int, scale: int, crop: int, step: int, thresh: int) -> list:
    """[(top, left, height, width)] HR boxes of an image of HR size hr_h x hr_w (modcropped
    to the scale), numbered row by row as s001, s002, ... All are multiples of `scale`."""
    h, w = hr_h - hr_h % scale, hr_w - hr_w % scale
    ch, cw = min(crop, h), min(crop, w)
    return [(top, left, ch, cw) for top in sub_image_starts(h, ch, step, thresh)
            for left in sub_image_starts(w, cw, step, thresh)]


def _name(ref) -> str:
    return os.path.splitext(os.path.basename(ref))[0] if isinstance(ref, str) else ref[1]


def _read(ref) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return imread_rgb(ref) if isinstance(ref, str) else read_lmdb_rgb(*ref)


def _crop_one(task: tuple) -> tuple:
    """Write the missing sub-images of one pair. Returns (status, detail, sub_names, hr_shapes),
    status 'written' | 'skipped' (all existed) | 'unreadable' | 'mismatch'."""
    hr_ref, lr_ref, out, scale, crop, step, thresh, compression = task
    name = _name(hr_ref)
    try:
        hr_h, hr_w = header_size(hr_ref)
    except Exception as exc:  # PIL raises many types for corrupt files
        return 'unreadable', f'{hr_ref}: {str(exc).splitlines()[0][:160]}', [], []
    boxes = sub_image_boxes(hr_h, hr_w, scale, crop, step, thresh)
    subs = [f'{name}_s{k:03d}' for k in range(1, len(boxes) + 1)]
    shapes = [(bh, bw, 3) for _, _, bh, bw in boxes]
    hr_dir, lr_dir = os.path.join(out, 'HR'), os.path.join(out, f'X{scale}')
    missing = [k for k, sub in enumerate(subs)
               if not (os.path.isfile(os.path.join(hr_dir, sub + '.png'))
                       and os.path.isfile(os.path.join(lr_dir, sub + '.png')))]
    if not missing:
        return 'skipped', '', subs, shapes
    try:
        hr = modcrop(_read(hr_ref), scale)
        lr = _read(lr_ref) if lr_ref is not None else None
    except UserError as exc:
        return 'unreadable', str(exc), [], []
    if hr.shape[:2] != (hr_h - hr_h % scale, hr_w - hr_w % scale):
        return 'unreadable', f'{hr_ref}: decoded size differs from its header', [], []
    if lr is None:
        lr = imresize(hr, 1.0 / scale)  # the whole image: exactly the standard LR
    elif (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
        return 'mismatch', (f'{lr_ref}: LR {lr.shape[1]}x{lr.shape[0]} ×{scale} does not match '
                                  f'HR {hr.shape[1]}x{hr.shape[0]}'), [], []
    for k in missing:
        top, left, bh, bw = boxes[k]
        imwrite_rgb(os.path.join(hr_dir, subs[k] + '.png'), hr[top:top + bh, left:left + bw], compression)
        t, lf = top // scale, left // scale
        imwrite_rgb(os.path.join(lr_dir, subs[k] + '.png'),
                    lr[t:t + bh // scale, lf:lf + bw // scale], compression)
    return 'written', '', subs, shapes


def _remove_stale_temporaries(folder: str) -> None:
    """Temporary files of a killed run (imwrite_rgb's .tmp_*.png) are never data."""
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith('.tmp_'):
                os.remove(os.path.join(folder, f))


def prepare(data_dirs: list, out: str, scale: int = 4, lr_dirs: list | None = None, crop: int = 480,
            step: int = 240, thresh: int = 0, compression: int = 1, make_lmdb: bool = False,
            workers: int = 2, progress: bool = True) -> dict:
    """Crop every pair of `data_dirs` into sub-images under `out` (see the module doc).

    Returns counts and the output size: {'images', 'written', 'skipped', 'unreadable',
    'sub_images', 'png_bytes', 'lmdb_bytes', 'seconds'}.
    """
    for value, flag in ((crop, '--crop'), (step, '--step')):
        if value < scale or value % scale:
            raise UserError(f'{flag} {value} must be a positive multiple of --scale {scale}')
    if not 0 <= compression <= 9:
        raise UserError(f'--compression must be 0-9, got {compression}')
    t0 = time.perf_counter()
    pairs = find_training_pairs(data_dirs, scale, lr_dirs)
    names = {}
    for hr_ref, _ in pairs:
        first = names.setdefault(_name(hr_ref), hr_ref)
        if first is not hr_ref:
            raise UserError(f'two images named {_name(hr_ref)} ({first}, {hr_ref}): '
                            'prepare these folders into separate --out folders')
    for sub in ('HR', f'X{scale}'):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        _remove_stale_temporaries(os.path.join(out, sub))
    tasks = [(hr, lr, out, scale, crop, step, thresh, compression) for hr, lr in pairs]
    counts = {'images': len(pairs), 'written': 0, 'skipped': 0, 'unreadable': 0}
    subs, shapes = [], []
    bar = tqdm(total=len(tasks), unit='img', desc='cropping sub-images', disable=not progress)
    pool = multiprocessing.get_context('fork').Pool(workers) if workers > 0 else None
    try:
        results = pool.imap_unordered(_crop_one, tasks, chunksize=4) if pool else map(_crop_one, tasks)
        for status, detail, image_subs, image_shapes in results:
            if status == 'mismatch':
                raise UserError(detail)
            if status == 'unreadable':
                warnings.warn(f'skipping unreadable image {detail}', stacklevel=2)
            counts[status] += 1
            subs.extend(image_subs)
            shapes.extend(image_shapes)
            bar.update(1)
            bar.set_postfix(written=counts['written'], skipped=counts['skipped'],
                            unreadable=counts['unreadable'])
    finally:
        bar.close()
        if pool:
            pool.terminate()
    order = np.argsort(subs, kind='stable')
    subs, shapes = [subs[i] for i in order], [shapes[i] for i in order]
    counts['sub_images'] = len(subs)
    counts['png_bytes'] = sum(os.path.getsize(os.path.join(out, d, s + '.png'))
                              for d in ('HR', f'X{scale}') for s in subs)
    counts['lmdb_bytes'] = 0
    if make_lmdb:
        for folder, div in (('HR', 1), (f'X{scale}', scale)):
            lmdb_dir = os.path.join(out, f'{folder}.lmdb')
            pack_lmdb([os.path.join(out, folder, s + '.png') for s in subs], subs,
                      [(h // div, w // div, c) for h, w, c in shapes], lmdb_dir, compression,
                      progress=progress)
            counts['lmdb_bytes'] += sum(os.path.getsize(os.path.join(lmdb_dir, f))
                                        for f in os.listdir(lmdb_dir))
    counts['seconds'] = round(time.perf_counter() - t0, 1)
    return counts


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='python -m utils.data.prepare', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data_dir', nargs='+', required=True,
                   help='HR folders, DIV2K/LSDIR roots or LMDBs (as train.py --data_dir)')
    p.add_argument('--lr_dir', nargs='+', default=[], help='LR folders paired with --data_dir (optional)')
    p.add_argument('--out', required=True, help='output root: OUT/HR/, OUT/X{scale}/ (+ .lmdb)')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--crop', type=int, default=480, help='HR sub-image size (a multiple of --scale)')
    p.add_argument('--step', type=int, default=240, help='HR stride between sub-images')
    p.add_argument('--thresh', type=int, default=0,
                   help='add an edge-flush sub-image when more than this many HR pixels are left')
    p.add_argument('--compression', type=int, default=1,
                   help='PNG zlib level 0-9 (BasicSR uses 3: a few percent smaller, slower to write)')
    p.add_argument('--lmdb', action='store_true', help='also pack OUT/HR.lmdb and OUT/X{scale}.lmdb')
    p.add_argument('--workers', type=int, default=2, help='processes cropping images')
    p.add_argument('--no_progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.scale < 1 or args.workers < 0:
        raise UserError('--scale must be >= 1 and --workers >= 0')
    check_option('--thresh', args.thresh, at_least=0)  # below 0 an exactly tiled side gets its last crop twice
    check_output_dir(args.out, '--out')
    check_output_apart(args.out, '--out', [('--data_dir', d) for d in args.data_dir]
                + [('--lr_dir', d) for d in args.lr_dir])
    counts = prepare(args.data_dir, args.out, args.scale, args.lr_dir, args.crop, args.step, args.thresh,
                     args.compression, args.lmdb, args.workers, not args.no_progress)
    print(f'{counts["images"]} images -> {counts["sub_images"]} sub-image pairs in {args.out} '
          f'({counts["written"]} images cropped, {counts["skipped"]} already done, '
          f'{counts["unreadable"]} unreadable skipped); PNG {counts["png_bytes"] / 1e9:.2f} GB'
          + (f', LMDB {counts["lmdb_bytes"] / 1e9:.2f} GB' if args.lmdb else '')
          + f', {counts["seconds"]} s', file=sys.stdout)
    return 0


if __name__ == '__main__':
    run_cli(main, 'interrupted: rerun the same command to resume')

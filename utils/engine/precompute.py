"""Write a teacher's SR outputs of the training images once (a teacher-output store, see
utils/data/teacher_store.py), so that output distillation (`train.py --teacher_outputs DIR`)
reads the teacher's patch beside the HR patch instead of running the teacher every step.

    python -m utils.engine.precompute --teacher ../shared/pretrained/rfdn_baseline.pth \\
        --out_dir teacher_outputs/rfdn_x4 [--data_dir ... --lr_dir ...] [--tile 256]

The images are those `train.py` would index from the same --data_dir / --lr_dir (default:
every folder of $ESR_SHARED/train). Each output is written atomically as it is made; a rerun
skips the files already there, so an interrupted run resumes; the manifest is written last.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from tqdm import tqdm

from models import load_recognised_model
from utils.data import PatchBatches, TrainingSet, default_training_dirs, find_training_pairs
from utils.data.teacher_store import MANIFEST, encode, output_name, read_manifest, write_manifest
from utils.engine.inference import super_resolve_tensor
from utils.io.checkpoint import check_output_apart, check_output_dir
from utils.io.config import shared_dir
from utils.io.errors import UserError, run_cli
from utils.io.image_io import imwrite_rgb, uint8_to_tensor


def write_stored_output(path: str, sr: torch.Tensor, value_range: float) -> int:
    """Write a teacher output (1, 3, H, W) in the teacher's range as a store entry (16-bit PNG
    of the 0–1 units, atomically). Returns the number of values clipped by the encoding."""
    u16, clipped = encode((sr[0].float() / value_range).permute(1, 2, 0).cpu().numpy())
    imwrite_rgb(path, u16)
    return clipped


def write_teacher_outputs(teacher: torch.nn.Module, train_set: TrainingSet, out_dir: str,
                          teacher_path: str, device='cpu', tile: int | None = None,
                          progress: bool = True) -> dict:
    """Every image of `train_set` through `teacher` (eval mode, its own input range), whole
    or in `tile`² LR tiles, stored in `out_dir`; files already there are kept. Returns counts
    (images, written, skipped, clipped values, seconds)."""
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        write_manifest(out_dir, teacher_path, train_set.scale, 0, 0, finished=False)
    value_range = float(getattr(teacher, 'input_range', 255.0))
    teacher = teacher.to(device).eval()
    start = time.perf_counter()
    written = skipped = clipped = 0
    for i, name in enumerate(tqdm(train_set.names, desc='teacher outputs', unit='img', disable=not progress)):
        path = os.path.join(out_dir, output_name(name))
        if os.path.isfile(path):
            skipped += 1
            continue
        x = uint8_to_tensor(train_set.whole_lr(i), value_range).to(device)
        sr = super_resolve_tensor(teacher, x, train_set.scale, tile)
        clipped += write_stored_output(path, sr, value_range)
        written += 1
    write_manifest(out_dir, teacher_path, train_set.scale, len(train_set), clipped)
    return {'images': len(train_set), 'written': written, 'skipped': skipped, 'clipped': clipped,
            'seconds': round(time.perf_counter() - start, 1)}


@torch.no_grad()
def compare_with_live(teacher: torch.nn.Module, train_set: TrainingSet, batches: int, batch_size: int,
                      patch: int, margin: int = 8, seed: int = 0) -> dict:
    """Mean and largest |stored − live| teacher output (0–255 grey levels) over `batches`
    training batches of `patch`² LR patches (train_set with the store attached), on the whole
    patch and `margin` LR pixels in from its border, where only the flips and rotations differ."""
    value_range = float(getattr(teacher, 'input_range', 255.0))
    teacher = teacher.eval()
    draws = PatchBatches(train_set, batch_size, [(patch, 1)], seed)
    whole, inner, largest, n_whole, n_inner = 0.0, 0.0, 0.0, 0, 0
    m = margin * train_set.scale
    device = next(teacher.parameters()).device
    for step in range(batches):
        lr, _, stored = (t.to(device) for t in draws[step])
        diff = (teacher(lr * value_range) / value_range - stored).abs() * 255
        whole += float(diff.sum())
        n_whole += diff.numel()
        inner += float(diff[..., m:-m, m:-m].sum())
        n_inner += diff[..., m:-m, m:-m].numel()
        largest = max(largest, float(diff.max()))
    return {'mean': whole / n_whole, 'mean_inner': inner / n_inner, 'max': largest,
            'patches': batches * batch_size, 'patch': patch, 'margin': margin}


def teacher_and_images(teacher_path: str, data_dirs: list | None, lr_dirs: list, scale: int,
                       progress: bool = True) -> tuple:
    """(the teacher model, the TrainingSet train.py would index from `data_dirs`, default every
    folder of $ESR_SHARED/train), uncached: each image is read once. UserError (one line) for
    no data or a teacher of another scale."""
    data_dirs = data_dirs or default_training_dirs()
    if not data_dirs:
        raise UserError(f'no training folders under {os.path.join(shared_dir(), "train")}: give --data_dir')
    teacher = load_recognised_model(teacher_path, what='--teacher')
    if teacher.scale != scale:
        raise UserError(f'--teacher {teacher_path} is ×{teacher.scale}, --scale is {scale}')
    return teacher, TrainingSet(find_training_pairs(data_dirs, scale, lr_dirs), scale, 1, cache_mb=0,
                                progress=progress)


def check_teacher_and_outputs(teacher_path: str, outputs: list, data_dirs: list, lr_dirs: list) -> None:
    """The checks this tool and teacher_pairs make before any work (CLI: they name the flags):
    --teacher is a file (it is hashed before it is loaded), and each (flag, folder) of
    `outputs` can be written and lies apart from the training data, whose index would
    otherwise pick up what is written there."""
    if not os.path.isfile(teacher_path):
        what = 'is a folder, not a checkpoint file' if os.path.isdir(teacher_path) else 'not found'
        raise UserError(f'--teacher {teacher_path} {what}')
    inputs = [('--data_dir', d) for d in data_dirs] + [('--lr_dir', d) for d in lr_dirs]
    for flag, folder in outputs:
        check_output_dir(folder, flag)
        check_output_apart(folder, flag, inputs)


def check_store_teacher(store: str, flag: str, teacher_path: str, scale: int,
                        unfinished: bool = True) -> None:
    """A store that has a manifest must be this teacher's at this scale (and finished, unless
    `unfinished`: this tool resumes it): the outputs already there are kept, so another
    teacher would get a manifest that lies about them."""
    if os.path.isfile(os.path.join(store, MANIFEST)):
        try:
            read_manifest(store, scale, teacher_path, unfinished=unfinished)
        except UserError as exc:
            raise UserError(f'{exc}: give another {flag}') from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--teacher', required=True, help='teacher checkpoint (recognised architecture)')
    p.add_argument('--out_dir', required=True, help='the store: one 16-bit PNG per training image')
    p.add_argument('--data_dir', nargs='+', default=None,
                   help='training data as train.py takes it (default: ESR_SHARED/train/*)')
    p.add_argument('--lr_dir', nargs='+', default=[])
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--tile', type=int, default=None,
                   help='run the teacher on LR tiles of this size (bounded memory; outputs then '
                   'differ from the whole-image ones within the tiles\' overlap)')
    p.add_argument('--compare', type=int, default=0, metavar='N',
                   help='then compare N batches of 16 stored 64² patches with the teacher run live on '
                   'the same (flipped, rotated) patches, and print the difference')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--no_progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.scale < 1 or (args.tile is not None and args.tile < 1) or args.compare < 0:
        raise UserError('--scale and --tile must be at least 1, --compare at least 0')
    data_dirs = args.data_dir or default_training_dirs()
    check_teacher_and_outputs(args.teacher, [('--out_dir', args.out_dir)], data_dirs, args.lr_dir)
    check_store_teacher(args.out_dir, '--out_dir', args.teacher, args.scale)
    teacher, train_set = teacher_and_images(args.teacher, data_dirs, args.lr_dir, args.scale,
                                            not args.no_progress)
    counts = write_teacher_outputs(teacher, train_set, args.out_dir, args.teacher, args.device, args.tile,
                                   not args.no_progress)
    print(f'{counts["images"]} teacher outputs in {args.out_dir} ({counts["written"]} written, '
          f'{counts["skipped"]} already there, {counts["clipped"]} values clipped to [-0.25, 1.25]) '
          f'in {counts["seconds"]} s', file=sys.stdout)
    if args.compare:
        train_set.attach_teacher_outputs(args.out_dir)
        found = compare_with_live(teacher.to(args.device), train_set, args.compare, 16, 64)
        print(f'stored vs live teacher on {found["patches"]} {found["patch"]}² LR patches: mean '
              f'|Δ| {found["mean"]:.4f} grey levels (0–255), {found["mean_inner"]:.4f} from '
              f'{found["margin"]} LR pixels inside the border, largest {found["max"]:.2f}', file=sys.stdout)
    return 0


if __name__ == '__main__':
    run_cli(main, 'interrupted: rerun the same command to resume')

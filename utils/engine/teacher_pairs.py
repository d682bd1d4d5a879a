"""Teacher-labelled training pairs: each training image, downscaled, as an LR input, and the
teacher's SR of it as the HR target. A distillation student learns to match its teacher on
these as on the original pairs, so a small set of photographs gives several times the LR
content at scales the original pairs do not have.

    python -m utils.engine.teacher_pairs --teacher ../shared/pretrained/rfdn_baseline.pth \\
        --out_dir data/teacher_pairs_x4 --downscale 2 3 [--data_dir ...] [--tile 256]

For every HR training image (those `train.py` indexes from the same --data_dir, default every
folder of $ESR_SHARED/train) and every factor d of --downscale, the LR input is the MATLAB
bicubic of the image (modcropped to d) at 1/d, written to OUT/X{s}/{name}_d{d}.png, and its
HR target is the teacher's ×s output, rounded to 8 bits, OUT/HR/{name}_d{d}.png. Inputs
made by bicubic downscaling are of the kind the test sets' LR images are; the full-size
photographs themselves, never bicubic-downscaled, would not be. `train.py --data_dir OUT` reads the
pairs (the HR/ + X{s}/ layout), alone or beside the original folders.

With --store DIR the teacher's output of each pair also goes, 16-bit, into the teacher-output
store DIR (utils/data/teacher_store.py), so `train.py --teacher_outputs DIR` reads the pairs'
targets without running the teacher again; the store may already hold the original images'
outputs (`python -m utils.engine.precompute`) from the same teacher.

Each file is written atomically; a rerun skips the pairs (and store entries) already there, so
an interrupted run resumes. OUT/teacher_pairs.json records the teacher (its SHA-256) and the
scale before the first pair is written, and a run with another teacher or scale is refused:
its pairs would be mixed with these.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from tqdm import tqdm

from utils.data import TrainingSet, default_training_dirs
from utils.data.teacher_store import (
    MANIFEST,
    file_sha256,
    output_name,
    read_manifest,
    write_manifest,
)
from utils.engine.inference import super_resolve_tensor
from utils.engine.precompute import (
    check_store_teacher,
    check_teacher_and_outputs,
    teacher_and_images,
    write_stored_output,
)
from utils.io.atomic import atomic_write_text
from utils.io.config import read_json_object
from utils.io.errors import UserError, run_cli
from utils.io.image_io import imwrite_rgb, tensor_to_uint8, uint8_to_tensor
from utils.io.matlab_functions import imresize, modcrop

PAIRS_MANIFEST = 'teacher_pairs.json'


def pair_stem(name: str, factor: int) -> str:
    """File stem of the pair made from training image `name` (a path or LMDB key) at 1/factor."""
    return f'{os.path.splitext(os.path.basename(name.split(":")[-1]))[0]}_d{factor}'


def pairs_record(teacher_path: str, scale: int) -> dict:
    """What OUT/teacher_pairs.json records of the run that makes the pairs."""
    return {'teacher': os.path.basename(teacher_path), 'teacher_sha256': file_sha256(teacher_path),
            'scale': scale}


def check_pairs_record(out_dir: str, record: dict) -> None:
    """UserError unless the pairs already in `out_dir` (if any record says so) were made by the
    teacher and at the scale of `record`: the pairs there are kept, not remade."""
    path = os.path.join(out_dir, PAIRS_MANIFEST)
    if not os.path.isfile(path):
        return
    made = read_json_object(path, 'record of teacher-labelled pairs')
    if made.get('scale') != record['scale']:
        raise UserError(f'the pairs in {out_dir} are ×{made.get("scale")}, not ×{record["scale"]}')
    if made.get('teacher_sha256') != record['teacher_sha256']:
        raise UserError(f'the pairs in {out_dir} were made by another teacher checkpoint '
                        f'({made.get("teacher")}) than {record["teacher"]}')


@torch.no_grad()
def write_teacher_pairs(teacher: torch.nn.Module, train_set: TrainingSet, out_dir: str,
                        factors: list, device='cpu', tile: int | None = None,
                        progress: bool = True, store: str | None = None, record: dict | None = None) -> dict:
    """Write OUT/X{s}/{stem}.png (LR, uint8) and OUT/HR/{stem}.png (teacher output, uint8) for
    every image of `train_set` and factor, and with `store` the output 16-bit into that
    teacher-output store under the HR file's name; what is already there is kept. `record`
    (`pairs_record`) is written to OUT/teacher_pairs.json before the first pair. Returns
    counts (pairs, written, skipped, too_small: downscaled images under 8 LR pixels on a side,
    clipped: store values clipped, seconds)."""
    scale = train_set.scale
    stems = [pair_stem(n, d) for n in train_set.names for d in factors]
    if len(set(stems)) != len(stems):
        seen = set()
        dup = next(s for s in stems if s in seen or seen.add(s))
        raise UserError(f'two training images would both write the pair {dup}: rename one')
    if record is not None:  # before any pair, so that the pairs of an interrupted run are claimed too
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(os.path.join(out_dir, PAIRS_MANIFEST), json.dumps(record, indent=1) + '\n')
    hr_dir, lr_dir = os.path.join(out_dir, 'HR'), os.path.join(out_dir, f'X{scale}')
    value_range = float(getattr(teacher, 'input_range', 255.0))
    teacher = teacher.to(device).eval()
    start = time.perf_counter()
    written = skipped = too_small = clipped = 0
    for i, name in enumerate(tqdm(train_set.names, desc='teacher pairs', unit='img', disable=not progress)):
        hr = None
        for d in factors:
            stem = pair_stem(name, d)
            hr_path, lr_path = os.path.join(hr_dir, f'{stem}.png'), os.path.join(lr_dir, f'{stem}.png')
            stored = store is None or (os.path.isfile(hr_path) and
                                       os.path.isfile(os.path.join(store, output_name(hr_path))))
            if os.path.isfile(hr_path) and os.path.isfile(lr_path) and stored:
                skipped += 1
                continue
            hr = train_set.whole_hr(i) if hr is None else hr
            source = modcrop(hr, d)
            if min(source.shape[:2]) // d < 8:
                too_small += 1
                continue
            lr = imresize(source, 1 / d)
            sr = super_resolve_tensor(teacher, uint8_to_tensor(lr, value_range).to(device), scale, tile)
            # LR first: a pair counts as written only when its HR exists, which is written last
            imwrite_rgb(lr_path, lr)
            imwrite_rgb(hr_path, tensor_to_uint8(sr.float().cpu(), value_range))
            if store is not None:  # named after the HR file, which exists now (a real path)
                clipped += write_stored_output(os.path.join(store, output_name(hr_path)), sr, value_range)
            written += 1
    return {'pairs': len(stems), 'written': written, 'skipped': skipped, 'too_small': too_small,
            'clipped': clipped, 'seconds': round(time.perf_counter() - start, 1)}


def _store_manifest_after(store: str, teacher_path: str, scale: int, clipped: int) -> None:
    """The store's manifest, counting every output now in it (the original images' and the
    pairs'), with the clipped values of both."""
    before = read_manifest(store, scale, teacher_path).get('clipped_values', 0) \
        if os.path.isfile(os.path.join(store, MANIFEST)) else 0
    os.makedirs(store, exist_ok=True)
    count = sum(1 for f in os.listdir(store) if f.endswith('.png') and not f.startswith('.'))
    write_manifest(store, teacher_path, scale, count, before + clipped)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--teacher', required=True, help='teacher checkpoint (recognised architecture)')
    p.add_argument('--out_dir', required=True, help='where HR/ and X{scale}/ are written')
    p.add_argument('--downscale', type=int, nargs='+', default=[2, 3], metavar='D',
                   help='integer factors the training images are downscaled by to make LR inputs')
    p.add_argument('--data_dir', nargs='+', default=None,
                   help='training data as train.py takes it (default: ESR_SHARED/train/*)')
    p.add_argument('--lr_dir', nargs='+', default=[])
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--tile', type=int, default=None,
                   help='run the teacher on LR tiles of this size (bounded memory)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--store', default=None, metavar='DIR',
                   help='also write the outputs into this teacher-output store (train.py --teacher_outputs)')
    p.add_argument('--no_progress', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.scale < 1 or (args.tile is not None and args.tile < 1) or min(args.downscale) < 1:
        raise UserError('--scale, --tile and every --downscale factor must be at least 1')
    data_dirs = args.data_dir or default_training_dirs()
    outputs = [('--out_dir', args.out_dir)] + ([('--store', args.store)] if args.store is not None else [])
    check_teacher_and_outputs(args.teacher, outputs, data_dirs, args.lr_dir)
    if args.store is not None:
        check_store_teacher(args.store, '--store', args.teacher, args.scale, unfinished=False)
    record = pairs_record(args.teacher, args.scale)
    try:
        check_pairs_record(args.out_dir, record)
    except UserError as exc:
        raise UserError(f'{exc}: give another --out_dir') from None
    teacher, train_set = teacher_and_images(args.teacher, data_dirs, args.lr_dir, args.scale,
                                            not args.no_progress)
    counts = write_teacher_pairs(teacher, train_set, args.out_dir, sorted(set(args.downscale)),
                                 args.device, args.tile, not args.no_progress, args.store, record)
    if args.store is not None:
        _store_manifest_after(args.store, args.teacher, args.scale, counts['clipped'])
    print(f'{counts["pairs"]} teacher-labelled pairs in {args.out_dir} ({counts["written"]} written, '
          f'{counts["skipped"]} already there, {counts["too_small"]} left out as under 8 LR pixels) '
          f'in {counts["seconds"]} s', file=sys.stdout)
    return 0


if __name__ == '__main__':
    run_cli(main, 'interrupted: rerun the same command to resume')

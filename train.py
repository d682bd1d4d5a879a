"""Train any model of this repository; one engine for every stage (utils/engine/training.py).

PRFDN stage 1 (SRFDBs only, feature distillation from the official RFDN):
    python train.py --model BranchRFDN --init_from_rfdn ../shared/pretrained/rfdn_baseline.pth \
        --teacher ../shared/pretrained/rfdn_baseline.pth --distill features --pixel_weight 0 \
        --trainable 'S*' 'fea_conv?.*' --out_dir experiments/branch_stage1 --iters 2000
PRFDN stage 2 (whole branch model, L1):
    python train.py --model BranchRFDN --pretrained experiments/branch_stage1/model_last.pth \
        --out_dir experiments/branch_stage2 --iters 2000 --lr 1e-5
Add --resume to continue a run from OUT_DIR/state.pth; torchrun --nproc_per_node N train.py ...
trains with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import torch

from models import CONVERSIONS, MODEL_REGISTRY, build_model, convert_from, load_model, load_recognised_model
from models.expanded_kernel import expand_conv_kernels
from utils.data import default_training_dirs, find_training_pairs, parse_patch_schedule
from utils.data.eval_sets import folder_set
from utils.data.schedule import SCHEDULE_FORMAT
from utils.data.teacher_store import read_manifest
from utils.engine.checkpointer import StateMismatchError
from utils.engine.training import NonFiniteLossError, TrainConfig, Trainer, trainable_parameter_names
from utils.io.checkpoint import check_output_dir
from utils.io.config import parse_with_config, shared_dir, write_resolved_config
from utils.io.errors import UserError, check_device, check_option, run_cli
from utils.io.image_io import uint8_to_tensor

SHARED = shared_dir()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='RFDN', help=f'architecture: {", ".join(sorted(MODEL_REGISTRY))}')
    p.add_argument('--pretrained', default=None, help='start from this checkpoint (loaded strictly)')
    p.add_argument('--init_from', '--init_from_rfdn', dest='init_from', default=None,
                   help='start from a model of another family: BranchRFDN from an RFDN checkpoint '
                   '(SRFDBs start fresh), CLBIMDN from an IMDN one (1×1 branches start at zero)')
    p.add_argument('--srfdb_init', default=None, choices=['fresh', 'first_block'],
                   help='with --init_from for BranchRFDN: SRFDBs start fresh (default) or cut '
                   'from RFDN\'s first block')
    p.add_argument('--srfdb_steps', type=int, default=None, choices=[1, 2, 3],
                   help='with --init_from for BranchRFDN: distillation steps of every SRFDB (default 1, '
                   'as in the PRFDN paper; 3 with --srfdb_init first_block starts each as RFDN\'s B1)')
    p.add_argument('--sequential_branches', type=int, nargs='+', default=None,
                   help='BranchRFDN: feed these branches (2..4) from the previous block\'s output, '
                   'as RFDN does, instead of from their SRFDB (progressive branching: detach one '
                   'branch at a time)')
    p.add_argument('--teacher', default=None, help='frozen teacher checkpoint for --distill')
    p.add_argument('--distill', default='none', choices=['none', 'features', 'output'])
    p.add_argument('--distill_weight', type=float, default=1.0)
    p.add_argument('--feature_weight', type=float, default=0.0,
                   help='also distil the student\'s features (BranchRFDN: the branch inputs) towards '
                   'the --teacher\'s (RFDN: the block outputs they replace) with this weight, beside '
                   '--distill output or none')
    p.add_argument('--teacher_outputs', default=None,
                   help='with --distill output: read the teacher\'s output patches from this store '
                   '(python -m utils.engine.precompute) instead of running --teacher every step')
    p.add_argument('--expand_kernels', type=int, default=0, metavar='GAIN',
                   help='train every ungrouped conv with its kernel over-parametrized by a linear '
                   '1×1 → k×k → 1×1 chain GAIN times as wide, starting at zero (SPAN\'s Conv3XC); '
                   'model_last/model_best hold the collapsed kernels, so the model, its size and '
                   'speed are unchanged (0: off)')
    p.add_argument('--loss', default='l1', choices=['l1', 'l2'])
    p.add_argument('--pixel_weight', type=float, default=1.0, help='0: no pixel loss (pure distillation)')
    p.add_argument('--trainable', nargs='+', default=None, help='only parameters matching these patterns train')
    p.add_argument('--freeze', nargs='+', default=None, help='parameters matching these patterns are frozen')
    p.add_argument('--data_dir', nargs='+', default=None,
                   help='training data, each one of: a folder of HR images (LR made by MATLAB bicubic), '
                   'a DIV2K root (DIV2K_train_HR/, DIV2K_train_LR_bicubic/X4/), an LSDIR root '
                   '(HR/train/, X4/train/), a prepared sub-image root (HR/, X4/; python -m '
                   'utils.data.prepare), an LMDB folder (HR.lmdb: data.mdb + meta_info.txt, LR from '
                   'the sibling X4.lmdb or --lr_dir) or a root holding HR.lmdb + X4.lmdb; see '
                   'data/README.md (default: ESR_SHARED/train/*)')
    p.add_argument('--lr_dir', nargs='+', default=[],
                   help='LR folders or LMDBs paired with --data_dir (optional)')
    p.add_argument('--decode_cache_mb', type=float, default=256,
                   help='decoded images each data-loading process keeps (MB); images are decoded '
                   'lazily in the --workers processes, never all at once, never written to disk')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--batch_size', type=int, default=16, help='global batch (split over processes)')
    p.add_argument('--patch_size', type=int, default=64, help='LR patch size')
    p.add_argument('--patch_schedule', default=None, help='two-stage patches, e.g. 64:1000,160:500')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--iters', type=int, default=None)
    g.add_argument('--epochs', type=float, default=None, help='one epoch = ceil(#images / batch) steps')
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--scheduler', default='multistep', choices=['multistep', 'cosine', 'constant'])
    p.add_argument('--milestones', type=int, nargs='*', default=[])
    p.add_argument('--gamma', type=float, default=0.5)
    p.add_argument('--grad_clip', type=float, default=0.0)
    p.add_argument('--ema', type=float, default=0.0, help='EMA decay of the weights (0: off)')
    p.add_argument('--amp', action='store_true', help='mixed precision (CUDA)')
    p.add_argument('--workers', type=int, default=2,
                   help='DataLoader processes decoding images (0: in the training process); '
                   'batches are the same for any number')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--val_every', type=int, default=500)
    p.add_argument('--val_hr_dir', default=os.path.join(SHARED, 'benchmark', 'Set5', 'HR'),
                   help="validation HR folder (LR by MATLAB bicubic), or an NTIRE root or folder "
                   "(DIV2K_LSDIR_valid_HR/ + DIV2K_LSDIR_valid_LR/, DIV2K_valid_HR/ + "
                   "DIV2K_valid_LR_bicubic/X4/: LR files used) ('none' to skip)")
    p.add_argument('--save_every', type=int, default=100)
    p.add_argument('--log_every', type=int, default=10)
    p.add_argument('--out_dir', required=True)
    p.add_argument('--resume', action='store_true', help='continue from OUT_DIR/state.pth')
    p.add_argument('--plot', action='store_true', help='write OUT_DIR/curves.png')
    p.add_argument('--tensorboard', action='store_true',
                   help='log the losses, learning rate and validation PSNR-Y for TensorBoard in OUT_DIR/tb')
    p.add_argument('--profile', action='store_true', help='print the share of time spent waiting for data')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--no_progress', action='store_true')
    p.add_argument('--report_gap', action='store_true',
                   help='print how far the student\'s distillation features (BranchRFDN: the branch '
                   'inputs) are from the --teacher\'s on the validation LR images, then exit')
    return parse_with_config(p, argv)


def build_student(args):
    for flag in ('srfdb_init', 'srfdb_steps'):
        if getattr(args, flag) and not (args.init_from and args.model.lower() == 'branchrfdn'):
            raise UserError(f'--{flag} is for --model BranchRFDN built with --init_from (an RFDN checkpoint)')
    if args.init_from:
        if args.pretrained:
            raise UserError('give --pretrained or --init_from, not both')
        if args.model not in CONVERSIONS:
            raise UserError(f'--init_from converts into {", ".join(sorted(CONVERSIONS))}, not {args.model}')
        options = {flag: getattr(args, flag) for flag in ('srfdb_init', 'srfdb_steps') if getattr(args, flag)}
        return convert_from(args.model, args.init_from, **options)
    if args.pretrained:
        return load_model(args.pretrained, args.model)
    return build_model(args.model, upscale=args.scale)


def apply_sequential_branches(student, branches) -> None:
    if not branches:
        return
    if not hasattr(student, 'set_sequential_branches'):
        raise UserError(f'--sequential_branches is for --model BranchRFDN, not {type(student).__name__}')
    try:
        student.set_sequential_branches(branches)
    except ValueError as exc:
        raise UserError(f'--sequential_branches: {exc}') from None


def check_args(args) -> None:
    """Every option range and the output folder, before any work: UserError naming the flag."""
    for flag in ('scale', 'batch_size', 'patch_size', 'save_every', 'log_every', 'iters'):
        check_option(f'--{flag}', getattr(args, flag), at_least=1)
    for flag in ('workers', 'val_every', 'grad_clip', 'pixel_weight', 'distill_weight',
                 'feature_weight', 'expand_kernels'):
        check_option(f'--{flag}', getattr(args, flag), at_least=0)
    check_option('--epochs', args.epochs, above=0)
    check_option('--lr', args.lr, above=0, below=1)
    check_option('--gamma', args.gamma, above=0)
    check_option('--ema', args.ema, at_least=0, below=1)
    for milestone in args.milestones:
        check_option('--milestones', milestone, at_least=1)
    if args.teacher_outputs and args.distill != 'output':
        raise UserError('--teacher_outputs is read by --distill output only')
    if args.distill == 'features' and not args.teacher:
        raise UserError('--distill features needs --teacher')
    if args.distill == 'output' and not (args.teacher or args.teacher_outputs):
        raise UserError('--distill output needs --teacher or --teacher_outputs')
    if args.feature_weight > 0 and not args.teacher:
        raise UserError('--feature_weight needs --teacher')
    if args.feature_weight > 0 and args.distill == 'features':
        raise UserError('--feature_weight adds feature distillation beside --distill output or none; '
                        'with --distill features use --distill_weight')
    if args.pixel_weight == 0 and args.distill == 'none' and args.feature_weight == 0 and not args.report_gap:
        raise UserError('--pixel_weight 0 needs --distill features or output: there would be no loss')
    if not args.report_gap:  # the only mode that writes nothing
        check_output_dir(args.out_dir, '--out_dir')


def main(argv=None) -> int:
    args = parse_args(argv)
    check_device('--device', args.device)
    check_args(args)
    data_dirs = args.data_dir or default_training_dirs()
    if not data_dirs:
        raise UserError(f'no training data: pass --data_dir (nothing under {SHARED}/train)')
    iters = args.iters
    if args.epochs is not None:
        n = len(find_training_pairs(data_dirs, args.scale, args.lr_dir))
        iters = max(1, int(math.ceil(args.epochs * math.ceil(n / args.batch_size))))
    if iters is None:  # with a --patch_schedule its stages set the total, 1 is a placeholder
        iters = 1 if args.patch_schedule else 1000
    torch.manual_seed(args.seed)  # what starts fresh (a new model, BranchRFDN's SRFDBs) is seeded too
    student = build_student(args)
    apply_sequential_branches(student, args.sequential_branches)
    if args.expand_kernels:
        expanded = expand_conv_kernels(student, args.expand_kernels)
        print(f'{expanded} conv kernels expanded ×{args.expand_kernels} for training')
    if student.scale != args.scale:
        raise UserError(f'the model is ×{student.scale} but --scale is {args.scale}')
    try:
        stages = parse_patch_schedule(args.patch_schedule, args.patch_size, iters)
    except UserError:
        raise UserError(f'bad --patch_schedule "{args.patch_schedule}": expected {SCHEDULE_FORMAT}') from None
    smallest_patch = min(stage[0] for stage in stages)
    if smallest_patch < student.min_input_size:  # ESA's pooling needs this many LR pixels
        raise UserError(f'LR patches of {smallest_patch} pixels are too small for {type(student).__name__}: '
                        f'give --patch_size (and --patch_schedule sizes) of at least '
                        f'{student.min_input_size}')
    teacher = load_recognised_model(args.teacher, what='--teacher') if args.teacher else None
    if args.teacher_outputs:
        try:  # a store of another scale or another teacher would be a silently wrong target
            read_manifest(args.teacher_outputs, args.scale, args.teacher)
        except UserError as exc:
            raise UserError(f'--teacher_outputs: {exc}') from None
    if args.report_gap:
        return report_gap(student, teacher, args)
    wants_features = args.distill == 'features' or args.feature_weight > 0
    if wants_features and not (hasattr(student, 'distillation_features')
                               and hasattr(teacher, 'distillation_features')):
        raise UserError(f'feature distillation: {type(student).__name__} and '
                        f'{type(teacher).__name__} have no matching features')
    if not trainable_parameter_names(student, args.trainable, args.freeze):
        raise UserError('no parameter left to train: check --trainable / --freeze patterns')
    cfg = TrainConfig(
        out_dir=args.out_dir, data_dirs=data_dirs, lr_dirs=args.lr_dir, scale=args.scale,
        batch_size=args.batch_size, patch_size=args.patch_size, patch_schedule=args.patch_schedule,
        iters=iters, lr=args.lr, scheduler=args.scheduler, milestones=tuple(args.milestones),
        gamma=args.gamma, loss=args.loss, pixel_weight=args.pixel_weight, distill=args.distill,
        distill_weight=args.distill_weight, feature_weight=args.feature_weight,
        teacher_outputs=args.teacher_outputs, grad_clip=args.grad_clip, ema=args.ema, amp=args.amp,
        workers=args.workers, seed=args.seed, val_every=args.val_every,
        val_hr_dir=None if args.val_hr_dir in (None, 'none') else args.val_hr_dir,
        save_every=args.save_every, log_every=args.log_every, plot=args.plot, tensorboard=args.tensorboard,
        decode_cache_mb=args.decode_cache_mb, device=args.device, progress=not args.no_progress,
        profile=args.profile)
    trainer = Trainer(student, cfg, teacher, args.trainable, args.freeze)
    if args.resume:
        try:
            trainer.resume()
        except StateMismatchError as exc:
            raise UserError(f'cannot resume from {exc.path}: its model does not fit {exc.model_name} '
                            f'(was --model or --expand_kernels changed?): {exc.problem}') from None
    elif os.path.isfile(trainer.state_path):
        raise UserError(f'{trainer.state_path} exists: pass --resume to continue it, or another --out_dir')
    if trainer.is_main:  # written once everything is checked and the run starts
        write_resolved_config(args, os.path.join(args.out_dir, 'config.yaml'),
                              {'data_dir': data_dirs, 'iters': cfg.iters, 'epochs': None})
        print(f'{type(student).__name__}: {len(trainer.trainable_names)} trainable tensors, '
              f'{len(trainer.train_set)} training images, {cfg.iters} steps of batch {cfg.batch_size} '
              f'on {trainer.device}' + (f' × {trainer.world} processes' if trainer.world > 1 else ''))
    try:
        summary = trainer.fit()
    except NonFiniteLossError as exc:
        raise UserError(f'{exc} (lower --lr or use --grad_clip)') from None
    if trainer.is_main:
        print(json.dumps(summary))
    return 0


def report_gap(student, teacher, args) -> int:
    """Relative L2 distance ||f_s - f_t|| / ||f_t|| per distillation feature, on the
    validation set's LR images (BranchRFDN: input of branch k vs teacher block k-1 output)."""
    if teacher is None or not hasattr(student, 'distillation_features'):
        raise UserError('--report_gap needs --teacher and a student with distillation features')
    val = folder_set(args.val_hr_dir, None, args.scale)
    student.eval()
    sums = None
    with torch.no_grad():
        for item in val.items:
            x = uint8_to_tensor(item.load_lr(), student.input_range)
            fs, ft = student.distillation_features(x), teacher.distillation_features(x)
            d = [float((a - b).norm() ** 2) for a, b in zip(fs, ft)]
            t = [float(b.norm() ** 2) for b in ft]
            sums = [(d, t)] if sums is None else sums + [(d, t)]
    for k in range(len(sums[0][0])):
        num = sum(s[0][k] for s in sums)
        den = sum(s[1][k] for s in sums)
        print(f'branch {k + 2} input vs teacher block {k + 1} output: '
              f'relative L2 distance {(num / den) ** 0.5:.4f} on {val.name} ({len(val)} LR images)')
    return 0


if __name__ == '__main__':
    run_cli(main, 'interrupted (the last checkpoint is intact; --resume continues)')

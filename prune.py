"""Prune a model of this repository (Torch-Pruning), fine-tuning between steps.

PRFDN (the paper's schedule: 90% of the channels in 16 steps):
    python prune.py --input parallel.pth --out_dir experiments/prune --steps 16 --ratio 0.9 \
        --finetune_iters 100 --distill
To a budget instead (absolute, or a fraction of the current size when <= 1):
    python prune.py --input m.pth --out_dir exp --steps 4 --target_params 0.5
AdvancedSR (kernel pruning, then bias pruning, L2 fine-tuning):
    python prune.py --mode kernel --input ../shared/pretrained/team00_rlfn.pth --sensitivity
    python prune.py --mode kernel --input ../shared/pretrained/team00_rlfn.pth --kernel_prune 3 \
        --out_dir exp/kp --loss l2
    python prune.py --mode bias --input exp/kp/pruned.pth --out_dir exp/bp --loss l2
FMP-style joint channel + weight pruning to 60% of the (sparse) Params (utils/compress/fmp.py):
    python prune.py --mode fmp --input m.pth --out_dir exp/fmp --fmp_metric params --fmp_target 0.6 \
        --fmp_criterion total
CLB block pruning (IMDN 8 -> 7 blocks; --sensitivity ranks the blocks first):
    python prune.py --mode block --input ../shared/pretrained/imdn_baseline.pth --sensitivity
    python prune.py --mode block --input ../shared/pretrained/imdn_baseline.pth --drop_blocks 4 \
        --out_dir exp/b7
Every completed step is kept as OUT_DIR/step_XX.pth with a CSV/JSON log and a PSNR-vs-FLOPs
plot; the final model is written to --output (a plain state_dict; fold helper convs with
`reparam.py --mode fold`).
"""
from __future__ import annotations

import argparse
import copy
import os

import torch

from models import load_recognised_model
from utils.compress.block_pruning import block_drop_table, drop_blocks
from utils.compress.fmp import CRITERIA, METRICS, FmpSettings, run_fmp
from utils.compress.kernel_pruning import bias_prune, eligible_convs, psnr_drop_table
from utils.compress.prune_loop import (
    ScheduleMismatchError,
    finetune_ramp,
    iterative_prune,
    measure_row,
    progressive_kernel_prune,
    psnr_only,
    write_logs,
)
from utils.compress.pruning import IMPORTANCE_NAMES, make_importance, size_of
from utils.data import PatchBatches, TrainingSet, default_training_dirs, find_training_pairs
from utils.data.eval_sets import folder_set
from utils.engine.finetune import FinetuneSettings, make_finetuner
from utils.engine.training import NonFiniteLossError
from utils.io.checkpoint import check_output_dir, check_output_file, save_state_dict
from utils.io.config import parse_with_config, shared_dir, write_resolved_config
from utils.io.errors import UserError, check_device, check_option, run_cli

SHARED = shared_dir()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True)
    p.add_argument('--mode', default='channel', choices=['channel', 'kernel', 'bias', 'block', 'fmp'])
    p.add_argument('--fmp_metric', default='params', help='fmp mode: budget metric, params or flops '
                   '(sparse-aware)')
    p.add_argument('--fmp_target', type=float, default=None,
                   help='fmp mode: remaining share of the metric, in (0, 1), e.g. 0.6')
    p.add_argument('--fmp_criterion', default='total',
                   help='fmp mode: channel, weight, total_fixed or total (see utils/compress/fmp.py)')
    p.add_argument('--sensitivity', action='store_true',
                   help='kernel or block mode: print the ranked sensitivity table and stop')
    p.add_argument('--kernel_prune', type=int, default=None, help='kernel mode: convs to turn 1×1')
    p.add_argument('--bias_keep', nargs='+', default=None,
                   help='bias mode: convs (fnmatch patterns of their names) that keep their bias '
                   '(default: the model\'s first conv and its attention convs)')
    p.add_argument('--drop_blocks', type=int, nargs='+', default=None, help='block mode: 1-based blocks')
    p.add_argument('--loss', default='l1', choices=['l1', 'l2'], help='fine-tuning loss')
    p.add_argument('--output', default=None, help='final pruned model (default OUT_DIR/pruned.pth)')
    p.add_argument('--out_dir', default=None, help='logs and per-step checkpoints (required '
                   'unless --sensitivity)')
    p.add_argument('--steps', type=int, default=16)
    g = p.add_mutually_exclusive_group()
    g.add_argument('--ratio', type=float, default=None, help='share of prunable channels removed (0–1)')
    g.add_argument('--target_params', type=float, default=None)
    g.add_argument('--target_flops', type=float, default=None, help='NTIRE hook FLOPs at 256²')
    g.add_argument('--target_latency_ms', type=float, default=None, help='256² LR on --device')
    p.add_argument('--importance', default='l1', help=f'one of {", ".join(IMPORTANCE_NAMES)}; '
                   'taylor for 0–255 models (magnitude misses the large-activation residual channels)')
    p.add_argument('--round_to', type=int, default=None, help='keep widths multiples of this')
    p.add_argument('--finetune_iters', type=int, default=100, help='0: no fine-tuning')
    p.add_argument('--finetune_last', type=int, default=None,
                   help='channel mode: fine-tuning steps after the last pruning step; the number '
                   'ramps linearly from --finetune_iters after the first (same total as a constant '
                   'mean), so that more fine-tuning goes where fewer channels are left')
    p.add_argument('--distill', action='store_true', help='fine-tune with output distillation '
                   'from the unpruned model as well as the --loss on the HR patch')
    p.add_argument('--teacher', default=None, help='with --distill: this checkpoint instead of the '
                   'unpruned model (e.g. the equivalent, cheaper BranchRFDN)')
    p.add_argument('--no_before', action='store_true',
                   help='skip measuring PSNR before each fine-tuning (saves one evaluation per step)')
    p.add_argument('--no_timing', action='store_true',
                   help='leave the 256² runtime out of the pruning log (it is noise when other '
                   'jobs share the device; FMP mode never times); not with --target_latency_ms')
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--patch_size', type=int, default=64)
    p.add_argument('--data_dir', nargs='+', default=None)
    p.add_argument('--val_hr_dir', default=os.path.join(SHARED, 'benchmark', 'Set5', 'HR'))
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--resume', action='store_true', help='continue after the last completed step')
    return parse_with_config(p, argv)


def budget_of(args, model):
    for metric, value in (('params', args.target_params), ('flops', args.target_flops),
                          ('latency_ms', args.target_latency_ms)):
        if value is not None:
            if value <= 0:
                raise UserError(f'--target_{metric} must be positive')
            current = size_of(model, metric, args.device)
            target = value * current if value <= 1 else value
            if target >= current:
                raise UserError(f'--target_{metric} {target:.4g} is not below the current {current:.4g}')
            return metric, target
    return None


def check_args(args) -> None:
    """Every option range and output location, before anything is loaded or written:
    UserError naming the flag."""
    for flag in ('steps', 'batch_size', 'patch_size', 'round_to', 'kernel_prune', 'finetune_last'):
        check_option(f'--{flag}', getattr(args, flag), at_least=1)
    for flag in ('finetune_iters', 'workers'):
        check_option(f'--{flag}', getattr(args, flag), at_least=0)
    check_option('--lr', args.lr, above=0, below=1)
    check_option('--ratio', args.ratio, above=0, below=1)
    check_option('--fmp_target', args.fmp_target, above=0, below=1)
    for metric in ('params', 'flops', 'latency_ms'):
        check_option(f'--target_{metric}', getattr(args, f'target_{metric}'), above=0)
    if args.sensitivity:  # prints a table, writes nothing
        return
    if args.no_timing and args.target_latency_ms is not None:
        raise UserError('--target_latency_ms needs the runtime of every step: drop --no_timing')
    if not args.out_dir:
        raise UserError('--out_dir is required (unless --sensitivity)')
    if args.mode == 'fmp':
        if args.fmp_metric not in METRICS:
            raise UserError(f'--fmp_metric must be one of {", ".join(METRICS)}, got "{args.fmp_metric}"')
        if args.fmp_criterion not in CRITERIA:
            raise UserError(f'--fmp_criterion must be one of {", ".join(CRITERIA)}, '
                            f'got "{args.fmp_criterion}"')
        if args.fmp_target is None:
            raise UserError('--mode fmp needs --fmp_target FRACTION (remaining share, e.g. 0.6)')
    check_output_dir(args.out_dir, '--out_dir')
    output = args.output or os.path.join(args.out_dir, 'pruned.pth')
    check_output_file(output, '--output', inputs=[args.input, args.teacher])


def main(argv=None) -> int:
    args = parse_args(argv)
    check_device('--device', args.device)
    try:
        code = run(args)
    except NonFiniteLossError as exc:  # in a fine-tuning round
        raise UserError(f'{exc} (lower --lr)') from None
    if code == 0 and args.out_dir and not args.sensitivity:
        # every option of the finished run, as a recipe that --config reads back
        write_resolved_config(args, os.path.join(args.out_dir, 'config.yaml'))
    return code


def run(args) -> int:
    check_args(args)
    make_importance(args.importance)
    model = load_recognised_model(args.input, device=args.device, what='--input')
    if args.sensitivity:
        if args.mode == 'kernel':
            return print_sensitivity(model, args)
        if args.mode == 'block':
            return print_block_sensitivity(model, args)
        raise UserError('--sensitivity is for --mode kernel or --mode block')
    if not args.out_dir:
        raise UserError('--out_dir is required')
    if args.finetune_last is not None and args.mode != 'channel':
        raise UserError('--finetune_last is for --mode channel')
    if args.mode == 'fmp':
        return fmp_mode(model, args)
    if args.mode != 'channel':
        return other_modes(model, args)
    budget = budget_of(args, model)
    if budget is None and args.ratio is None:
        args.ratio = 0.9
    if args.ratio is not None and not 0 < args.ratio < 1:
        raise UserError(f'--ratio must be in (0, 1), got {args.ratio}')
    val_set = validation_set_of(args, model)
    finetune, cache = finetuner_and_data(model, args)
    ramp = None
    if args.finetune_last is not None and finetune is not None:
        ramp = finetune_ramp(args.finetune_iters, args.finetune_last, args.steps)
        print(f'fine-tuning steps after each pruning step: {", ".join(map(str, ramp))} ({sum(ramp)} in all)')

    def grad_batch(step=0):
        # a different batch at every step; seeded, so a resumed run draws the same ones
        return PatchBatches(cache, args.batch_size, [(args.patch_size, 1)], args.seed + 7919)[step]

    try:
        model, rows = iterative_prune(
            model, out_dir=args.out_dir, steps=args.steps, ratio=args.ratio if budget is None else None,
            budget=budget, importance=args.importance, round_to=args.round_to, finetune=finetune,
            val_set=val_set, device=args.device, grad_batch_fn=grad_batch if cache else None,
            resume=args.resume, measure_before=not args.no_before, finetune_iters=ramp,
            timing=not args.no_timing)
    except ScheduleMismatchError as exc:
        raise UserError(f'--resume: {exc}') from None
    output = args.output or os.path.join(args.out_dir, 'pruned.pth')
    return write_result(model, rows, output)


def validation_set_of(args, model):
    """The --val_hr_dir set (LR by MATLAB bicubic), or None for --val_hr_dir none."""
    return folder_set(args.val_hr_dir, None, model.scale) if args.val_hr_dir not in (None, 'none') else None


def write_result(model, rows: list, output: str) -> int:
    save_state_dict(model.state_dict(), output)
    first, last = rows[0], rows[-1]
    print(f'wrote {output}: params {first["params_M"]:.4f} -> {last["params_M"]:.4f} M, '
          f'FLOPs {first["flops_G"]:.2f} -> {last["flops_G"]:.2f} G'
          + (f', PSNR-Y {first["psnr_y"]:.3f} -> {last["psnr_y"]:.3f} dB' if 'psnr_y' in last else ''))
    return 0


def print_sensitivity(model, args) -> int:
    val_set = folder_set(args.val_hr_dir, None, model.scale)
    rows = psnr_drop_table(model, eligible_convs(model), val_set, args.device)
    rows.sort(key=lambda r: -r['centre_share'])
    print(f'sensitivity of every k×k conv on {val_set.name} (no fine-tuning), by centre-tap share:')
    print(f'{"conv":<20} {"centre share":>12} {"PSNR-Y drop dB":>15}')
    for r in rows:
        print(f'{r["name"]:<20} {r["centre_share"]:>12.3f} {r["psnr_y_drop"]:>15.2f}')
    return 0


def print_block_sensitivity(model, args) -> int:
    val_set = folder_set(args.val_hr_dir, None, model.scale)
    try:
        rows = block_drop_table(model, val_set, args.device)
    except TypeError as exc:
        raise UserError(str(exc)) from None
    print(f'{type(model).__name__}: PSNR-Y on {val_set.name} with one block dropped (no fine-tuning), '
          'safest first:')
    print(f'{"block":>5} {"PSNR-Y dB":>10} {"drop dB":>8}')
    for r in rows:
        print(f'{r["block"]:>5} {r["psnr_y"]:>10.3f} {r["psnr_y_drop"]:>8.3f}')
    return 0


def finetuner_and_data(model, args):
    """(a Finetuner, `finetune(model, post_step=None)`, or None; the training-image index or
    None) for every mode. With --distill the teacher is --teacher or a frozen copy of `model`
    as it is now. The index is also built without fine-tuning when Taylor importance needs
    batches.
    """
    if args.finetune_iters <= 0 and args.importance != 'taylor':
        return None, None
    data_dirs = args.data_dir or default_training_dirs()
    cache = TrainingSet(find_training_pairs(data_dirs, model.scale), model.scale, args.patch_size)
    if args.finetune_iters <= 0:
        return None, cache
    teacher = (load_recognised_model(args.teacher, device=args.device, what='--teacher') if args.teacher else
               copy.deepcopy(model).eval()) if args.distill else None
    settings = FinetuneSettings(iters=args.finetune_iters, lr=args.lr, batch_size=args.batch_size,
                                patch_size=args.patch_size, loss=args.loss, workers=args.workers,
                                seed=args.seed, device=args.device)
    return make_finetuner(settings, cache, args.out_dir, teacher), cache


def fmp_mode(model, args) -> int:
    """Joint channel + weight pruning to a budget (utils/compress/fmp.py)."""
    val_set = validation_set_of(args, model)
    finetune, cache = finetuner_and_data(model, args)
    calib = None
    if finetune is not None:  # the 'total' rule's calibration patches come from the training images
        calib = PatchBatches(cache, min(args.batch_size, 8), [(args.patch_size, 1)], args.seed)[0]
    settings = FmpSettings(target=args.fmp_target, metric=args.fmp_metric, criterion=args.fmp_criterion,
                           importance=args.importance)
    output = args.output or os.path.join(args.out_dir, 'pruned.pth')
    run_fmp(model, settings, out_dir=args.out_dir, output=output, val_set=val_set, finetune=finetune,
            calib_batch=calib, device=args.device)
    return 0


def other_modes(model, args) -> int:
    """kernel / bias / block pruning, each followed by fine-tuning."""
    val_set = validation_set_of(args, model)
    output = args.output or os.path.join(args.out_dir, 'pruned.pth')
    if args.mode == 'block':
        if not args.drop_blocks:
            raise UserError('--mode block needs --drop_blocks')
        try:
            model = drop_blocks(model, args.drop_blocks).to(args.device)
        except (ValueError, TypeError) as exc:
            raise UserError(str(exc)) from None
    if args.mode == 'kernel':
        if args.kernel_prune is None and args.target_latency_ms is None:
            raise UserError('--mode kernel needs --kernel_prune K or --target_latency_ms')
        if val_set is None:
            raise UserError('kernel pruning ranks convs on the validation images: give --val_hr_dir')
        finetune, _ = finetuner_and_data(model, args)
        model, rows = progressive_kernel_prune(
            model, out_dir=args.out_dir, count=args.kernel_prune,
            target_latency_ms=args.target_latency_ms, finetune=finetune, val_set=val_set,
            device=args.device, timing=not args.no_timing)
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        rows = [{'step': 0, **measure_row(model, val_set, args.device, not args.no_timing)}]
        if args.mode == 'bias':
            removed = bias_prune(model, args.bias_keep)
            print(f'removed the biases of {len(removed)} convs: {", ".join(removed)}')
        finetune, _ = finetuner_and_data(model, args)
        before = psnr_only(model, val_set, args.device) if finetune is not None and val_set is not None else None
        if finetune is not None:
            finetune(model)
        rows.append({'step': 1, **measure_row(model, val_set, args.device, not args.no_timing),
                     'psnr_y_before_ft': before})
        save_state_dict(model.state_dict(), os.path.join(args.out_dir, 'step_01.pth'))
        write_logs(rows, args.out_dir)
    return write_result(model, rows, output)


if __name__ == '__main__':
    run_cli(main, 'interrupted: completed steps are kept in --out_dir; --resume continues')

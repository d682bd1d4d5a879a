"""The iterative prune → fine-tune → evaluate loop of `prune.py`.

After every completed step the pruned model is written atomically as
OUT_DIR/step_XX.pth (plain state_dict) and a row is appended to OUT_DIR/prune_log.csv and
prune_log.json; an interrupted run therefore keeps every completed step, and `--resume`
continues after the last one.
"""
from __future__ import annotations

import copy
import csv
import glob
import io
import json
import os
import re

import torch

from models import load_model
from utils.compress.kernel_pruning import centre_tap_share, eligible_convs, replace_with_1x1
from utils.compress.pruning import (
    build_pruner,
    conv_widths,
    make_importance,
    prepare_for_pruning,
    prune_step,
    prune_to_budget,
    schedule_ratios,
    size_of,
)
from utils.engine.evaluate import evaluate
from utils.io.atomic import atomic_path, atomic_write_text
from utils.io.checkpoint import remove_stale_temp_files, save_state_dict
from utils.io.errors import UserError
from utils.io.image_io import uint8_to_tensor
from utils.metrics.model_summary import count_params, fvcore_flops, measure_runtime, ntire_flops


class ScheduleMismatchError(UserError):
    """A resumed run asks for another schedule (steps, ratio, budget) than the one it was
    started with."""


def measure_row(model, val_set, device, timing: bool = True) -> dict:
    """One pruning-log row: params, FLOPs at a 256² LR (NTIRE hooks and fvcore), the median of
    three timed 256² calls (`cpu_ms_256`, left out without `timing`) and, with a validation
    set, its mean PSNR-Y."""
    row = {'params_M': count_params(model) / 1e6, 'flops_G': ntire_flops(model) / 1e9,
           'fvcore_G': fvcore_flops(model) / 1e9}
    if timing:
        x = torch.rand(1, 3, 256, 256, device=device) * model.input_range
        row['cpu_ms_256'] = measure_runtime(model, x, warmup=1, repeats=3)['median_ms']
    if val_set is not None:
        res = evaluate(model.eval(), val_set, device, progress=False, warmup=False)
        row['psnr_y'] = sum(res['psnr_y']) / len(res['psnr_y'])
    return row


def psnr_only(model, val_set, device) -> float:
    res = evaluate(model.eval(), val_set, device, progress=False, warmup=False)
    return sum(res['psnr_y']) / len(res['psnr_y'])


def plot_log(rows: list, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pts = [(r['flops_G'], r['psnr_y'], r['step']) for r in rows if r.get('psnr_y') is not None]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o')
    for f, q, s in pts:
        ax.annotate(str(s), (f, q), fontsize=7, xytext=(3, 3), textcoords='offset points')
    ax.set_xlabel('FLOPs (G, NTIRE hooks, 256×256 LR)')
    ax.set_ylabel('validation PSNR-Y (dB)')
    ax.set_title('pruning steps (label = step)')
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_logs(rows: list, out_dir: str) -> None:
    """prune_log.csv, prune_log.json (every row) and the PSNR-vs-FLOPs plot, atomically."""
    keys = ['step', 'ratio', 'conv', 'centre_share', 'params_M', 'flops_G', 'fvcore_G', 'cpu_ms_256',
            'psnr_y', 'psnr_y_before_ft']
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=keys, extrasaction='ignore')
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(os.path.join(out_dir, 'prune_log.csv'), table.getvalue())
    atomic_write_text(os.path.join(out_dir, 'prune_log.json'), json.dumps(rows, indent=1))
    plot_log(rows, os.path.join(out_dir, 'prune_psnr_flops.png'))


def last_completed_step(out_dir: str) -> tuple[int, str | None]:
    steps = []
    for p in glob.glob(os.path.join(out_dir, 'step_*.pth')):
        m = re.search(r'step_(\d+)\.pth$', p)
        if m:
            steps.append((int(m.group(1)), p))
    return max(steps) if steps else (0, None)


def finetune_ramp(first: int, last: int, steps: int) -> list:
    """Fine-tuning steps after each of `steps` pruning steps, from `first` after the first to
    `last` after the last, linear in between and rounded so that the total is
    round(steps · (first + last) / 2), that of the exact ramp."""
    if steps == 1:
        return [last]
    exact = [first + (last - first) * k / (steps - 1) for k in range(steps)]
    cumulative = [round(sum(exact[:k + 1])) for k in range(steps)]
    return [c - p for c, p in zip(cumulative, [0] + cumulative[:-1])]


def iterative_prune(model, *, out_dir: str, steps: int, ratio: float | None = None,
                    budget: tuple | None = None, importance: str = 'l1', round_to: int | None = None,
                    finetune=None, val_set=None, device='cpu', grad_batch_fn=None,
                    resume: bool = False, progress=print, measure_before: bool = True,
                    finetune_iters: list | None = None, timing: bool = True) -> tuple:
    """Prune `model` in `steps` steps, fine-tuning after each with `finetune(model)`
    (`finetune(model, iters=finetune_iters[k])` after step k + 1 when a per-step list is given).

    Either `ratio` (share of prunable channels removed in all, spread linearly over the
    steps as in the PRFDN paper) or `budget` = (metric, target) with metric in params / flops /
    latency_ms: each step aims at a geometric interpolation between the start and the
    target, and the last lands within 2% of it (a step whose goal an earlier step already
    passed prunes nothing and only fine-tunes, logged with ratio 0). Without `timing` the rows
    carry no 256² runtime (a latency budget needs it). Returns (model, rows).
    """
    if finetune_iters is not None and len(finetune_iters) != steps:
        raise ValueError(f'{len(finetune_iters)} fine-tuning lengths for {steps} steps')
    make_importance(importance)                     # unknown names fail before any work
    if not timing and budget is not None and budget[0] == 'latency_ms':
        raise UserError('a latency target needs the runtime of every step, and timing is off')
    if steps < 1:
        raise UserError(f'the number of steps must be at least 1, got {steps}')
    os.makedirs(out_dir, exist_ok=True)
    model = prepare_for_pruning(model)
    build_pruner(copy.deepcopy(model).eval(), 0.5, make_importance('l1'), round_to)  # traceable?
    plan_path = os.path.join(out_dir, 'plan.json')
    plan = {'steps': steps, 'ratio': ratio, 'budget': budget, 'importance': importance,
            'round_to': round_to, 'finetune_iters': finetune_iters}
    rows = []
    start = 0
    if resume:
        stale = remove_stale_temp_files(out_dir)  # saves that a kill interrupted
        if stale:
            progress(f'removed {len(stale)} temporary file(s) of an interrupted save: {", ".join(stale)}')
        start, path = last_completed_step(out_dir)
        if path:
            with open(plan_path) as f:
                saved = json.load(f)
            if saved['steps'] != steps or saved['ratio'] != ratio or \
                    (saved['budget'] and list(saved['budget'][:2]) != list(budget or [])[:2]) or \
                    saved.get('finetune_iters') != finetune_iters:
                raise ScheduleMismatchError(f'the schedule differs from {plan_path}')
            plan = saved
            model = prepare_for_pruning(load_model(path, device=device))
            with open(os.path.join(out_dir, 'prune_log.json')) as f:
                rows = json.load(f)[:start + 1]
            progress(f'resumed after step {start} ({path})')
    if budget is not None:
        metric, target = budget
        if 'start_value' not in plan:
            plan['start_value'] = size_of(model, metric, device)
        if target >= plan['start_value']:
            raise UserError(f'target {metric} {target:.4g} is not below the current '
                            f'{plan["start_value"]:.4g}')
    if not rows:
        rows = [{'step': 0, 'ratio': 0.0, **measure_row(model, val_set, device, timing)}]
        write_logs(rows, out_dir)
    atomic_write_text(plan_path, json.dumps(plan, indent=1))
    ratios = schedule_ratios(ratio, steps) if budget is None else None
    for step in range(start + 1, steps + 1):
        grad_batch = grad_batch_fn(step) if (importance == 'taylor' and grad_batch_fn) else None
        if budget is None:
            r = ratios[step - 1]
            prune_step(model, r, importance, round_to, grad_batch)
        else:
            metric, target = budget
            s0 = plan['start_value']
            goal = s0 * (target / s0) ** (step / steps)
            current = size_of(model, metric, device)
            if current <= goal:
                # channel groups can be coarse (RFDN's residual width spans every block), so an
                # earlier step may have landed below this step's goal: this step only fine-tunes
                progress(f'step {step}/{steps}: {metric} {current:.4g} is already at or below '
                         f'this step\'s goal {goal:.4g}; fine-tuning only')
                r = 0.0
            else:
                model, _ = prune_to_budget(model, metric, goal, importance, round_to, grad_batch,
                                           device=device)
                r = None
        before = None
        if finetune is not None and val_set is not None and measure_before:
            before = psnr_only(model, val_set, device)
        if finetune is not None and finetune_iters is not None:
            finetune(model, iters=finetune_iters[step - 1])
        elif finetune is not None:
            finetune(model)
        row = {'step': step, 'ratio': r, **measure_row(model, val_set, device, timing),
               'psnr_y_before_ft': before, 'widths': conv_widths(model)}
        if finetune is not None and finetune_iters is not None:
            row['finetune_iters'] = finetune_iters[step - 1]
        rows.append(row)
        save_state_dict(model.state_dict(), os.path.join(out_dir, f'step_{step:02d}.pth'))
        write_logs(rows, out_dir)
        time_text = f', {row["cpu_ms_256"]:.0f} ms' if 'cpu_ms_256' in row else ''
        psnr_text = f', PSNR-Y {row["psnr_y"]:.3f} dB' if 'psnr_y' in row else ''
        progress(f'step {step}/{steps}: params {row["params_M"]:.4f} M, FLOPs {row["flops_G"]:.2f} G'
                 f'{time_text}{psnr_text}')
        if budget is not None:
            metric, target = budget
            value = size_of(model, metric, device) if metric != 'latency_ms' else row['cpu_ms_256']
            if abs(value - target) <= 0.02 * target or value < target:
                break
    return model, rows


def progressive_kernel_prune(model, *, out_dir: str, count: int | None = None,
                             target_latency_ms: float | None = None, finetune=None,
                             val_set=None, device='cpu', progress=print, timing: bool = True) -> tuple:
    """AdvancedSR's stage 1: replace eligible k×k convs by 1×1 (centre-weight init) one at a
    time, the conv whose response relies most on its centre tap first (re-measured after
    every replacement), fine-tuning in between; stop after `count` convs or once the
    256² latency is at or below `target_latency_ms` (which needs `timing`)."""
    if count is None and target_latency_ms is None:
        raise UserError('kernel pruning needs a number of convs or a target latency')
    if target_latency_ms is not None and not timing:
        raise UserError('a latency target needs the runtime of every step, and timing is off')
    if val_set is None:
        raise UserError('kernel pruning ranks convs on the validation images: no validation set given')
    os.makedirs(out_dir, exist_ok=True)
    images = [uint8_to_tensor(item.load_lr(), model.input_range).to(device) for item in val_set.items]
    rows = [{'step': 0, 'ratio': None, **measure_row(model, val_set, device, timing)}]
    write_logs(rows, out_dir)
    step = 0
    while True:
        if count is not None and step >= count:
            break
        if target_latency_ms is not None and rows[-1]['cpu_ms_256'] <= target_latency_ms:
            break
        candidates = eligible_convs(model)
        if not candidates:
            progress('no k×k conv left to prune')
            break
        shares = centre_tap_share(model, images, candidates)
        name = max(shares, key=shares.get)
        replace_with_1x1(model, [name])
        step += 1
        before = psnr_only(model, val_set, device) if finetune else None
        if finetune is not None:
            finetune(model)
        row = {'step': step, 'ratio': None, 'conv': name, 'centre_share': shares[name],
               **measure_row(model, val_set, device, timing), 'psnr_y_before_ft': before}
        rows.append(row)
        save_state_dict(model.state_dict(), os.path.join(out_dir, f'step_{step:02d}.pth'))
        write_logs(rows, out_dir)
        time_text = f', {row["cpu_ms_256"]:.0f} ms' if 'cpu_ms_256' in row else ''
        progress(f'step {step}: {name} (centre share {shares[name]:.3f}) -> 1×1; '
                 f'{row["flops_G"]:.2f} G{time_text}, PSNR-Y {row["psnr_y"]:.3f} dB')
    return model, rows

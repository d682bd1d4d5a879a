"""Evaluation the way the NTIRE ESR scripts do it, for `test_demo.py` and `train.py`.

`evaluate(model, eval_set, ...)` runs one model over one set and returns per-image PSNR
(RGB and Y, border = scale), optional SSIM-Y, and per-image runtime; `model_record`
adds the complexity figures; `write_results` writes results.json / results.txt and the
PSNR-vs-runtime plot atomically.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from .datasets import EvalSet
from .image_io import imwrite_rgb, tensor_to_uint8, uint8_to_tensor
from .inference import super_resolve_tensor
from .matlab_functions import imresize
from .metrics import calculate_psnr, calculate_ssim
from .model_summary import PeakMemory, measure_runtime, summarize


class BicubicUpsampler:
    """The reference row: MATLAB bicubic upsampling of the LR image (no parameters)."""

    scale: int
    input_range = 255.0
    min_input_size = 1

    def __init__(self, scale: int):
        self.scale = scale

    def upsample(self, lr: np.ndarray) -> np.ndarray:
        return imresize(lr, float(self.scale))


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def evaluate(model, eval_set: EvalSet, device='cpu', tile: int | None = None,
             tile_overlap: int = 32, fp16: bool = False, ssim: bool = False,
             save_dir: str | None = None, progress: bool = True, warmup: bool = True) -> dict:
    """Run `model` (an SRModel or a BicubicUpsampler) over `eval_set`.

    Returns {'psnr': [...], 'psnr_y': [...], 'ssim_y': [...], 'runtime': [...] (ms),
    'names': [...], 'memory': MB}; PSNR lists are empty for sets without HR.
    Runtime covers the network only (CUDA events on a GPU, perf_counter on the CPU).
    """
    device = torch.device(device)
    scale = eval_set.scale
    out = {'names': [], 'psnr': [], 'psnr_y': [], 'ssim_y': [], 'runtime': []}
    is_bicubic = isinstance(model, BicubicUpsampler)
    value_range = getattr(model, 'input_range', 255.0)
    bar = tqdm(eval_set.items, desc=f'{eval_set.name}', unit='img', disable=not progress,
               leave=False, dynamic_ncols=True)
    with PeakMemory(device) as mem:
        for i, item in enumerate(bar):
            lr = item.load_lr()
            if is_bicubic:
                t0 = time.perf_counter()
                sr = model.upsample(lr)
                ms = (time.perf_counter() - t0) * 1000.0
            else:
                x = uint8_to_tensor(lr, value_range)
                x = x.to(device) if isinstance(model, torch.nn.Module) else x
                if fp16:
                    x = x.half()
                if warmup and i == 0:  # first call pays for allocator/kernel set-up
                    super_resolve_tensor(model, x, scale, tile, tile_overlap)
                _sync(device)
                if device.type == 'cuda' and isinstance(model, torch.nn.Module):
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    y = super_resolve_tensor(model, x, scale, tile, tile_overlap)
                    end.record()
                    torch.cuda.synchronize(device)
                    ms = start.elapsed_time(end)
                else:
                    t0 = time.perf_counter()
                    y = super_resolve_tensor(model, x, scale, tile, tile_overlap)
                    ms = (time.perf_counter() - t0) * 1000.0
                sr = tensor_to_uint8(y.float(), value_range)
            out['names'].append(item.name)
            out['runtime'].append(ms)
            if save_dir:
                imwrite_rgb(os.path.join(save_dir, f'{item.name}x{scale}.png'), sr)
            if item.load_hr is not None:
                hr = item.load_hr()
                out['psnr'].append(calculate_psnr(sr, hr, border=scale))
                out['psnr_y'].append(calculate_psnr(sr, hr, border=scale, y_channel=True))
                if ssim:
                    out['ssim_y'].append(calculate_ssim(sr, hr, border=scale, y_channel=True))
                bar.set_postfix(psnr_y=f'{out["psnr_y"][-1]:.2f}')
    out['memory'] = mem.peak_mb
    return out


def mean_psnr_y(model, eval_set: EvalSet, device='cpu') -> float:
    """Mean PSNR-Y (dB, border = scale) of `model` on `eval_set`, no warm-up, no progress
    bar: the number the sensitivity tables compare. ValueError if the set has no HR."""
    res = evaluate(model, eval_set, device=device, progress=False, warmup=False)
    if not res['psnr_y']:
        raise ValueError(f'{eval_set.name} has no HR images: PSNR cannot be measured')
    return float(np.mean(res['psnr_y']))


def complexity(model, runtime_input: tuple | None = (3, 256, 256), device='cpu') -> dict:
    """Params (M), FLOPs (G, NTIRE hooks and fvcore), activations (M), #conv, and the
    median runtime (ms) of 5 runs on a 1×3×256×256 input (after 2 warm-up runs)."""
    if isinstance(model, BicubicUpsampler):
        rec = {'num_parameters': 0.0, 'flops': 0.0, 'flops_fvcore': 0.0, 'activations': 0.0,
               'num_conv': 0}
        if runtime_input:
            lr = np.random.default_rng(0).integers(0, 256, (*runtime_input[1:], 3), dtype=np.uint8)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model.upsample(lr)
                times.append((time.perf_counter() - t0) * 1000.0)
            rec['runtime_256'] = statistics.median(times)
        return rec
    rec = summarize(model, with_thop=False)
    if runtime_input:
        p = next(model.parameters())
        x = torch.rand(1, *runtime_input, device=p.device, dtype=p.dtype) * model.input_range
        rec['runtime_256'] = measure_runtime(model, x, warmup=2, repeats=5)['median_ms']
    return rec


def set_record(prefix: str, result: dict) -> dict:
    """The NTIRE-style keys for one set: {prefix}_ave_psnr, {prefix}_psnr, ..."""
    mean = (lambda v: float(np.mean(v)) if v else None)
    rec = {
        f'{prefix}_ave_psnr': mean(result['psnr']),
        f'{prefix}_ave_psnr_y': mean(result['psnr_y']),
        f'{prefix}_ave_runtime': mean(result['runtime']),
        f'{prefix}_median_runtime': float(np.median(result['runtime'])),
        f'{prefix}_memory': result['memory'],
        f'{prefix}_psnr': result['psnr'],
        f'{prefix}_psnr_y': result['psnr_y'],
        f'{prefix}_runtime': result['runtime'],
    }
    if result['ssim_y']:
        rec[f'{prefix}_ave_ssim_y'] = mean(result['ssim_y'])
    return rec


def _atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_', dir=folder)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def results_lines(results: dict, sets: list) -> list:
    """One line per model in the NTIRE results.txt layout (extra sets appended)."""
    lines = []
    for label, r in results.items():
        parts = []
        for s in sets:
            psnr = r.get(f'{s}_ave_psnr')
            psnr_y = r.get(f'{s}_ave_psnr_y')
            tag = 'Val' if s == 'valid' else ('Test' if s == 'test' else s)
            if psnr is not None:
                parts.append(f'{tag} PSNR: {psnr:2.2f} (Y {psnr_y:2.2f})')
            parts.append(f'{tag} Time: {r[f"{s}_ave_runtime"]:3.2f} ms')
        parts += [f'Params: {r["num_parameters"]:2.3f}M', f'FLOPs: {r["flops"]:2.2f}G',
                  f'FLOPs(fvcore): {r["flops_fvcore"]:2.2f}G', f'Acts: {r["activations"]:2.2f}M',
                  f'Mem: {r[f"{sets[0]}_memory"]:2.2f}M', f'Conv: {r["num_conv"]:4d}']
        lines.append(f'{label:<24} ' + ', '.join(parts))
    return lines


def results_table(results: dict, sets: list) -> str:
    """A plain-text table for the console and the README."""
    head = ['model']
    for s in sets:
        head += [f'{s} PSNR', f'{s} PSNR-Y', f'{s} ms']
    head += ['256² ms', 'Params M', 'FLOPs G', 'fvcore G', 'Acts M', '#Conv']
    rows = [head]
    fmt = (lambda v, spec: '-' if v is None else format(v, spec))
    for label, r in results.items():
        row = [label]
        for s in sets:
            row += [fmt(r.get(f'{s}_ave_psnr'), '.2f'), fmt(r.get(f'{s}_ave_psnr_y'), '.2f'),
                    fmt(r.get(f'{s}_ave_runtime'), '.1f')]
        row += [fmt(r.get('runtime_256'), '.1f'), fmt(r['num_parameters'], '.3f'),
                fmt(r['flops'], '.2f'), fmt(r['flops_fvcore'], '.2f'),
                fmt(r['activations'], '.2f'), str(r['num_conv'])]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [' | '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, '-+-'.join('-' * w for w in widths))
    return '\n'.join(lines)


def results_markdown(results: dict, sets: list) -> str:
    """The README's table (GitHub markdown): PSNR-Y and PSNR per set, SSIM-Y of the first set
    when measured, CPU/GPU median ms at 256² LR, ms per image of the first set, complexity."""
    first = sets[0]
    has_ssim = any(r.get(f'{first}_ave_ssim_y') is not None for r in results.values())
    head = ['model']
    for s in sets:
        head += [f'{s} PSNR-Y', f'{s} PSNR']
    head += [f'{first} SSIM-Y'] if has_ssim else []
    head += ['ms 256² (median)', f'{first} ms/img', 'params M', 'FLOPs G', 'fvcore G', 'acts M', '#conv']
    fmt = (lambda v, spec: '–' if v is None else format(v, spec))
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for label, r in results.items():
        row = [label]
        for s in sets:
            row += [fmt(r.get(f'{s}_ave_psnr_y'), '.2f'), fmt(r.get(f'{s}_ave_psnr'), '.2f')]
        row += [fmt(r.get(f'{first}_ave_ssim_y'), '.4f')] if has_ssim else []
        row += [fmt(r.get('runtime_256'), '.0f'), fmt(r.get(f'{first}_ave_runtime'), '.1f'),
                fmt(r['num_parameters'], '.3f'), fmt(r['flops'], '.2f'), fmt(r['flops_fvcore'], '.2f'),
                fmt(r['activations'], '.2f'), str(r['num_conv'])]
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def plot_psnr_runtime(results: dict, set_name: str, path: str, title: str = '') -> None:
    """PSNR-Y against runtime for `set_name`; marker area proportional to #params."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for k, (label, r) in enumerate(results.items()):
        x, y = r.get(f'{set_name}_ave_runtime'), r.get(f'{set_name}_ave_psnr_y')
        if x is None or y is None:
            continue
        area = 20 + 1000 * r['num_parameters']
        ax.scatter([x], [y], s=area, alpha=0.6, label=f'{label} ({r["num_parameters"]:.3f} M)')
        # alternate label offsets: baselines often sit close together
        ax.annotate(label, (x, y), fontsize=8, xytext=(6, 8 if k % 2 == 0 else -12),
                    textcoords='offset points')
    ax.set_xlabel(f'runtime per image on {set_name} (ms, {results and next(iter(results.values())).get("device", "")})')
    ax.set_ylabel(f'PSNR-Y on {set_name} (dB)')
    ax.set_title(title or 'PSNR vs runtime (marker area ∝ parameters)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right', markerscale=0.5)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_', suffix='.png', dir=folder)
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(results: dict, sets: list, json_path: str, txt_path: str,
                  plot_path: str | None, md_path: str | None = None) -> None:
    """results.json, results.txt (NTIRE layout), results.md (markdown table) and the plot,
    each written atomically."""
    _atomic_write_text(json_path, json.dumps(results, indent=2) + '\n')
    _atomic_write_text(txt_path, '\n'.join(results_lines(results, sets)) + '\n')
    if md_path:
        _atomic_write_text(md_path, results_markdown(results, sets) + '\n')
    if plot_path:
        plot_psnr_runtime(results, sets[0], plot_path)

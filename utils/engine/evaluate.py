"""Evaluation the way the NTIRE ESR scripts do it, for `test_demo.py` and `train.py`.

`evaluate(model, eval_set, ...)` runs one model over one set and returns per-image PSNR
(RGB and Y, border = scale), optional SSIM-Y, and per-image runtime; `complexity`
gives the complexity figures; `write_results` writes results.json / results.txt and the
PSNR-vs-runtime plot atomically.

No score without a check: before the first image of a set is scored, `check_output`
makes sure the model's output is finite (else `BadOutputError`, no score) and not far
below bicubic upsampling of the same LR (else a `ScoreWarning` naming the likely cause:
a model of the other input range, or an architecture that differs from the one its weights
were trained in). `preflight` runs the same check before an evaluation starts and, where
the input range was not forced, switches to the other range when that one is clearly right.
The check never changes a score: it only reads the first output.
"""
from __future__ import annotations

import json
import os
import statistics
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from utils.data.eval_sets import EvalSet
from utils.engine.inference import super_resolve_tensor
from utils.io.atomic import atomic_path, atomic_write_text
from utils.io.checkpoint import output_lock
from utils.io.errors import UserError
from utils.io.image_io import imwrite_rgb, tensor_to_uint8, uint8_to_tensor
from utils.io.matlab_functions import imresize
from utils.metrics.model_summary import (
    PeakMemory,
    count_params,
    fvcore_flops,
    measure_runtime,
    ntire_counts,
    sync,
    timed_call,
)
from utils.metrics.psnr_ssim import calculate_psnr, calculate_ssim

#: a first-image PSNR-Y more than this far below bicubic's (same LR, same HR) marks an output
#: as suspect (dB). Trained ×4 models beat bicubic by 1–4 dB on every benchmark image; a
#: model fed the wrong input range or built in the wrong architecture lands 10–25 dB below.
FAR_BELOW_BICUBIC_DB = 3.0
#: without HR (a test set): an output whose PSNR-Y against bicubic upsampling of its own LR
#: is below this is suspect (dB); trained models stay above 25 dB of bicubic, broken ones 6–15.
MIN_PSNR_Y_VS_BICUBIC_DB = 20.0


class ScoreWarning(UserWarning):
    """A score that is probably wrong: the model's output is far below bicubic upsampling."""


class BadOutputError(UserError):
    """A model output that has no score at all (NaN or Inf values)."""


class BicubicUpsampler:
    """The reference row: MATLAB bicubic upsampling of the LR image (no parameters)."""

    scale: int
    input_range = 255.0
    min_input_size = 1

    def __init__(self, scale: int):
        self.scale = scale

    def upsample(self, lr: np.ndarray) -> np.ndarray:
        return imresize(lr, float(self.scale))


def _range_text(value_range: float) -> str:
    return f'0–{value_range:g}'


def _psnr_y(sr: np.ndarray, ref: np.ndarray, border: int) -> float:
    return calculate_psnr(sr, ref, border=border, y_channel=True)


def _is_far_below(psnr_y: float, bicubic_psnr_y: float | None) -> bool:
    """Far below bicubic (with HR), or far from bicubic upsampling (without HR)."""
    if bicubic_psnr_y is None:
        return psnr_y < MIN_PSNR_Y_VS_BICUBIC_DB
    return psnr_y < bicubic_psnr_y - FAR_BELOW_BICUBIC_DB


@dataclass
class OutputCheck:
    """What `check_output` found on one image.

    `psnr_y` is against HR when the set has HR (`bicubic_psnr_y` is bicubic's), else against
    bicubic upsampling of the same LR (`bicubic_psnr_y` None). `other_*`: the same with the
    other input range (0–1 <-> 0–255), measured only when the output is suspect.
    """
    label: str
    image: str
    model_name: str
    is_entry: bool
    value_range: float
    nonfinite: int
    psnr_y: float | None
    bicubic_psnr_y: float | None
    other_range: float | None = None
    other_psnr_y: float | None = None
    nonfinite_weights: str = ''

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0

    @property
    def suspect(self) -> bool:
        return not self.finite or _is_far_below(self.psnr_y, self.bicubic_psnr_y)

    @property
    def other_range_right(self) -> bool:
        """The other input range gives a plausible output where this one does not."""
        if self.other_psnr_y is None or _is_far_below(self.other_psnr_y, self.bicubic_psnr_y):
            return False
        return self.psnr_y is None or self.other_psnr_y > self.psnr_y + FAR_BELOW_BICUBIC_DB

    def _scores(self) -> str:
        if self.bicubic_psnr_y is None:
            return f'PSNR-Y {self.psnr_y:.2f} dB against bicubic upsampling of its LR (no HR)'
        return f'PSNR-Y {self.psnr_y:.2f} dB, bicubic {self.bicubic_psnr_y:.2f} dB'

    def message(self, range_option: str | None = None) -> str:
        """One paragraph: what is wrong on which image, and the likely cause."""
        here = f'{self.label} on {self.image} with input range {_range_text(self.value_range)}'
        if not self.finite:
            text = f'{here}: the output has {self.nonfinite} NaN/Inf values, so it has no score'
            text += (f'; the weights hold non-finite values ({self.nonfinite_weights})'
                     if self.nonfinite_weights
                     else '; the weights are finite, so the forward pass overflows or divides by zero')
        else:
            text = f'{here}: {self._scores()} — far below bicubic'
        if self.other_range_right:
            other = _range_text(self.other_range)
            advice = f': pass {range_option} {self.other_range:g}' if range_option else ''
            text += (f'; with {other} input: PSNR-Y {self.other_psnr_y:.2f} dB, so it looks like a '
                     f'{other} model{advice}')
        elif self.finite:
            if self.other_psnr_y is not None:
                text += f' (with {_range_text(self.other_range)} input: {self.other_psnr_y:.2f} dB)'
            if self.is_entry:
                text += ('; likely cause: the entry\'s class or arguments do not fit the checkpoint, '
                         'or the weights are untrained or damaged')
            else:
                text += (f'; likely cause: the architecture differs from the recognised {self.model_name} '
                         '(e.g. a layer without weights that it lacks, such as a mean shift or a global '
                         'skip), or the weights are untrained or damaged')
        return text


def _nonfinite_weights(model) -> str:
    """'name (n values), ...' for the model's parameters and buffers that hold NaN/Inf."""
    if not isinstance(model, torch.nn.Module):
        return ''
    bad = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            n = int((~torch.isfinite(t)).sum())
            bad.append(f'{name}: {n} value{"s" if n > 1 else ""}')
    return ', '.join(bad[:3]) + (f' +{len(bad) - 3} more' if len(bad) > 3 else '')


def check_output(model, sr: torch.Tensor, lr: np.ndarray, hr: np.ndarray | None, scale: int,
                 label: str | None = None, image: str = 'the first image', tile: int | None = None,
                 tile_overlap: int = 32) -> OutputCheck:
    """Check one model output before it is scored; reads it, changes nothing.

    sr: (1, 3, sH, sW) model output in the model's range (0–`model.input_range`); lr: HxWx3
    uint8 LR it came from; hr: (sH)x(sW)x3 uint8 ground truth or None. Compares PSNR-Y with
    bicubic upsampling of `lr` (border = scale); if the output is non-finite or far below,
    runs the model once more with the other input range (0–1 <-> 0–255) to name the cause.
    """
    value_range = float(getattr(model, 'input_range', 255.0))
    name = getattr(model, 'model_name', type(model).__name__)
    bicubic = imresize(lr, float(scale))
    reference = hr if hr is not None else bicubic
    nonfinite = int((~torch.isfinite(sr)).sum())
    psnr_y = _psnr_y(tensor_to_uint8(sr.float(), value_range), reference, scale) if nonfinite == 0 else None
    check = OutputCheck(label or name, image, name, hasattr(model, 'range_declared'), value_range, nonfinite,
                        psnr_y, _psnr_y(bicubic, hr, scale) if hr is not None else None)
    if not check.suspect:
        return check
    if nonfinite:
        check.nonfinite_weights = _nonfinite_weights(model)
    if value_range in (1.0, 255.0):
        other = 256.0 - value_range
        x = uint8_to_tensor(lr, other).to(device=sr.device, dtype=sr.dtype)
        y = super_resolve_tensor(model, x, scale, tile, tile_overlap)
        check.other_range = other
        if torch.isfinite(y).all():
            check.other_psnr_y = _psnr_y(tensor_to_uint8(y.float(), other), reference, scale)
    return check


def _warn(check: OutputCheck, range_option: str | None) -> str:
    text = check.message(range_option)
    warnings.warn(text, ScoreWarning, stacklevel=3)
    return text


def enforce(check: OutputCheck, range_option: str | None = None) -> str | None:
    """Act on a check: non-finite output -> BadOutputError (no score can be given; a number
    computed from clamped NaNs would be silently wrong); far below bicubic -> ScoreWarning
    (the score stands: an untrained or heavily pruned model is a legitimate thing to measure).
    Returns the warning text (None when the output is fine)."""
    if not check.finite:
        raise BadOutputError(check.message(range_option))
    return _warn(check, range_option) if check.suspect else None


def preflight(model, eval_set: EvalSet, device='cpu', tile: int | None = None, tile_overlap: int = 32,
              fp16: bool = False, label: str | None = None, range_forced: bool = False,
              range_option: str | None = None, log=print) -> dict:
    """`check_output` on the first image of `eval_set`, before an evaluation starts.

    When the input range was not forced and the other range is clearly right, the model is
    switched to it (`model.input_range`) and `log` says so; a model whose family claims a
    range (every model but an entry without a declared range) also gets the ScoreWarning
    naming the range to pass. Otherwise as `enforce`. Returns {'warnings': the warnings
    about scores that stand, 'note': the range switch or None}. Costs one forward pass on
    the first image (two when the output is suspect).
    """
    item = eval_set.items[0]
    lr = item.load_lr()
    hr = item.load_hr() if item.load_hr is not None else None
    x = uint8_to_tensor(lr, getattr(model, 'input_range', 255.0))
    x = x.to(device) if isinstance(model, torch.nn.Module) else x
    if fp16:
        x = x.half()
    y = super_resolve_tensor(model, x, eval_set.scale, tile, tile_overlap)
    check = check_output(model, y, lr, hr, eval_set.scale, label, f'{eval_set.name}/{item.name}',
                         tile, tile_overlap)
    if check.other_range_right and not range_forced:
        claimed = getattr(model, 'range_declared', True)
        if claimed:
            _warn(check, range_option)
        model.input_range = check.other_range
        before = 'NaN/Inf output' if check.psnr_y is None else f'{check.psnr_y:.2f} dB'
        note = (f'{check.label}: '
                + (f'scoring with input range {_range_text(check.other_range)} instead of the '
                   f'{check.model_name} family\'s {_range_text(check.value_range)}' if claimed else
                   f'no input range declared; scoring with {_range_text(check.other_range)}, '
                   'the one that fits')
                + f' (PSNR-Y {check.other_psnr_y:.2f} dB on {check.image}, {before} with '
                + f'{_range_text(check.value_range)})'
                + (f'; {range_option} forces a range' if range_option else ''))
        log(note)
        return {'warnings': [], 'note': note}
    text = enforce(check, range_option)
    return {'warnings': [text] if text else [], 'note': None}


def evaluate(model, eval_set: EvalSet, device='cpu', tile: int | None = None,
             tile_overlap: int = 32, fp16: bool = False, ssim: bool = False,
             save_dir: str | None = None, progress: bool = True, warmup: bool = True,
             label: str | None = None, guard: bool = True, range_option: str | None = None) -> dict:
    """Run `model` (an SRModel or a BicubicUpsampler) over `eval_set`.

    Returns {'psnr': [...], 'psnr_y': [...], 'ssim_y': [...], 'runtime': [...] (ms),
    'names': [...], 'memory': MB, 'warnings': [...]}; PSNR lists are empty for sets without HR.
    Runtime covers the network only (CUDA events on a GPU, perf_counter on the CPU).
    `guard`: the first output goes through `check_output` before anything is scored (a
    non-finite output raises BadOutputError, one far below bicubic warns, naming `label`;
    `range_option` is the command-line flag that sets the input range, for the advice).
    """
    device = torch.device(device)
    scale = eval_set.scale
    out = {'names': [], 'psnr': [], 'psnr_y': [], 'ssim_y': [], 'runtime': [], 'warnings': []}
    is_bicubic = isinstance(model, BicubicUpsampler)
    value_range = getattr(model, 'input_range', 255.0)
    # CUDA events time a network on the GPU; anything else (bicubic, ONNX) runs on the CPU
    clock = device if isinstance(model, torch.nn.Module) else torch.device('cpu')
    bar = tqdm(eval_set.items, desc=f'{eval_set.name}', unit='img', disable=not progress,
               leave=False, dynamic_ncols=True)
    with PeakMemory(device) as mem:
        for i, item in enumerate(bar):
            lr = item.load_lr()
            hr = item.load_hr() if item.load_hr is not None else None
            if is_bicubic:
                sr, ms = timed_call(model.upsample, lr)
            else:
                x = uint8_to_tensor(lr, value_range)
                x = x.to(device) if isinstance(model, torch.nn.Module) else x
                if fp16:
                    x = x.half()
                if warmup and i == 0:  # first call pays for allocator/kernel set-up
                    super_resolve_tensor(model, x, scale, tile, tile_overlap)
                sync(device)
                y, ms = timed_call(super_resolve_tensor, model, x, scale, tile, tile_overlap, device=clock)
                if guard and i == 0:  # before the first score is computed or shown
                    check = check_output(model, y, lr, hr, scale, label, f'{eval_set.name}/{item.name}',
                                         tile, tile_overlap)
                    text = enforce(check, range_option)
                    if text:
                        out['warnings'].append(text)
                sr = tensor_to_uint8(y.float(), value_range)
            out['names'].append(item.name)
            out['runtime'].append(ms)
            if save_dir:
                imwrite_rgb(os.path.join(save_dir, f'{item.name}x{scale}.png'), sr)
            if hr is not None:
                out['psnr'].append(calculate_psnr(sr, hr, border=scale))
                out['psnr_y'].append(calculate_psnr(sr, hr, border=scale, y_channel=True))
                if ssim:
                    out['ssim_y'].append(calculate_ssim(sr, hr, border=scale, y_channel=True))
                bar.set_postfix(psnr_y=f'{out["psnr_y"][-1]:.2f}')
    out['memory'] = mem.peak_mb
    return out


def mean_psnr_y(model, eval_set: EvalSet, device='cpu', label: str | None = None) -> float:
    """Mean PSNR-Y (dB, border = scale) of `model` on `eval_set`, no warm-up, no progress
    bar: the number the sensitivity tables compare. ValueError if the set has no HR;
    guarded as `evaluate` (BadOutputError on a non-finite output)."""
    res = evaluate(model, eval_set, device=device, progress=False, warmup=False, label=label)
    if not res['psnr_y']:
        raise ValueError(f'{eval_set.name} has no HR images: PSNR cannot be measured')
    return float(np.mean(res['psnr_y']))


def _count(counter, model, what: str, label: str, log):
    """counter(model), or None (and a line through `log`) when it fails on an op it does not
    know: a published entry may use anything."""
    try:
        return counter(model)
    except Exception as exc:  # fvcore's tracer and the hooks fail in many ways
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        log(f'{label}: {what} could not be counted ({type(exc).__name__}: {first}); recorded as None')
        return None


def complexity(model, runtime_input: tuple | None = (3, 256, 256), device='cpu', label: str | None = None,
               log=print) -> dict:
    """Params (M), FLOPs (G, NTIRE hooks and fvcore), activations (M), #conv, and the
    median runtime (ms) of 5 runs on a 1×3×256×256 input (after 2 warm-up runs).
    A counter that fails on the model gives None (said through `log`), not an exception."""
    if isinstance(model, BicubicUpsampler):
        rec = {'num_parameters': 0.0, 'flops': 0.0, 'flops_fvcore': 0.0, 'activations': 0.0,
               'num_conv': 0}
        if runtime_input:
            lr = np.random.default_rng(0).integers(0, 256, (*runtime_input[1:], 3), dtype=np.uint8)
            rec['runtime_256'] = statistics.median([timed_call(model.upsample, lr)[1] for _ in range(5)])
        return rec
    label = label or type(model).__name__
    hooks = _count(ntire_counts, model, 'FLOPs and activations (NTIRE hooks)', label, log)
    flops_fvcore = _count(fvcore_flops, model, 'FLOPs (fvcore)', label, log)
    rec = {'num_parameters': count_params(model) / 1e6,
           'flops': None if hooks is None else hooks[0] / 1e9,
           'flops_fvcore': None if flops_fvcore is None else flops_fvcore / 1e9,
           'activations': None if hooks is None else hooks[1] / 1e6,
           'num_conv': None if hooks is None else hooks[2]}
    if runtime_input:
        p = next(model.parameters())
        x = torch.rand(1, *runtime_input, device=p.device, dtype=p.dtype) * model.input_range
        rec['runtime_256'] = measure_runtime(model, x, warmup=2, repeats=5)['median_ms']
    return rec


def set_record(prefix: str, result: dict) -> dict:
    """The NTIRE-style keys for one set: {prefix}_ave_psnr, {prefix}_psnr, ..."""
    def mean(values):
        return float(np.mean(values)) if values else None

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
    atomic_write_text(path, text)  # the shared implementation: no temporary file left on failure


def _fmt(value, spec: str, missing: str = '-') -> str:
    """`value` formatted by `spec`; `missing` for None (a counter that failed, no HR)."""
    return missing if value is None else format(value, spec)


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
        parts += [f'Params: {r["num_parameters"]:2.3f}M', f'FLOPs: {_fmt(r["flops"], "2.2f")}G',
                  f'FLOPs(fvcore): {_fmt(r["flops_fvcore"], "2.2f")}G',
                  f'Acts: {_fmt(r["activations"], "2.2f")}M',
                  f'Mem: {r[f"{sets[0]}_memory"]:2.2f}M', f'Conv: {_fmt(r["num_conv"], "4d")}']
        lines.append(f'{label:<24} ' + ', '.join(parts))
    return lines


def results_table(results: dict, sets: list) -> str:
    """A plain-text table for the console and the README."""
    head = ['model']
    for s in sets:
        head += [f'{s} PSNR', f'{s} PSNR-Y', f'{s} ms']
    head += ['256² ms', 'Params M', 'FLOPs G', 'fvcore G', 'Acts M', '#Conv']
    rows = [head]
    fmt = _fmt
    for label, r in results.items():
        row = [label]
        for s in sets:
            row += [fmt(r.get(f'{s}_ave_psnr'), '.2f'), fmt(r.get(f'{s}_ave_psnr_y'), '.2f'),
                    fmt(r.get(f'{s}_ave_runtime'), '.1f')]
        row += [fmt(r.get('runtime_256'), '.1f'), fmt(r['num_parameters'], '.3f'),
                fmt(r['flops'], '.2f'), fmt(r['flops_fvcore'], '.2f'),
                fmt(r['activations'], '.2f'), fmt(r['num_conv'], 'd')]
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
    def fmt(value, spec):
        return _fmt(value, spec, missing='–')

    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for label, r in results.items():
        row = [label]
        for s in sets:
            row += [fmt(r.get(f'{s}_ave_psnr_y'), '.2f'), fmt(r.get(f'{s}_ave_psnr'), '.2f')]
        row += [fmt(r.get(f'{first}_ave_ssim_y'), '.4f')] if has_ssim else []
        row += [fmt(r.get('runtime_256'), '.0f'), fmt(r.get(f'{first}_ave_runtime'), '.1f'),
                fmt(r['num_parameters'], '.3f'), fmt(r['flops'], '.2f'), fmt(r['flops_fvcore'], '.2f'),
                fmt(r['activations'], '.2f'), fmt(r['num_conv'], 'd')]
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
    device = next(iter(results.values())).get('device', '') if results else ''
    ax.set_xlabel(f'runtime per image on {set_name} (ms, {device})')
    ax.set_ylabel(f'PSNR-Y on {set_name} (dB)')
    ax.set_title(title or 'PSNR vs runtime (marker area ∝ parameters)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right', markerscale=0.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_results(results: dict, sets: list, json_path: str, txt_path: str,
                  plot_path: str | None, md_path: str | None = None) -> None:
    """results.json, results.txt (NTIRE layout), results.md (markdown table) and the plot,
    each written atomically, under the lock on `json_path` (one writer at a time; a caller may
    hold it for the whole run, see utils.io.checkpoint.acquire_output_lock)."""
    with output_lock(json_path):
        _atomic_write_text(json_path, json.dumps(results, indent=2) + '\n')
        _atomic_write_text(txt_path, '\n'.join(results_lines(results, sets)) + '\n')
        if md_path:
            _atomic_write_text(md_path, results_markdown(results, sets) + '\n')
        if plot_path:
            plot_psnr_runtime(results, sets[0], plot_path)

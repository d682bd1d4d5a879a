"""Model summary the way the NTIRE ESR organizers measure it.

- `count_params`: number of parameters.
- `ntire_flops`: FLOPs by the forward-hook method of the NTIRE 2022/2023 scripts
  (`utils/model_summary.py` there, from KAIR): a convolution costs k_h·k_w·C_in·C_out/groups
  multiply-adds per output position (its bias is not counted); every call of a ReLU-type
  module costs one per output element; Linear and BatchNorm2d as there. Nothing else is
  counted (pooling, F.interpolate, sigmoid, additions), as in the official code.
- `fvcore_flops`: fvcore's `FlopCountAnalysis` (NTIRE 2024 method): one per multiply-add,
  biases and most element-wise ops ignored.
- `thop_macs`: thop's `profile`, a third opinion.
- `ntire_activations`: number of elements output by convolutions and number of conv calls
  (the NTIRE `get_model_activation`); `ntire_counts` gives both hook counts from one forward.
- `measure_runtime`: CUDA events after warm-up on a GPU; on the CPU warm-up, repeats and
  the median of `time.perf_counter`. `sync` and `timed_call` are its parts, the one timer
  that `utils.engine.evaluate` times each image with.
- `interleaved_runtime`: several models timed in turns (round-robin), so that a machine whose
  speed drifts (a shared 2-core CPU does, by ±15%) biases none of them;
  `python -m utils.metrics.model_summary CKPT [CKPT ...] --rounds 10`.
- `PeakMemory`: CUDA `max_memory_allocated`, or the peak resident set size sampled on the CPU.

All counts use one input of shape (1, 3, H, W) (3×256×256 unless told otherwise) and
are returned as plain numbers (not scaled); `summarize` gives the usual units.
"""
from __future__ import annotations

import copy
import os
import statistics
import threading
import time
import warnings

import torch
import torch.nn as nn
from tqdm import tqdm

from models import load_model
from utils.io.errors import UserError, check_device, check_option

DEFAULT_INPUT = (3, 256, 256)

_RELU_TYPES = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
# the modules whose outputs the NTIRE activation counter adds up (and counts as "convs")
_ACTIVATION_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Conv1d, nn.Linear, nn.ConvTranspose1d)


def dummy_input(model: nn.Module, input_shape=DEFAULT_INPUT) -> torch.Tensor:
    """A random (1, *input_shape) input in 0–1 on the model's device and dtype."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device('cpu')
    dtype = p.dtype if p is not None else torch.float32
    return torch.rand(1, *input_shape, device=device, dtype=dtype)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_convs(model: nn.Module) -> int:
    """Number of Conv2d modules (not calls)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def hook_flops(module: nn.Module, inputs, output) -> int | None:
    """FLOPs of one call by the NTIRE 2022/2023 rules; None for modules they ignore.

    Convolutions: k_h·k_w·C_in·(C_out/groups) per output position, bias not counted.
    ReLU family: one per output element. Linear: C_in·C_out per row. BatchNorm2d: one per
    element, two if affine. Nothing else (pooling, interpolation, sigmoid, additions).
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        positions = output.shape[0]
        for d in output.shape[2:]:
            positions *= d
        return kernel * module.in_channels * (module.out_channels // module.groups) * positions
    if isinstance(module, _RELU_TYPES):
        return output.numel()
    if isinstance(module, nn.Linear):
        x = inputs[0]
        rows = 1 if x.dim() == 1 else x.numel() // x.shape[-1]
        return rows * module.in_features * module.out_features
    if isinstance(module, nn.BatchNorm2d):
        return output.numel() * (2 if module.affine else 1)
    return None


def run_with_hooks(model: nn.Module, x: torch.Tensor, hook) -> None:
    """One no-grad forward of `x` with `hook(module, inputs, output)` on every module."""
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def hooked_values(model: nn.Module, input_shape, value, shapes_only: bool = False) -> list:
    """The non-None `value(module, inputs, output)` of every module call in one no-grad forward
    of a (1, *input_shape) input, in call order.

    By default the forward runs for real on a 0–1 random input. With `shapes_only` (for a
    `value` that reads only shapes, as the NTIRE counters do) it runs on a copy of the model on
    PyTorch's meta device, which propagates shapes without the arithmetic: a 256² count then
    costs milliseconds, but the first one in a process loads the meta kernels (about 2 s), so
    it pays where a process counts many times (pruning to a FLOPs budget counts after every
    trial). A model whose forward the meta device cannot run (code that reads values, e.g.
    `.item()`) runs for real instead.
    """
    def collect(net, x):
        values = []

        def record(module, inputs, output):
            v = value(module, inputs, output)
            if v is not None:
                values.append(v)

        run_with_hooks(net, x, record)
        return values

    if shapes_only:
        p = next(model.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        try:
            clone = copy.deepcopy(model).to('meta')
            return collect(clone, torch.empty(1, *input_shape, device='meta', dtype=dtype))
        except Exception:  # noqa: BLE001 (any op without a meta kernel: count the real way)
            pass
    return collect(model, dummy_input(model, input_shape))


def ntire_counts(model: nn.Module, input_shape=DEFAULT_INPUT,
                 shapes_only: bool = False) -> tuple[int, int, int]:
    """(FLOPs, activations, conv calls) of one forward pass, counted in that one pass: FLOPs by
    the NTIRE 2022/2023 hook method (see module doc), activations as the elements output by
    every conv (and linear) call. The same counts with or without `shapes_only` (see
    `hooked_values`)."""
    def flops_and_output(module, inputs, output):
        flops = hook_flops(module, inputs, output) or 0
        activations = output.numel() if isinstance(module, _ACTIVATION_TYPES) else None
        return (int(flops), activations) if flops or activations is not None else None

    values = hooked_values(model, input_shape, flops_and_output, shapes_only)
    sizes = [a for _, a in values if a is not None]
    return sum(f for f, _ in values), sum(sizes), len(sizes)


def ntire_flops(model: nn.Module, input_shape=DEFAULT_INPUT, shapes_only: bool = False) -> int:
    """FLOPs of one forward pass by the NTIRE 2022/2023 hook method (see `ntire_counts`)."""
    return ntire_counts(model, input_shape, shapes_only)[0]


def ntire_activations(model: nn.Module, input_shape=DEFAULT_INPUT,
                      shapes_only: bool = False) -> tuple[int, int]:
    """(activations, conv calls): elements output by every conv (and linear) call, and calls."""
    return ntire_counts(model, input_shape, shapes_only)[1:]


def fvcore_flops(model: nn.Module, input_shape=DEFAULT_INPUT) -> int:
    """FLOPs by fvcore's FlopCountAnalysis (the NTIRE 2024 counter)."""
    from fvcore.nn import FlopCountAnalysis
    clone = copy.deepcopy(model).eval()
    x = dummy_input(clone, input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        analysis = FlopCountAnalysis(clone, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


def thop_macs(model: nn.Module, input_shape=DEFAULT_INPUT) -> int:
    """Multiply-accumulates by thop.profile (run on a copy: thop adds buffers)."""
    import logging

    from thop import profile
    clone = copy.deepcopy(model).eval()
    x = dummy_input(clone, input_shape)
    logging.getLogger('thop').setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        macs, _ = profile(clone, inputs=(x,), verbose=False)
    return int(macs)


def longest_conv_path(model: nn.Module, input_shape=(3, 64, 64)) -> int:
    """Depth of the longest chain of convolutions that must run one after another.

    Traces the autograd graph of one forward pass: each convolution node adds one to the
    depth of its deepest input. Branches that run side by side do not add up, which is
    what PRFDN's re-parametrization is about.
    """
    x = dummy_input(model, input_shape).requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
    depth: dict = {}
    order = []
    stack = [(out.grad_fn, False)]
    seen = set()
    while stack:  # iterative post-order DFS over the autograd graph
        fn, done = stack.pop()
        if fn is None:
            continue
        if done:
            order.append(fn)
            continue
        if fn in seen:
            continue
        seen.add(fn)
        stack.append((fn, True))
        for nxt, _ in fn.next_functions:
            if nxt is not None and nxt not in seen:
                stack.append((nxt, False))
    for fn in order:
        inputs = [depth.get(n, 0) for n, _ in fn.next_functions if n is not None]
        d = max(inputs, default=0)
        if 'Convolution' in type(fn).__name__:
            d += 1
        depth[fn] = d
    return depth.get(out.grad_fn, 0)


def sync(device: torch.device | str) -> None:
    """Wait until `device` has run the work queued on it: CUDA kernels run asynchronously, so
    a clock read before this would miss them. Nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_call(fn, *args, device: torch.device | str = 'cpu') -> tuple:
    """(fn(*args), its time in ms). On a CUDA `device`: CUDA events recorded around the call,
    then a synchronisation; elsewhere `time.perf_counter` around it. Work queued before the
    call is not waited for: `sync(device)` first."""
    if torch.device(device).type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*args)
        end.record()
        torch.cuda.synchronize(device)
        return out, start.elapsed_time(end)
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000.0


def _half_precision(model: nn.Module, x: torch.Tensor) -> tuple:
    """(a float16 copy of `model`, `x` as float16), for timing; the caller's model is left as
    it is. ValueError off CUDA: a CPU runs half-precision convolutions through a slow
    fallback, so the time would say nothing about the fp16 path."""
    if x.device.type != 'cuda':
        raise ValueError(f'fp16 timing needs a CUDA input, got one on {x.device} (a CPU runs half-precision '
                         'convolutions through a slow fallback); time a half model without fp16 if meant')
    return copy.deepcopy(model).half(), x.half()


def _runtime_stats(times: list) -> dict:
    return {'median_ms': statistics.median(times), 'mean_ms': statistics.fmean(times),
            'min_ms': min(times), 'times_ms': times}


def measure_runtime(model: nn.Module, x: torch.Tensor, warmup: int = 2, repeats: int = 5,
                    fp16: bool = False) -> dict:
    """Time `model(x)`: returns {'median_ms', 'mean_ms', 'min_ms', 'times_ms'}.

    GPU: CUDA events around each call after `warmup` calls. CPU: perf_counter, median.
    `fp16`: time a float16 copy of the model on `x` in float16 (CUDA only: ValueError for an
    input on another device); a model and input already in float16 are timed as they are.
    """
    if fp16:
        model, x = _half_precision(model, x)
    device = x.device
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync(device)
        times = [timed_call(model, x, device=device)[1] for _ in range(repeats)]
    return _runtime_stats(times)


def interleaved_runtime(models: dict, x, rounds: int = 10, repeats: int = 3,
                        fp16: bool = False, progress: bool = True) -> dict:
    """{label: measure_runtime-style dict over rounds × repeats calls}, timed in turns.

    Each round times every model `repeats` times (after one warm-up call each round), so
    slow and fast phases of the machine are shared out evenly. `x` is one input tensor for
    all, or a dict {label: tensor} (models with different input ranges or dtypes). `fp16`
    as in `measure_runtime` (each model is copied to float16 once). `progress`: a bar over
    the rounds on stderr (a leaderboard's rounds take minutes on a CPU).
    """
    inputs = {label: x[label] if isinstance(x, dict) else x for label in models}
    if fp16:
        halves = {label: _half_precision(model, inputs[label]) for label, model in models.items()}
        models = {label: model for label, (model, _) in halves.items()}
        inputs = {label: inp for label, (_, inp) in halves.items()}
    times = {label: [] for label in models}
    for _ in tqdm(range(rounds), desc='timing in turns', unit='round', disable=not progress,
                  leave=False, dynamic_ncols=True):
        for label, model in models.items():
            times[label] += measure_runtime(model, inputs[label], warmup=1, repeats=repeats)['times_ms']
    return {label: _runtime_stats(t) for label, t in times.items()}


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description='Median runtime of checkpoints, timed in turns '
                                '(round-robin) on one input of --size² LR pixels.')
    p.add_argument('checkpoint', nargs='+')
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)

    if args.rounds < 1 or args.repeats < 1 or args.size < 1:
        raise UserError('--rounds, --repeats and --size must be positive')
    device = check_device('--device', args.device)
    models = {}
    for path in args.checkpoint:
        label = os.path.splitext(os.path.basename(path))[0]
        if label in models:
            raise UserError(f'two checkpoints are named {label}')
        models[label] = load_model(path, device=device)
        # a smaller input fails deep in the forward pass (ESA's strided pooling), as a traceback
        check_option(f'--size (for {label})', args.size,
                     at_least=getattr(models[label], 'min_input_size', 1))
    first = next(iter(models.values()))
    x = torch.rand(1, 3, args.size, args.size, device=device) * first.input_range
    res = interleaved_runtime(models, x, args.rounds, args.repeats)
    for label, r in res.items():
        print(f'{label:<24} median {r["median_ms"]:7.1f} ms  (min {r["min_ms"]:.1f}, mean {r["mean_ms"]:.1f}, '
              f'{len(r["times_ms"])} calls, {args.size}² on {args.device})')
    return 0


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so that the RSS sampled next grows with
    new allocations instead of silently reusing memory freed earlier in the process."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager: peak memory (MB) used while inside it.

    CUDA: `torch.cuda.max_memory_allocated` (what the NTIRE scripts report). CPU: peak
    resident set size sampled every millisecond, minus the size on entry (free heap pages are
    returned to the OS first, or a reused freed block would not show).
    """

    def __init__(self, device: torch.device | str = 'cpu'):
        self.device = torch.device(device)
        self.peak_mb = 0.0

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import gc
        gc.collect()
        _release_free_heap()
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, _rss_bytes())
                self._stop.wait(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 1024 ** 2
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 1024 ** 2
        return False


def summarize(model: nn.Module, input_shape=DEFAULT_INPUT, with_thop: bool = True) -> dict:
    """Every count in the units of the NTIRE tables (M params, G FLOPs, M activations)."""
    flops, acts, conv_calls = ntire_counts(model, input_shape)
    out = {
        'num_parameters': count_params(model) / 1e6,
        'flops': flops / 1e9,
        'flops_fvcore': fvcore_flops(model, input_shape) / 1e9,
        'activations': acts / 1e6,
        'num_conv': conv_calls,
    }
    if with_thop:
        out['macs_thop'] = thop_macs(model, input_shape) / 1e9
    return out


if __name__ == '__main__':
    from utils.io.errors import run_cli
    run_cli(main)

"""Structured channel pruning with Torch-Pruning (DepGraph), iterative or to a budget.

The dependency graph does the bookkeeping: channels coupled by residual additions, ESA's
gating product, concatenations, splits and 1×1 selection convs are pruned together. The
image input (3 channels) and the outputs of the model's `fixed_output_layers()` (the
upsampler's 3·s² channels) are never pruned; `prepare_for_pruning` applies the model's own
`prepare_for_pruning()` hook (see `models.registry.SRModel`). A pruned model is an ordinary
model of the same class with irregular widths; `models.load_model` rebuilds it from its
tensors.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch_pruning as tp

from models.registry import compression_hooks
from utils.io.errors import UserError
from utils.metrics.model_summary import count_params, measure_runtime, ntire_flops

IMPORTANCE_NAMES = ('l1', 'l2', 'taylor', 'group_norm')


def make_importance(name: str):
    """Channel importance: L1/L2 weight magnitude, first-order Taylor, or group norm."""
    if name == 'l1':
        return tp.importance.MagnitudeImportance(p=1)
    if name == 'l2':
        return tp.importance.MagnitudeImportance(p=2)
    if name == 'taylor':
        return tp.importance.TaylorImportance()
    if name == 'group_norm':
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise UserError(f'unknown importance "{name}" (known: {", ".join(IMPORTANCE_NAMES)})')


def output_layers(model: nn.Module) -> list:
    """Layers whose output channels are fixed: the model's `fixed_output_layers()`
    (the upsampler conv with its 3·s² outputs)."""
    return list(compression_hooks(model).fixed_output_layers())


def prepare_for_pruning(model: nn.Module) -> nn.Module:
    """`model` made traceable by Torch-Pruning, in place and with the same function (its
    `prepare_for_pruning()` hook, e.g. ParallelRFDN's split written as 1×1 convs); returns
    the model. UserError for a model that cannot be channel-pruned."""
    return compression_hooks(model).prepare_for_pruning()


def example_input(model: nn.Module, size: int = 32) -> torch.Tensor:
    p = next(model.parameters())
    return torch.rand(1, 3, size, size, device=p.device) * getattr(model, 'input_range', 255.0)


def build_pruner(model: nn.Module, ratio: float, importance, round_to: int | None = None,
                 example: torch.Tensor | None = None) -> tp.pruner.MetaPruner:
    """A one-shot pruner removing `ratio` of the channels of every prunable group."""
    example = example_input(model) if example is None else example
    with warnings.catch_warnings(), torch.enable_grad():  # DepGraph traces through autograd
        warnings.simplefilter('ignore')
        try:
            return tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                        ignored_layers=output_layers(model), round_to=round_to,
                                        iterative_steps=1)
        except Exception as exc:
            raise UserError(f'Torch-Pruning cannot trace {type(model).__name__}: '
                            f'{type(exc).__name__}: {str(exc).splitlines()[0][:120]}') from None


def taylor_gradients(model: nn.Module, batch) -> None:
    """Gradients for Taylor importance: L1 loss of one (lr, hr) batch in 0–1."""
    lr, hr = batch
    rng = getattr(model, 'input_range', 255.0)
    p = next(model.parameters())
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = nn.functional.l1_loss(model(lr.to(p.device) * rng) / rng, hr.to(p.device))
        loss.backward()


def prune_step(model: nn.Module, ratio: float, importance: str = 'l1', round_to: int | None = None,
               grad_batch=None) -> nn.Module:
    """Remove `ratio` (0–1) of the channels of every prunable group of `model`, in place."""
    if not 0.0 < ratio < 1.0:
        raise UserError(f'pruning ratio must be in (0, 1), got {ratio}')
    imp = make_importance(importance)
    model.eval()
    pruner = build_pruner(model, ratio, imp, round_to)
    if importance == 'taylor':
        if grad_batch is None:
            raise UserError('taylor importance needs a batch for gradients')
        taylor_gradients(model, grad_batch)
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter('ignore')
        pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def size_of(model: nn.Module, metric: str, device='cpu') -> float:
    """params (count), flops (NTIRE hooks, 3×256×256) or latency_ms (median of 5, 256²)."""
    if metric == 'params':
        return float(count_params(model))
    if metric == 'flops':
        return float(ntire_flops(model, shapes_only=True))  # counted after every bisection trial
    if metric == 'latency_ms':
        x = torch.rand(1, 3, 256, 256, device=device) * getattr(model, 'input_range', 255.0)
        return measure_runtime(model, x, warmup=1, repeats=5)['median_ms']
    raise ValueError(metric)


def prune_to_budget(model: nn.Module, metric: str, target: float, importance: str = 'l1',
                    round_to: int | None = None, grad_batch=None, tolerance: float = 0.02,
                    device='cpu', max_iter: int = 14) -> tuple[nn.Module, float]:
    """Prune `model` once so that `metric` lands within ±tolerance of `target`.

    Bisection over the one-shot ratio, each trial on a copy; returns (pruned model, value).
    """
    current = size_of(model, metric, device)
    if target >= current:
        raise UserError(f'target {metric} {target:.4g} is not below the current {current:.4g}')
    lo, hi = 0.0, 0.99
    best = None
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        trial = prune_step(copy.deepcopy(model), mid, importance, round_to, grad_batch)
        value = size_of(trial, metric, device)
        if best is None or abs(value - target) < abs(best[1] - target):
            best = (trial, value, mid)
        if abs(value - target) <= tolerance * target:
            return trial, value
        if value > target:
            lo = mid
        else:
            hi = mid
    trial, value, _ = best
    return trial, value


def schedule_ratios(total_ratio: float, steps: int) -> list:
    """Per-step ratios (of the channels left) so that after step i a fraction
    total_ratio·i/steps of the original channels is gone (Yin et al., NTIRE 2023, prune
    90% in 16 steps)."""
    if not 0.0 < total_ratio < 1.0:
        raise UserError(f'the share of channels to remove must be in (0, 1), got {total_ratio}')
    if steps < 1:
        raise UserError(f'a pruning schedule needs at least 1 step, got {steps}')
    kept = [1.0 - total_ratio * i / steps for i in range(steps + 1)]
    return [1.0 - kept[i] / kept[i - 1] for i in range(1, steps + 1)]


def conv_widths(model: nn.Module) -> dict:
    """{conv name: out_channels}: the per-step widths for the log."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# -- dependency groups, for the exactness test and for weight pruning ------------------------------
def channel_groups(model: nn.Module, example: torch.Tensor | None = None):
    """Torch-Pruning's dependency graph and the prunable groups of `model`."""
    example = example_input(model) if example is None else example
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    groups = list(dg.get_all_groups(ignored_layers=output_layers(model),
                                    root_module_types=[nn.Conv2d]))
    return dg, groups


@torch.no_grad()
def zero_group_channels(group) -> None:
    """Zero every weight and bias slice of a (sub)group: producers' outputs, consumers' inputs."""
    for dep, idxs in group:
        layer, fn = dep.target.module, dep.handler
        if not isinstance(layer, nn.Conv2d):
            continue
        idx = torch.as_tensor(list(idxs), dtype=torch.long)
        if fn in (tp.prune_conv_out_channels,):
            layer.weight[idx] = 0
            if layer.bias is not None:
                layer.bias[idx] = 0
        elif fn in (tp.prune_conv_in_channels,):
            layer.weight[:, idx] = 0

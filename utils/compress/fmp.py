"""Joint channel and weight pruning to a Params or FLOPs budget, after Flexible Meta Pruning.

FMP (flexible meta pruning) prunes a network both structurally (whole channels) and
unstructurally (single weights) until a budget on Params or FLOPs is met, and compares
four convergence criteria (its Table 3): 'Channel' (channel pruning alone reaches the
budget), 'Weight' (weight pruning alone), 'Total Fixed' (both shares prescribed) and
'Total' (only the joint budget is prescribed; the split comes out of the optimisation).

What this module does, and where it differs from the paper:

* **The allocation rule is ours, not FMP's.** FMP learns the channel/weight split with a
  hypernetwork. Here the split follows a simple greedy rule instead (criterion 'total'):
  at every iteration one channel step and one weight step are tried on copies, the
  damage of each is measured as the increase of the L1 loss on a fixed calibration batch
  divided by the amount of the budget metric it removes, and the cheaper step is taken.
  No hypernetwork, no learned pruning ratios.
* **Channel pruning** is Torch-Pruning's (`utils.compress.pruning.prune_step`, DepGraph groups,
  L1 importance by default) in small steps: `channel_step` (5%) of the channels left in
  every prunable group per step. The image input and the upsampler's 3·s² outputs are never
  pruned. When a step would overshoot the budget window the step size is bisected; if no
  uniform step lands in the window, single channels are removed from one group at a time.
* **Weight pruning** is unstructured global magnitude pruning with binary masks over the
  weights of every Conv2d except the model's `fixed_output_layers()` (the upsampler conv:
  its input and output are fixed and it is a small share of the model) and its
  `pruning_excluded_convs()` (ParallelRFDN's 1×1 selection convs `split_res`, `split_s`,
  `cat_conv`: 0/1 index maps, folded away later). Within a
  conv the largest `min_keep` share (5%) of the weights is never pruned, so no layer can be
  wiped out by the global threshold. Biases are not weight-pruned.
* **Sparse-aware size** (`sparse_size`): Params = parameters of the channel-pruned model
  minus the masked-out weights; FLOPs = the NTIRE hook count (`utils.metrics.model_summary`,
  3×256×256 input) with every masked conv's FLOPs scaled by its weight density (non-zero
  share), as FMP counts them. A conv's hook FLOPs are weight.numel()·output positions, so
  this is the same as subtracting (masked weights × output positions).
* **Attribution (the Table-3 columns).** The sparse size is measured before and after
  every step; the decrease of a channel step is credited to channel pruning, that of a
  weight step to weight pruning. Hence, in % of the original (sparse) size,
  total_ratio + channel_prune_ratio + weight_prune_ratio = 100. (A channel step that
  removes already-masked weights is credited only with what was still non-zero.)
* **Criteria**, target T (the remaining share) and tolerance 2% (relative, |size − T·orig|
  ≤ 0.02·T·orig):
    'channel'      channel steps only, until the budget;
    'weight'       weight steps only (the global magnitude threshold raised by
                   `weight_step` = 5% of the current size per step), until the budget;
    'total_fixed'  a fixed split: channel pruning alone down to sqrt(T) of the original,
                   then weight pruning down to T (each kind removes the same factor);
    'total'        the greedy rule above; the shares come out of it. A channel step that
                   would overshoot the window is bisected; if none lands, only the (exact)
                   weight step competes.
  The split of 'total' depends on the calibration batch: with an lr-only batch (target =
  the unpruned output, the CLI's default without training data) magnitude weight pruning
  usually costs less per unit and wins every step.
* **Masks during fine-tuning**: `finetune(model, post_step)` gets `post_step`, which
  re-applies the masks after every optimizer step (the Trainer's `post_step`); at the end
  the masks are applied for good, so the checkpoint is a plain dense state_dict whose
  pruned weights are exact zeros (`masks_from_zeros` recovers the masks from it).
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.compress.pruning import channel_groups, output_layers, prepare_for_pruning, prune_step
from utils.engine.evaluate import evaluate
from utils.io.atomic import atomic_write_text
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError
from utils.metrics.model_summary import DEFAULT_INPUT, dummy_input, hook_flops, run_with_hooks

METRICS = ('params', 'flops')
CRITERIA = ('channel', 'weight', 'total_fixed', 'total')


# -- masks --------------------------------------------------------------------------------
def maskable_convs(model: nn.Module) -> dict:
    """{name: conv} of the convs whose weights may be weight-pruned (see the module doc):
    all but the model's `fixed_output_layers()` and `pruning_excluded_convs()`."""
    fixed = {id(m) for m in output_layers(model)}       # also checks that model is an SRModel
    fixed |= {id(m) for m in model.pruning_excluded_convs()}
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in fixed}


def masks_from_zeros(model: nn.Module) -> dict:
    """Masks (conv name -> bool tensor, True = kept) from the zero pattern of the weights.

    Exact for a model whose masked weights are zero: channel pruning keeps them zero, and
    a dense model gets all-True masks (a trained weight is never exactly zero).
    """
    return {n: (m.weight.detach() != 0) for n, m in maskable_convs(model).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict) -> None:
    """Zero the masked-out weights (in place)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        w = modules[name].weight
        w.mul_(mask.to(device=w.device, dtype=w.dtype))


def mask_post_step(masks: dict):
    """A Trainer `post_step` re-applying `masks` after every optimizer step."""
    def post_step(model):
        apply_masks(model, masks)
    return post_step


# -- sparse-aware size --------------------------------------------------------------------
def _profile(model: nn.Module, metric: str, input_shape=DEFAULT_INPUT) -> tuple[float, dict]:
    """(dense size, {maskable conv name: cost of one of its weights}) for `metric`.

    params: every weight costs 1. flops: a conv weight costs its output positions (summed
    over the calls of the conv), so that the conv's hook FLOPs = numel · cost.
    """
    convs = maskable_convs(model)
    if metric == 'params':
        return float(sum(p.numel() for p in model.parameters())), {n: 1.0 for n in convs}
    if metric != 'flops':
        raise UserError(f'unknown FMP metric "{metric}" (known: {", ".join(METRICS)})')
    names = {id(m): n for n, m in convs.items()}
    total = [0]
    cost = {n: 0.0 for n in convs}

    def hook(module, inputs, output):
        flops = hook_flops(module, inputs, output)
        if flops:
            total[0] += int(flops)
            if id(module) in names:
                cost[names[id(module)]] += float(flops) / module.weight.numel()

    was_training = model.training
    model.eval()
    run_with_hooks(model, dummy_input(model, input_shape), hook)
    model.train(was_training)
    return float(total[0]), cost


def _sparse_from_profile(profile: tuple, masks: dict) -> float:
    dense, cost = profile
    return dense - sum(float((~m).sum()) * cost[n] for n, m in masks.items())


def sparse_size(model: nn.Module, masks: dict | None, metric: str, input_shape=DEFAULT_INPUT) -> float:
    """Params or FLOPs of `model` with `masks` (None: the zero pattern of its weights).

    params: parameters minus masked-out weights. flops: NTIRE hook FLOPs with each masked
    conv's FLOPs scaled by its weight density.
    """
    masks = masks_from_zeros(model) if masks is None else masks
    return _sparse_from_profile(_profile(model, metric, input_shape), masks)


# -- steps --------------------------------------------------------------------------------
class _State:
    """A model, its masks and its cached size profile."""

    def __init__(self, model, masks, metric, profile=None):
        self.model, self.masks, self.metric = model, masks, metric
        self.profile = profile if profile is not None else _profile(model, metric)

    @property
    def size(self) -> float:
        return _sparse_from_profile(self.profile, self.masks)

    def copy(self) -> '_State':
        return _State(copy.deepcopy(self.model), {n: m.clone() for n, m in self.masks.items()},
                      self.metric, (self.profile[0], dict(self.profile[1])))


def _after_channel_change(model, masks, metric) -> _State:
    """Rebuild masks for the new shapes: pruned weights stay zero, so weight != 0."""
    new = masks_from_zeros(model)
    return _State(model, {n: new[n] for n in masks if n in new}, metric)


def channel_trial(state: _State, ratio: float, importance='l1', grad_batch=None) -> _State:
    """A copy of `state` with `ratio` of the channels of every prunable group removed."""
    model = prune_step(copy.deepcopy(state.model), ratio, importance, grad_batch=grad_batch)
    return _after_channel_change(model, state.masks, state.metric)


def _single_channel_trials(state: _State) -> list:
    """Copies of `state`, each with the least-L1 channel of one prunable group removed."""
    import warnings

    import torch_pruning as tp

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        n_groups = len(channel_groups(state.model.eval())[1])
        for i in range(n_groups):
            model = copy.deepcopy(state.model).eval()
            dg, groups = channel_groups(model)
            group = groups[i]
            if len(group[0][1]) <= 1:
                continue
            imp = tp.importance.MagnitudeImportance(p=1)(group)
            if imp is None:
                continue
            idx = int(torch.argmin(imp))
            dep = group[0][0]
            sub = dg.get_pruning_group(dep.target.module, dep.handler, [idx])
            if not dg.check_pruning_group(sub):
                continue
            sub.prune()
            model.zero_grad(set_to_none=True)
            out.append(_after_channel_change(model, state.masks, state.metric))
    return out


def weight_trial(state: _State, amount: float, min_keep: float = 0.05) -> _State | None:
    """A copy of `state` with the smallest-magnitude unmasked weights (all maskable convs
    together) masked until `amount` of the metric is removed; None if nothing is left."""
    modules = dict(state.model.named_modules())
    mags, costs, owners = [], [], []
    for name, mask in state.masks.items():
        w = modules[name].weight.detach().abs().flatten()
        m = mask.flatten()
        keep = max(1, math.ceil(min_keep * w.numel()))
        protected = torch.zeros_like(m)
        protected[torch.topk(w, min(keep, w.numel())).indices] = True
        idx = torch.nonzero(m & ~protected).flatten()
        if idx.numel() == 0:
            continue
        mags.append(w[idx])
        costs.append(torch.full((idx.numel(),), state.profile[1][name], dtype=torch.float64))
        owners.append((name, idx))
    if not mags:
        return None
    mag = torch.cat(mags)
    cost = torch.cat(costs)
    order = torch.argsort(mag, stable=True)
    cum = torch.cumsum(cost[order], 0)
    n = int(torch.searchsorted(cum, torch.tensor(amount, dtype=torch.float64)).item()) + 1
    n = min(max(n, 1), order.numel())
    chosen = torch.zeros(mag.numel(), dtype=torch.bool)
    chosen[order[:n]] = True
    new = state.copy()
    start = 0
    for name, idx in owners:
        sel = chosen[start:start + idx.numel()]
        start += idx.numel()
        if sel.any():
            flat = new.masks[name].flatten().clone()
            flat[idx[sel]] = False
            new.masks[name] = flat.view_as(new.masks[name])
    apply_masks(new.model, new.masks)
    return new


# -- calibration loss ---------------------------------------------------------------------
class _Calibration:
    """L1 loss on a fixed batch: (lr, hr) in 0–1, or lr alone (the target is then the
    output of the model before pruning)."""

    def __init__(self, model, batch):
        self.range = float(getattr(model, 'input_range', 255.0))
        dev = next(model.parameters()).device
        if isinstance(batch, (tuple, list)):
            self.lr, self.hr = batch[0].to(dev), batch[1].to(dev)
        else:
            self.lr = batch.to(dev)
            self.hr = self._output(model)

    @torch.no_grad()
    def _output(self, model):
        was = model.training
        model.eval()
        out = model(self.lr * self.range) / self.range
        model.train(was)
        return out

    def loss(self, model) -> float:
        return float(F.l1_loss(self._output(model), self.hr))


def default_calibration(model, size: int = 32, n: int = 2, seed: int = 0) -> torch.Tensor:
    """A random LR batch (0–1) for the calibration loss, used with the output of the
    unpruned model as the target."""
    g = torch.Generator().manual_seed(seed)
    size = max(size, getattr(model, 'min_input_size', 0))
    return torch.rand(n, 3, size, size, generator=g)


# -- the loop -----------------------------------------------------------------------------
def _within(size, goal, tol):
    return abs(size - goal) <= tol * goal


def _bisect_channel_step(state, ratio, lo, hi, importance, grad_batch, tries=6):
    """(trial, step ratio) of a channel step in (0, ratio) whose size lands in [lo, hi],
    found by bisection in `tries` halvings, or None."""
    a, b = 0.0, ratio
    for _ in range(tries):
        mid = (a + b) / 2
        t = channel_trial(state, mid, importance, grad_batch)
        if lo <= t.size <= hi:
            return t, mid
        if t.size < lo:
            b = mid
        else:
            a = mid
    return None


def _land_channels(state, goal, tol, ratio, importance, grad_batch, log):
    """Channel steps until the size is within tol of `goal` (or as close as possible).

    Returns the final state; `log(kind, before_state, after_state, info)` records steps.
    """
    hi, lo = goal * (1 + tol), goal * (1 - tol)
    while state.size > hi:
        trial = channel_trial(state, ratio, importance, grad_batch)
        if trial.size >= state.size:
            break                                         # nothing prunable left
        if trial.size >= lo:
            log('channel', state, trial, {'ratio': ratio})
            state = trial
            continue
        # overshoot: bisect the step size, then fall back to single channels
        found = _bisect_channel_step(state, ratio, lo, hi, importance, grad_batch)
        if found:
            log('channel', state, found[0], {'ratio': found[1]})
            return found[0]
        state = _single_channel_landing(state, goal, tol, log)
        break
    return state


def _single_channel_landing(state, goal, tol, log):
    """One channel of one group at a time: the removal landing closest to `goal` inside
    the window; else the largest removal staying above it; else (every removal
    overshoots) the smallest overshoot, which ends the search."""
    hi, lo = goal * (1 + tol), goal * (1 - tol)
    while state.size > hi:
        trials = [t for t in _single_channel_trials(state) if t.size < state.size]
        if not trials:
            break
        inside = [t for t in trials if lo <= t.size <= hi]
        above = [t for t in trials if t.size > hi]
        if inside:
            best = min(inside, key=lambda t: abs(t.size - goal))
        elif above:
            best = min(above, key=lambda t: t.size)
        else:
            best = max(trials, key=lambda t: t.size)
        log('channel', state, best, {'single_channel': True})
        state = best
        if not inside and not above:
            break
    return state


def _weight_to(state, goal, tol, step_frac, min_keep, log):
    """Weight steps of step_frac of the current size until `goal` (the last one exact)."""
    while state.size > goal * (1 + tol):
        amount = min(step_frac * state.size, state.size - goal)
        trial = weight_trial(state, amount, min_keep)
        if trial is None or trial.size >= state.size:
            break
        log('weight', state, trial, {'amount': state.size - trial.size})
        state = trial
    return state


def _total(state, goal, tol, ratio, step_frac, min_keep, importance, grad_batch, calib, log):
    """The greedy allocation rule: per iteration the cheaper of one channel step and one
    weight step, cheaper = smaller increase of the calibration loss per unit removed."""
    hi, lo = goal * (1 + tol), goal * (1 - tol)
    loss = calib.loss(state.model)
    while state.size > hi:
        cur = state.size
        cand = []
        ch = channel_trial(state, ratio, importance, grad_batch)
        info = {'ratio': ratio}
        if ch.size < lo:                                  # overshoot: bisect the step size
            found = _bisect_channel_step(state, ratio, lo, hi, importance, grad_batch)
            ch, info = (found[0], {'ratio': found[1]}) if found else (None, info)
        if ch is not None and ch.size < cur:
            cand.append(('channel', ch, info))
        amount = cur - ch.size if ch is not None and ch.size < cur else step_frac * cur
        amount = min(amount, cur - goal)
        wt = weight_trial(state, amount, min_keep)
        if wt is not None and wt.size < cur:
            cand.append(('weight', wt, {'amount': cur - wt.size}))
        if not cand:
            break
        scored = []
        for kind, t, inf in cand:
            l_new = calib.loss(t.model)
            scored.append(((l_new - loss) / (cur - t.size), kind, t, inf, l_new))
        scored.sort(key=lambda s: s[0])
        cost, kind, t, inf, l_new = scored[0]
        inf = dict(inf, damage_per_unit=cost,
                   **{f'{k}_damage_per_unit': c for c, k, *_ in scored})
        log(kind, state, t, inf)
        state, loss = t, l_new
    return state


def fmp_prune(model: nn.Module, metric: str = 'params', target: float = 0.6,
              criterion: str = 'total', finetune=None, calib_batch=None, tolerance: float = 0.02,
              channel_step: float = 0.05, weight_step: float = 0.05, min_keep: float = 0.05,
              importance: str = 'l1', progress=None) -> tuple:
    """Prune `model` (in place where possible) to `target` × its original `metric`.

    metric: 'params' or 'flops' (sparse-aware, see `sparse_size`); target: remaining share
    in (0, 1); criterion: 'channel', 'weight', 'total_fixed' or 'total' (module doc).
    finetune: optional callable finetune(model, post_step), run once at the end; post_step
    re-applies the masks after every optimizer step. calib_batch: (lr, hr) in 0–1, or an
    lr tensor (target = output before pruning); a random batch when None (used by 'total'
    and for the loss figures in the report). Returns (model, masks, report); the masks are
    applied to the returned model.
    """
    if metric not in METRICS:
        raise UserError(f'unknown FMP metric "{metric}" (known: {", ".join(METRICS)})')
    if criterion not in CRITERIA:
        raise UserError(f'unknown FMP criterion "{criterion}" (known: {", ".join(CRITERIA)})')
    if not 0.0 < target < 1.0:
        raise UserError(f'FMP target must be a remaining share in (0, 1), got {target}')
    model = prepare_for_pruning(model).eval()
    masks = masks_from_zeros(model)
    apply_masks(model, masks)
    state = _State(model, masks, metric)
    original = state.size
    goal = target * original
    calib = _Calibration(model, calib_batch if calib_batch is not None else default_calibration(model))
    grad_batch = None
    if importance == 'taylor':
        grad_batch = (calib.lr, calib.hr)
    loss0 = calib.loss(model)
    steps = []
    removed = {'channel': 0.0, 'weight': 0.0}

    def log(kind, before, after, info):
        d = before.size - after.size
        removed[kind] += d
        steps.append({'kind': kind, 'before': before.size, 'after': after.size,
                      'removed_pct': 100.0 * d / original, 'remaining_pct': 100.0 * after.size / original,
                      **{k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                         for k, v in info.items()}})
        if progress:
            progress(f'{kind:>7} step: {metric} {100 * after.size / original:.2f}% of the original')

    if criterion == 'channel':
        state = _land_channels(state, goal, tolerance, channel_step, importance, grad_batch, log)
    elif criterion == 'weight':
        state = _weight_to(state, goal, tolerance, weight_step, min_keep, log)
    elif criterion == 'total_fixed':
        mid = math.sqrt(target) * original
        state = _land_channels(state, mid, tolerance, channel_step, importance, grad_batch, log)
        state = _weight_to(state, goal, tolerance, weight_step, min_keep, log)
    else:
        state = _total(state, goal, tolerance, channel_step, weight_step, min_keep, importance,
                       grad_batch, calib, log)
    model, masks = state.model, state.masks
    apply_masks(model, masks)
    loss_pruned = calib.loss(model)
    if finetune is not None:
        finetune(model, mask_post_step(masks))
        apply_masks(model, masks)
    model.eval()
    final = sparse_size(model, masks, metric)
    report = {
        'metric': metric, 'criterion': criterion, 'target': target,
        'original': original, 'final': final,
        'total_ratio': 100.0 * final / original,
        'channel_prune_ratio': 100.0 * removed['channel'] / original,
        'weight_prune_ratio': 100.0 * removed['weight'] / original,
        'within_tolerance': _within(final, goal, tolerance),
        'weight_density': _density(masks),
        'calib_l1': {'before': loss0, 'pruned': loss_pruned, 'final': calib.loss(model)},
        'steps': steps,
    }
    return model, masks, report


def _density(masks: dict) -> float:
    total = sum(m.numel() for m in masks.values())
    return float(sum(m.sum() for m in masks.values())) / total if total else 1.0


def table_line(report: dict, psnr_y: float | None = None) -> str:
    """One Table-3-style line."""
    return (f'FMP {report["metric"]} {report["criterion"]}: total ratio {report["total_ratio"]:.2f}% | '
            f'channel prune ratio {report["channel_prune_ratio"]:.2f}% | '
            f'weight prune ratio {report["weight_prune_ratio"]:.2f}%'
            + (f' | PSNR-Y {psnr_y:.3f} dB' if psnr_y is not None else ''))


# -- prune.py --mode fmp ------------------------------------------------------------------
@dataclass
class FmpSettings:
    """What prune.py --mode fmp asks for: the budget `metric` ('params' or 'flops', sparse-aware),
    the remaining share `target` in (0, 1), the convergence `criterion` (CRITERIA) and the
    channel `importance` (utils.compress.pruning)."""
    target: float
    metric: str = 'params'
    criterion: str = 'total'
    importance: str = 'l1'


def run_fmp(model: nn.Module, settings: FmpSettings, *, out_dir: str, output: str, val_set=None,
            finetune=None, calib_batch=None, device: str = 'cpu') -> dict:
    """Prune by `settings`, fine-tune with the masks kept (`finetune(model, post_step)`, e.g. a
    utils.engine.finetune.Finetuner; None: no fine-tuning), write the dense state_dict to
    `output` and OUT_DIR/fmp_report.json, print the Table-3 line; returns the report.

    `calib_batch`: (lr, hr) in 0–1 for the 'total' rule (default: `default_calibration`);
    `val_set`: the PSNR-Y of the result is measured on it when given."""
    os.makedirs(out_dir, exist_ok=True)
    model, masks, report = fmp_prune(model, settings.metric, settings.target, settings.criterion,
                                     finetune=finetune, calib_batch=calib_batch,
                                     importance=settings.importance, progress=print)
    report['params_sparse'] = sparse_size(model, masks, 'params')
    report['flops_sparse'] = sparse_size(model, masks, 'flops')
    psnr = None
    if val_set is not None:
        res = evaluate(model.eval(), val_set, device, progress=False, warmup=False)
        psnr = sum(res['psnr_y']) / len(res['psnr_y'])
        report['psnr_y'] = psnr
    save_state_dict(model.state_dict(), output)
    atomic_write_text(os.path.join(out_dir, 'fmp_report.json'), json.dumps(report, indent=1))
    print(f'wrote {output}')
    print(table_line(report, psnr))
    return report

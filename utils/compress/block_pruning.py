"""Block pruning: remove whole blocks of a trained network and keep the other weights.

The CLB-IMDN paper (AMD, NTIRE 2022) pruned IMDN from 8 to 7 IMDBs and retrained; the
same coarse-grained step applies to RLFN (RLFBs) and RFDN (RFDBs).

    from utils.compress.block_pruning import drop_blocks
    imdn7 = drop_blocks(load_model('imdn_baseline.pth'), [8])

`drop_blocks` returns a fresh model of the same class built for the smaller number of
blocks, loaded strictly from the rewired tensors:
- IMDN (and CLB-IMDN): blocks `model.1.sub.{0..nb-1}` are renumbered and the final body
  conv `model.1.sub.{nb}` moves down to `model.1.sub.{nb'}`.
- RLFN (both key layouts): `block_i` / `B_i` are renumbered.
- RFDN: `B_i` are renumbered and the fusion conv `c.0` (a 1×1 conv over the
  concatenation of all block outputs) loses the input columns of the dropped blocks.
Dropping blocks changes the function (nothing downstream compensates): fine-tune after.
`block_drop_table` measures, before any fine-tuning, what dropping each single block costs.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn as nn

from models.imdn import IMDN
from models.rfdn import RFDN
from models.rlfn import RLFN
from utils.engine.evaluate import mean_psnr_y


def _family(model: nn.Module):
    """(block-key regex with groups (number, rest), number of blocks, 1-based offset)."""
    if isinstance(model, IMDN):
        return re.compile(r'^model\.1\.sub\.(\d+)\.(.+)$'), model.num_blocks, 0
    if isinstance(model, RLFN):
        return re.compile(rf'^{re.escape(model.block_prefix)}(\d+)\.(.+)$'), model.num_blocks, 1
    if isinstance(model, RFDN):
        return re.compile(r'^B(\d+)\.(.+)$'), model.num_modules, 1
    raise TypeError(f'drop_blocks supports IMDN, RLFN and RFDN models, not {type(model).__name__}')


def _check_indices(indices, num_blocks: int) -> list:
    if isinstance(indices, int):
        indices = [indices]
    drop = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f'block numbers must be integers 1..{num_blocks}, got {i!r}')
        if not 1 <= i <= num_blocks:
            raise ValueError(f'block {i} out of range: the model has blocks 1..{num_blocks} '
                             f'(numbers are 1-based)')
        if i not in drop:
            drop.append(i)
    if len(drop) == num_blocks:
        raise ValueError(f'cannot drop all {num_blocks} blocks: at least one must remain')
    return sorted(drop)


@torch.no_grad()
def drop_blocks(model: nn.Module, indices) -> nn.Module:
    """A new model with the blocks numbered `indices` (1-based) removed and rewired.

    The remaining blocks keep their trained weights (renumbered in order), and so do the
    head, tail and upsampler; RFDN's fusion conv `c.0` keeps the input columns of the
    remaining blocks. The result is of `type(model)`, built from the new tensors (pruned
    widths, kernel sizes and bias flags carry over) and loaded strictly; it is on the
    model's device and dtype and in its train/eval mode. `model` itself is not changed.

    Raises ValueError for a block number outside 1..num_blocks, a non-integer, or when
    every block would be dropped; TypeError for an unsupported architecture.
    """
    pattern, nb, offset = _family(model)
    drop = _check_indices(indices, nb)
    keep = [i for i in range(1, nb + 1) if i not in drop]
    new_number = {old: new for new, old in enumerate(keep, start=1)}
    new_nb = len(keep)

    state = model.state_dict()
    new_state = OrderedDict()
    for key, value in state.items():
        m = pattern.match(key)
        if m is None:
            new_state[key] = value.clone()
            continue
        idx, rest = int(m.group(1)) - offset + 1, m.group(2)  # 1-based block number
        prefix = key[:m.start(1)]
        if isinstance(model, IMDN) and idx == nb + 1:  # the body conv after the blocks
            new_state[f'{prefix}{new_nb}.{rest}'] = value.clone()
        elif idx in new_number:
            new_state[f'{prefix}{new_number[idx] - 1 + offset}.{rest}'] = value.clone()
        elif idx not in drop:
            raise RuntimeError(f'unexpected block key {key} in {type(model).__name__}')

    if isinstance(model, RFDN):
        w = state['c.0.weight']
        widths = [getattr(model, f'B{i}').c5.out_channels for i in range(1, nb + 1)]
        if sum(widths) != w.shape[1]:
            raise RuntimeError(f'c.0 has {w.shape[1]} inputs, the blocks output {sum(widths)}')
        starts = [sum(widths[:i]) for i in range(nb)]
        cols = [w[:, starts[i - 1]:starts[i - 1] + widths[i - 1]] for i in keep]
        new_state['c.0.weight'] = torch.cat(cols, dim=1).clone()

    cls = type(model)
    new_model = cls.from_state_dict(new_state)
    new_model.load_state_dict(new_state, strict=True)
    p = next(model.parameters())
    return new_model.to(p.device, p.dtype).train(model.training)


def num_blocks(model: nn.Module) -> int:
    """How many droppable blocks `model` has (TypeError for an unsupported architecture)."""
    return _family(model)[1]


@torch.no_grad()
def block_drop_table(model: nn.Module, eval_set, device='cpu') -> list:
    """Sensitivity of each block: the PSNR-Y drop on `eval_set` when it alone is dropped.

    Returns [{'block' (1-based), 'psnr_y', 'psnr_y_drop'}], ascending by drop (no
    fine-tuning; drop = mean PSNR-Y of `model` - that of `drop_blocks(model, [block])`,
    dB, border = scale, via `utils.engine.evaluate.evaluate`).
    """
    model = model.to(device).eval()
    base = mean_psnr_y(model, eval_set, device)
    rows = []
    for block in range(1, num_blocks(model) + 1):
        psnr = mean_psnr_y(drop_blocks(model, [block]), eval_set, device)
        rows.append({'block': block, 'psnr_y': psnr, 'psnr_y_drop': base - psnr})
    rows.sort(key=lambda r: (r['psnr_y_drop'], r['block']))
    return rows

"""Block pruning: remove whole blocks of a trained network and keep the other weights.

The CLB-IMDN paper (AMD, NTIRE 2022) pruned IMDN from 8 to 7 IMDBs and retrained; the
same coarse-grained step applies to RLFN (RLFBs) and RFDN (RFDBs).

    from utils.compress.block_pruning import drop_blocks
    imdn7 = drop_blocks(load_model('imdn_baseline.pth'), [8])

`drop_blocks` returns a fresh model of the same class built for the smaller number of
blocks, loaded strictly from the rewired tensors. The architecture says which blocks there
are and how its tensors are rewired, through two hooks of `models.registry.SRModel`:
`block_names()` (the droppable blocks in forward order) and `drop_blocks_state(state,
keep)` (the kept blocks renumbered, plus whatever else depends on the block count, e.g.
IMDN's body conv after the blocks or RFDN's fusion conv over all block outputs).
Dropping blocks changes the function (nothing downstream compensates): fine-tune after.
`block_drop_table` measures, before any fine-tuning, what dropping each single block costs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.registry import compression_hooks
from utils.engine.evaluate import mean_psnr_y


def _block_names(model: nn.Module) -> list:
    """The model's droppable blocks (`block_names()`); TypeError when it has none."""
    names = compression_hooks(model).block_names()
    if not names:
        raise TypeError(f'{type(model).__name__} has no droppable blocks')
    return list(names)


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
    other layers, as the model's `drop_blocks_state` rewires them. The result is of
    `type(model)`, built from the new tensors (pruned widths, kernel sizes and bias flags
    carry over) and loaded strictly; it is on the model's device and dtype and in its
    train/eval mode. `model` itself is not changed.

    Raises ValueError for a block number outside 1..num_blocks, a non-integer, or when
    every block would be dropped; TypeError for a model without droppable blocks.
    """
    nb = len(_block_names(model))
    drop = _check_indices(indices, nb)
    keep = [i for i in range(1, nb + 1) if i not in drop]
    new_state = model.drop_blocks_state(model.state_dict(), keep)
    new_model = type(model).from_state_dict(new_state)
    new_model.load_state_dict(new_state, strict=True)
    p = next(model.parameters())
    return new_model.to(p.device, p.dtype).train(model.training)


def num_blocks(model: nn.Module) -> int:
    """How many droppable blocks `model` has (TypeError for a model without any)."""
    return len(_block_names(model))


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

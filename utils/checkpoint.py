"""Reading and writing plain state_dict checkpoints.

Checkpoints are plain `state_dict`s (name -> tensor), loaded with `weights_only=True`
and mapped to the CPU first, so files saved on a GPU load anywhere. Writes are atomic
(write to a temporary file, then rename), so an interrupted save never leaves a
half-written checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict

import torch
import torch.nn as nn

from .errors import UserError

# BasicSR and others wrap the weights; these are the wrappers we unwrap.
_WRAPPER_KEYS = ('params_ema', 'params', 'state_dict', 'model')


def read_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """Load a checkpoint file as a CPU state_dict (name -> tensor).

    Raises UserError (one line) when the file is missing, is not a torch file, holds
    pickled objects rather than tensors, or holds no tensors.
    """
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        raise UserError(f'cannot read checkpoint {path}: {_why_unreadable(path, exc)}') from None
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f'checkpoint {path} holds no state_dict of tensors')
    state = OrderedDict()
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        # DistributedDataParallel prefixes every key with 'module.'
        state[k[7:] if k.startswith('module.') else k] = v
    return state


def _why_unreadable(path: str, exc: Exception) -> str:
    import zipfile
    text = str(exc)
    if zipfile.is_zipfile(path) and 'Weights only load failed' in text:
        return 'it holds pickled Python objects, not only tensors (refused: weights_only=True)'
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            head = f.read(2)
        if head != b'\x80\x02':  # neither a zip archive nor a legacy torch pickle
            return 'not a PyTorch checkpoint file'
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:160]


def describe_mismatch(model: nn.Module, state_dict: dict, limit: int = 4) -> str:
    """One line listing missing, unexpected and shape-mismatched keys ('' if it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
                  for k in own if k in state_dict and own[k].shape != state_dict[k].shape]

    def fmt(label, items):
        if not items:
            return None
        more = f' (+{len(items) - limit} more)' if len(items) > limit else ''
        return f'{label} {len(items)}: ' + ', '.join(items[:limit]) + more

    parts = [p for p in (fmt('missing', missing), fmt('unexpected', unexpected),
                         fmt('shape mismatch', mismatched)) if p]
    return '; '.join(parts)


def load_strict(model: nn.Module, state_dict: dict, label: str = 'checkpoint') -> nn.Module:
    """`load_state_dict(strict=True)` that fails with a one-line UserError naming the keys."""
    problem = describe_mismatch(model, state_dict)
    if problem:
        raise UserError(f'{label} does not fit {type(model).__name__}: {problem}')
    model.load_state_dict(state_dict, strict=True)
    return model


def save_state_dict(state_dict: dict, path: str) -> None:
    """Save a plain state_dict atomically (CPU tensors, contiguous, no module pickles)."""
    clean = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state_dict.items())
    save_atomic(clean, path)


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_', suffix='.pth', dir=folder)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is a normal file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

"""Reading and writing plain state_dict checkpoints.

Checkpoints are plain `state_dict`s (name -> tensor), loaded with `weights_only=True`
and mapped to the CPU first, so files saved on a GPU load anywhere. Writes are atomic
(write to a temporary file, then rename), so an interrupted save never leaves a
half-written checkpoint behind.

Output locations, for every script that writes: `check_output_dir` / `check_output_file`
find an unwritable, wrong-type or input-overwriting destination before any work starts
(nothing is created); `output_lock` keeps two runs from writing the same file;
`remove_stale_temp_files` clears the temporary files of saves that a kill interrupted.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import os
import tempfile
from collections import OrderedDict

import torch
import torch.nn as nn

from utils.io.atomic import TEMP_PREFIX, atomic_path
from utils.io.errors import UserError

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
    with atomic_path(path, '.pth') as tmp:
        torch.save(obj, tmp)


# -- output locations -----------------------------------------------------------------
def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_dir(path: str, flag: str) -> None:
    """Raise UserError (naming `flag`) unless `path` is a folder this process can write in,
    or can be created as one. Creates nothing: permission bits do not bind root, so the
    nearest existing folder is tested by creating and removing a probe file in it."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f'{flag} {path} is a file, not a folder')
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise UserError(f'{flag} {path} cannot be created: {existing} is a file, not a folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.probe_', dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        where = '' if existing == os.path.abspath(path) else f' (in {existing})'
        raise UserError(f'{flag} {path} is not writable{where}: {exc.strerror}') from None


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (symbolic and hard links included)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path: str, flag: str, inputs=()) -> None:
    """Raise UserError (naming `flag`) unless `path` can be written as a file: not a folder,
    in a writable (or creatable) folder, and not one of the `inputs` (paths this run reads)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f'{flag} {path} is a folder; give a file name')
    for source in inputs:
        if source and same_file(path, os.fspath(source)):
            raise UserError(f'{flag} {path} is the input {source}: refusing to overwrite it')
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise UserError(f'{flag} {path} cannot be written: {folder} is a file, not a folder')
    check_output_dir(folder, flag)


def check_output_apart(out: str, flag: str, inputs: list) -> None:
    """Raise UserError (naming `flag`) when the output folder `out` is, holds or lies inside a
    folder of `inputs`, (flag, folder) pairs: outputs written there would overwrite the input
    or be indexed with it (a plain image folder is searched recursively)."""
    mine = os.path.realpath(out)
    for input_flag, folder in inputs:
        theirs = os.path.realpath(folder)
        common = os.path.commonpath([mine, theirs])
        if common in (mine, theirs):
            where = 'is' if mine == theirs else 'lies inside' if common == theirs else 'holds'
            raise UserError(f'{flag} {out} {where} the {input_flag} {folder}: '
                            'give an output folder apart from the input data')


def remove_stale_temp_files(folder: str) -> list:
    """Delete the temporary files (`.tmp_*`) that atomic saves in `folder` left behind when
    a kill interrupted them; returns their names. Call it only where no other process is
    writing into `folder` (e.g. when a run resumes in its own output folder)."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + '*'))):
        if os.path.isfile(path):
            os.remove(path)
            removed.append(os.path.basename(path))
    return removed


# -- one writer per output file -------------------------------------------------------
_held_locks: dict = {}  # lock-file path -> [file descriptor, how many holders in this process]


def _lock_path(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.lock')


def acquire_output_lock(path: str, flag: str | None = None) -> None:
    """Make this process the only writer of `path` until `release_output_lock(path)` (or the
    process ends): an exclusive `flock` on the hidden file `.NAME.lock` beside it. Re-entrant
    within a process. Raises UserError at once when another process holds it. On systems
    without fcntl (Windows) nothing is locked."""
    lock_path = _lock_path(path)
    held = _held_locks.get(lock_path)
    if held is not None:
        held[1] += 1
        return
    try:
        import fcntl
    except ImportError:
        return
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors='replace').strip()
            os.close(fd)
            by = f' (pid {holder})' if holder.isdigit() else ''
            option = f' or give another {flag}' if flag else ''
            raise UserError(f'another run{by} is writing {path}: wait for it to finish{option}') from None
        # the previous holder may have removed the file between our open and our lock
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held_locks[lock_path] = [fd, 1]


def release_output_lock(path: str) -> None:
    """Undo one `acquire_output_lock(path)`; the last one removes the lock file."""
    lock_path = _lock_path(path)
    held = _held_locks.get(lock_path)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _held_locks[lock_path]
        with contextlib.suppress(OSError):
            os.remove(lock_path)  # while still locked: a waiting run re-checks the inode
        os.close(held[0])


def _release_all_locks() -> None:
    for lock_path, held in list(_held_locks.items()):
        with contextlib.suppress(OSError):
            os.remove(lock_path)
        os.close(held[0])
    _held_locks.clear()


atexit.register(_release_all_locks)  # a run that stops with an error leaves no lock file


@contextlib.contextmanager
def output_lock(path: str, flag: str | None = None):
    """`with output_lock(path):` — acquire_output_lock / release_output_lock around a block."""
    acquire_output_lock(path, flag)
    try:
        yield
    finally:
        release_output_lock(path)

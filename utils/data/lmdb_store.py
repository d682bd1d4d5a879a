"""Images in an LMDB, in BasicSR's layout.

    NAME.lmdb/
        data.mdb, lock.mdb     the LMDB: key = image name without extension (UTF-8),
                               value = the PNG file's bytes
        meta_info.txt          one line per image: "name.png (h,w,c) compression_level"

`meta_info.txt` is written last (atomically), so an LMDB without it is an unfinished
`prepare` run: readers refuse it, `prepare` resumes it. The index reads sizes from
meta_info.txt alone; pixels are read from the LMDB only when a batch needs them.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache

import numpy as np

from utils.io.atomic import atomic_write_text
from utils.io.errors import UserError
from utils.io.image_io import imdecode_rgb

META_INFO = 'meta_info.txt'
_META_LINE = re.compile(r'^(\S+)\s+\((\d+),\s*(\d+),\s*(\d+)\)(?:\s+(\d+))?\s*$')


def is_lmdb_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, 'data.mdb'))


@lru_cache(maxsize=16)
def read_meta_info(lmdb_dir: str) -> dict:
    """{key: (h, w, c)} of an LMDB from its meta_info.txt, in file order."""
    meta_path = os.path.join(lmdb_dir, META_INFO)
    if not is_lmdb_dir(lmdb_dir):
        raise UserError(f'not an LMDB (no data.mdb): {lmdb_dir}')
    if not os.path.isfile(meta_path):
        raise UserError(f'{lmdb_dir} has no {META_INFO}: it is unfinished '
                        '(rerun `python -m utils.data.prepare` with the same options to complete it)')
    meta = {}
    with open(meta_path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _META_LINE.match(line)
            if not m:
                raise UserError(f'{meta_path}:{number}: expected "name.png (h,w,c) level", '
                                f'got "{line.strip()}"')
            key = os.path.splitext(m.group(1))[0]
            meta[key] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    if not meta:
        raise UserError(f'no images listed in {meta_path}')
    return meta


# One read-only environment per LMDB and process, shared by every reader: py-lmdb refuses a
# second open of the same LMDB in a process, and a forked child inherits the parent's list.
_read_envs, _read_envs_pid = {}, None


def _read_env(lmdb_dir: str):
    import lmdb
    global _read_envs, _read_envs_pid
    if _read_envs_pid != os.getpid():
        # forked (a DataLoader worker): LMDB handles must not cross a fork; close the copies
        # inherited from the parent (this unmaps them in this process only) and reopen
        for env in _read_envs.values():
            env.close()
        _read_envs, _read_envs_pid = {}, os.getpid()
    path = os.path.realpath(lmdb_dir)
    env = _read_envs.get(path)
    if env is None:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
        _read_envs[path] = env
    return env


def close_readers(lmdb_dir: str) -> None:
    """Close this process's read handle of `lmdb_dir` (before writing to it)."""
    env = _read_envs.pop(os.path.realpath(lmdb_dir), None) if _read_envs_pid == os.getpid() else None
    if env is not None:
        env.close()


def read_lmdb_rgb(lmdb_dir: str, key: str) -> np.ndarray:
    """HxWx3 uint8 RGB (0–255) of `key`; UserError if missing or undecodable. The LMDB is
    opened on first use in the calling process (a DataLoader worker)."""
    with _read_env(lmdb_dir).begin(write=False) as txn:
        value = txn.get(key.encode('utf-8'))
        encoded = np.frombuffer(value, dtype=np.uint8).copy() if value is not None else None
    name = f'{lmdb_dir}:{key}'
    if encoded is None:
        raise UserError(f'cannot read image: {name} (key not in the LMDB)')
    return imdecode_rgb(encoded, name)


def pack_lmdb(png_paths: list, keys: list, shapes: list, lmdb_dir: str, compression: int,
              commit_every: int = 500, progress: bool = True) -> int:
    """Store PNG files (their bytes, unchanged) in `lmdb_dir` under `keys`; resumable.

    `shapes` are the (h, w, c) of the images for meta_info.txt. Keys already stored are
    skipped (a rerun after an interruption continues), every `commit_every` images are one
    transaction, and meta_info.txt is written last. Returns the number of images added.
    """
    import lmdb
    from tqdm import tqdm

    if len(set(keys)) != len(keys):
        raise UserError(f'duplicate image names for {lmdb_dir}')
    meta_path = os.path.join(lmdb_dir, META_INFO)
    close_readers(lmdb_dir)
    if os.path.isfile(meta_path):  # finished before: a stale listing must not survive a change
        os.remove(meta_path)
    read_meta_info.cache_clear()
    total = sum(os.path.getsize(p) for p in png_paths)
    existing = os.path.getsize(os.path.join(lmdb_dir, 'data.mdb')) if is_lmdb_dir(lmdb_dir) else 0
    # the map is address space, not disk: reserve ample room for B-tree pages and growth
    env = lmdb.open(lmdb_dir, map_size=int(1.5 * total + existing) + (256 << 20), subdir=True)
    added = 0
    try:
        with env.begin(write=False) as txn:
            done = {k for k in keys if txn.get(k.encode('utf-8')) is not None}
        todo = [(p, k) for p, k in zip(png_paths, keys) if k not in done]
        bar = tqdm(total=len(keys), initial=len(done), unit='img', disable=not progress,
                   desc=f'packing {os.path.basename(lmdb_dir)}')
        for start in range(0, len(todo), commit_every):
            with env.begin(write=True) as txn:  # one transaction: all of the chunk or none
                for path, key in todo[start:start + commit_every]:
                    with open(path, 'rb') as f:
                        txn.put(key.encode('utf-8'), f.read())
            added += len(todo[start:start + commit_every])
            bar.update(len(todo[start:start + commit_every]))
        bar.close()
    finally:
        env.close()
    lines = ''.join(f'{k}.png ({h},{w},{c}) {compression}\n' for k, (h, w, c) in zip(keys, shapes))
    atomic_write_text(meta_path, lines)
    return added

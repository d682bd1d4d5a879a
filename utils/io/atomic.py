"""Atomic file writes: the one way this project writes a file.

A file is written under a temporary name (`.tmp_*`) in its own folder and renamed over the
target only when writing succeeded, so an interrupted run never leaves a truncated file that a
later run would read as valid; the temporary file is removed on failure (after a kill, the
`--resume` of train.py and prune.py removes what is left).
"""
from __future__ import annotations

import contextlib
import os
import tempfile

#: prefix of every temporary file of an atomic write
TEMP_PREFIX = '.tmp_'


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yield a temporary path beside `path`; on a clean exit it replaces `path`.

    Parent folders are created. `suffix` defaults to `path`'s extension (writers such as
    matplotlib pick the format from it). The file gets the permissions of a normal new file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix if suffix is not None else os.path.splitext(path)[1],
                               dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8', newline='') as f:
        f.write(text)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)

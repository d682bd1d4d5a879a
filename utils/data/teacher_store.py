"""A teacher's SR outputs of whole training images, stored once, so that output distillation
reads the teacher's patch with the HR patch instead of running the teacher every step.

A store is a folder of 16-bit PNGs, one per training image, named by `output_name` (the HR
file's stem and a hash of its real absolute path, so equal stems from different folders or
LMDBs do not collide, and the same file spelled another way finds its output), plus
`manifest.json` (the teacher checkpoint's SHA-256, the scale, the number of images, how many
values were clipped).

Values: the teacher output x in 0–1 units (the model's output divided by its input range,
not clamped: a teacher overshoots 0 and 1 near edges) is stored as
round((x + OFFSET) / SPAN · 65535), keeping x in [−0.25, 1.25] with an error of at most
SPAN / 131070 ≈ 1.1e-5 (0.003 of a 0–255 grey level).

The stored output is the teacher's output on the *whole*, un-augmented LR image, cropped,
flipped and rotated with the patch. A teacher run live sees the flipped, rotated patch alone:
at a patch border it sees zero padding where the store saw the image around the patch, and a
network is only nearly equivariant to flips and 90° rotations. The two targets differ by
that much (`python -m utils.engine.precompute --compare N` measures it).
"""
from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np

from utils.io.atomic import atomic_write_text
from utils.io.config import read_json_object
from utils.io.errors import UserError

OFFSET, SPAN = 0.25, 1.5
MANIFEST = 'manifest.json'
_LEVELS = 65535.0


def encode(x: np.ndarray) -> tuple:
    """(HxWx3 uint16, number of clipped values) from an HxWx3 float image in 0–1 units."""
    scaled = np.rint((np.asarray(x, dtype=np.float64) + OFFSET) / SPAN * _LEVELS)
    clipped = int(np.count_nonzero((scaled < 0) | (scaled > _LEVELS)))
    return np.clip(scaled, 0, _LEVELS).astype(np.uint16), clipped


def decode(u16: np.ndarray) -> np.ndarray:
    """float32 in 0–1 units from the uint16 of `encode` (any shape)."""
    return (u16.astype(np.float32) * np.float32(SPAN / _LEVELS) - np.float32(OFFSET))


def canonical_reference(hr_name: str) -> str:
    """`hr_name` (a path, or 'lmdb_folder:key') with its file or LMDB folder resolved to the
    real absolute path, so one image has one name however its path is spelled (relative or
    absolute, through a symlink): a store written with ESR_SHARED=/abs/shared serves a
    training run given ../shared. A name that is neither is returned as it is."""
    if os.path.exists(hr_name):
        return os.path.realpath(hr_name)
    folder, sep, key = hr_name.partition(':')
    if sep and os.path.isdir(folder):
        return f'{os.path.realpath(folder)}:{key}'
    return hr_name


def output_name(hr_name: str) -> str:
    """File name of the stored output of the training image named `hr_name` (a path, or
    'lmdb_folder:key' for an LMDB entry): its stem and a hash of its canonical reference."""
    stem = os.path.splitext(os.path.basename(hr_name.replace(':', '/')))[0]
    digest = hashlib.sha1(canonical_reference(hr_name).encode('utf-8')).hexdigest()[:10]
    return f'{stem}_{digest}.png'


def read_output(path: str) -> np.ndarray:
    """HxWx3 uint16 RGB of a stored output."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'{path} is not a 16-bit RGB teacher output')
    return img[:, :, ::-1]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str, teacher_path: str, scale: int, count: int, clipped: int,
                   finished: bool = True) -> None:
    """The store's manifest. An unfinished one is written before the first output, so that a
    run stopped part-way still names the teacher its outputs came from."""
    atomic_write_text(os.path.join(folder, MANIFEST), json.dumps({
        'teacher': os.path.basename(teacher_path), 'teacher_sha256': file_sha256(teacher_path),
        'scale': scale, 'images': count, 'clipped_values': clipped, 'finished': finished,
        'encoding': f'uint16 = round((x + {OFFSET}) / {SPAN} * 65535), x in 0-1 units'}, indent=1) + '\n')


def read_manifest(folder: str, scale: int, teacher_path: str | None = None,
                  unfinished: bool = False) -> dict:
    """The store's manifest, checked: it exists, is finished (unless `unfinished`: a store
    being resumed), was written for `scale`, and (when `teacher_path` is given) for that very
    teacher checkpoint."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise UserError(f'{folder} is not a finished teacher-output store (no {MANIFEST}); '
                        f'write it with python -m utils.engine.precompute')
    manifest = read_json_object(path, 'teacher-output manifest')
    if not unfinished and not manifest.get('finished', True):  # stores written before the flag are finished
        raise UserError(f'{folder} is not a finished teacher-output store: its writing was stopped; '
                        f'run python -m utils.engine.precompute again to finish it')
    if manifest.get('scale') != scale:
        raise UserError(f'the teacher outputs in {folder} are ×{manifest.get("scale")}, training is ×{scale}')
    if teacher_path is not None and manifest.get('teacher_sha256') != file_sha256(teacher_path):
        raise UserError(f'the teacher outputs in {folder} were written by another checkpoint '
                        f'({manifest.get("teacher")}) than the teacher {teacher_path}')
    return manifest


def store_paths(folder: str, hr_names: list) -> list:
    """The stored output of each training image named in `hr_names`, in order; each must exist."""
    paths = [os.path.join(folder, output_name(name)) for name in hr_names]
    missing = [name for name, path in zip(hr_names, paths) if not os.path.isfile(path)]
    if missing:
        raise UserError(f'{folder} has no teacher output for {len(missing)} of {len(hr_names)} training '
                        f'images (first: {missing[0]}); python -m utils.engine.precompute writes the '
                        f'missing ones')
    return paths

"""Where the training and validation images are: folder layouts, sub-image folders, LMDBs.

Training data (`find_training_pairs`), each `--data_dir` being one of
    a folder of HR images (searched recursively; LR made by MATLAB bicubic),
    a DIV2K root     DIV2K_train_HR/ + DIV2K_train_LR_bicubic/X{s}/,
    an LSDIR root    HR/train/ + X{s}/train/ (also HR/ + X{s}/ or HR/ + LR_bicubic/X{s}/,
                     the layout `python -m utils.data.prepare` writes),
    BasicSR's sub-image folders DIV2K_train_HR_sub/ + DIV2K_train_LR_bicubic/X{s}_sub/,
    an LMDB (a folder with data.mdb and meta_info.txt, e.g. HR.lmdb; its LR partner is
    --lr_dir or the sibling X{s}.lmdb), or a root holding HR.lmdb + X{s}.lmdb or
    DIV2K_train_HR_sub.lmdb + DIV2K_train_LR_bicubic_X{s}_sub.lmdb.
A root with both PNG folders and LMDBs reads the folders; name the .lmdb to read it.
An LR image is found as `{stem}x{s}.ext` or `{stem}.ext` at the HR image's relative path.

Validation data (`validation_set`): a plain HR folder (LR by MATLAB bicubic), an NTIRE root
holding DIV2K_LSDIR_valid_HR/ + DIV2K_LSDIR_valid_LR/ (or DIV2K_valid_HR/ +
DIV2K_valid_LR_bicubic/X{s}/), or one of those HR folders itself (its LR sibling is used).
"""
from __future__ import annotations

import os

from utils.data.eval_sets import NTIRE_LAYOUTS, EvalSet, discover_ntire_sets, folder_set
from utils.data.lmdb_store import is_lmdb_dir, read_meta_info
from utils.io.config import shared_dir
from utils.io.errors import UserError
from utils.io.image_io import IMAGE_EXTENSIONS

_FOLDER_LAYOUTS = (('DIV2K_train_HR', 'DIV2K_train_LR_bicubic/X{s}'),
                   ('HR/train', 'X{s}/train'),                       # LSDIR
                   ('HR', 'X{s}'), ('HR', 'LR_bicubic/X{s}'),
                   ('DIV2K_train_HR_sub', 'DIV2K_train_LR_bicubic/X{s}_sub'))  # BasicSR sub-images
_LMDB_LAYOUTS = (('HR.lmdb', 'X{s}.lmdb'),
                 ('DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X{s}_sub.lmdb'))


def _walk_images(folder: str) -> list:
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        # hidden files are never data: an interrupted writer's .tmp_* files, macOS's ._* files
        paths.extend(os.path.join(root, f) for f in files
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    return sorted(paths)


def _layout(folder: str, scale: int):
    """(hr, lr or None, is_lmdb) if `folder` is one of the known roots, else None."""
    for layouts, is_lmdb in ((_FOLDER_LAYOUTS, False), (_LMDB_LAYOUTS, True)):
        for hr, lr in layouts:
            hr_path = os.path.join(folder, hr)
            if os.path.isdir(hr_path) and (not is_lmdb or is_lmdb_dir(hr_path)):
                lr_path = os.path.join(folder, lr.format(s=scale))
                return hr_path, (lr_path if os.path.isdir(lr_path) else None), is_lmdb
    return None


def _folder_pairs(folder: str, hr_dir: str, lr_dir: str | None, scale: int) -> list:
    hr_paths = _walk_images(hr_dir)
    if not hr_paths:
        raise UserError(f'no images in training data folder {folder}')
    lr_by_stem = {}
    if lr_dir:
        for path in _walk_images(lr_dir):
            stem = os.path.splitext(os.path.relpath(path, lr_dir))[0]
            # a PNG wins over another format of the same name
            if stem not in lr_by_stem or path.lower().endswith('.png'):
                lr_by_stem[stem] = path
    pairs = []
    for hp in hr_paths:
        stem = os.path.splitext(os.path.relpath(hp, hr_dir))[0]
        pairs.append((hp, lr_by_stem.get(f'{stem}x{scale}') or lr_by_stem.get(stem)))
    return pairs


def _lmdb_pairs(hr_lmdb: str, lr_lmdb: str | None) -> list:
    hr_keys = read_meta_info(hr_lmdb)
    lr_keys = read_meta_info(lr_lmdb) if lr_lmdb else {}
    if lr_lmdb:
        missing = [k for k in hr_keys if k not in lr_keys]
        if missing:
            raise UserError(f'{len(missing)} images of {hr_lmdb} are not in {lr_lmdb} '
                            f'(first: {missing[0]})')
    return [((hr_lmdb, k), (lr_lmdb, k) if lr_lmdb else None) for k in sorted(hr_keys)]


def default_training_dirs() -> list:
    """Every folder under $ESR_SHARED/train (sorted): the training data when none is given."""
    root = os.path.join(shared_dir(), 'train')
    return sorted(os.path.join(root, d) for d in os.listdir(root)
                  if os.path.isdir(os.path.join(root, d))) if os.path.isdir(root) else []


def find_training_pairs(data_dirs: list, scale: int, lr_dirs: list | None = None) -> list:
    """[(hr, lr or None)] for every training image, without reading any pixels.

    An image is a file path (str) or an LMDB entry (lmdb_dir, key); lr None means the LR
    is made from the HR by MATLAB bicubic. `lr_dirs[i]` pairs with `data_dirs[i]`.
    """
    pairs = []
    lr_dirs = list(lr_dirs or []) + [None] * (len(data_dirs) - len(lr_dirs or []))
    for folder, lr_dir in zip(data_dirs, lr_dirs):
        if not os.path.isdir(folder):
            raise UserError(f'training data folder not found: {folder}')
        if lr_dir is not None and not os.path.isdir(lr_dir):
            raise UserError(f'LR folder not found: {lr_dir}')
        if is_lmdb_dir(folder):
            if lr_dir is None:
                sibling = os.path.join(os.path.dirname(os.path.abspath(folder)), f'X{scale}.lmdb')
                lr_dir = sibling if is_lmdb_dir(sibling) else None
            pairs.extend(_lmdb_pairs(folder, lr_dir))
            continue
        hr_dir, is_lmdb = folder, False
        layout = _layout(folder, scale)
        if layout and lr_dir is None:
            hr_dir, lr_dir, is_lmdb = layout
        if is_lmdb:
            pairs.extend(_lmdb_pairs(hr_dir, lr_dir if lr_dir and is_lmdb_dir(lr_dir) else None))
        else:
            pairs.extend(_folder_pairs(folder, hr_dir, lr_dir, scale))
    return pairs


def validation_set(path: str, scale: int) -> EvalSet:
    """The validation set at `path`: an NTIRE root, an NTIRE HR folder, or any HR folder."""
    if not os.path.isdir(path):
        raise UserError(f'validation folder not found: {path}')
    found = discover_ntire_sets(path, scale, include_test=False)
    if found:
        return found[0]
    parent, base = os.path.split(os.path.normpath(path))
    for hr_sub, lr_sub in NTIRE_LAYOUTS['valid']:
        lr_dir = os.path.join(parent, lr_sub.format(scale=scale))
        if base == hr_sub and os.path.isdir(lr_dir):
            return folder_set(path, lr_dir, scale, name='valid')
    return folder_set(path, None, scale)

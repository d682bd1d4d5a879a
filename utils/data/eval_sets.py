"""Evaluation sets: discovery of the NTIRE folder layouts, arbitrary HR/LR folders, and
the built-in sample set.

An `EvalSet` is a named list of `EvalItem`s; each item yields its HR image (HxWx3 uint8,
0–255, cropped to a multiple of the scale) and its LR image (uint8, HR/scale), reading
or making them only when asked (DIV2K-size sets do not fit in memory at once).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from utils.io.errors import UserError
from utils.io.image_io import imread_rgb, list_images
from utils.io.matlab_functions import imresize, modcrop

# NTIRE layouts under --data_dir: (set name, HR folder, LR folder), newest first.
NTIRE_LAYOUTS = {
    'valid': [('DIV2K_LSDIR_valid_HR', 'DIV2K_LSDIR_valid_LR'),          # NTIRE 2024+
              ('DIV2K_valid_HR', os.path.join('DIV2K_valid_LR_bicubic', 'X{scale}'))],  # 2022/23
    'test': [('DIV2K_LSDIR_test_HR', 'DIV2K_LSDIR_test_LR'),
             ('DIV2K_test_HR', os.path.join('DIV2K_test_LR_bicubic', 'X{scale}'))],
}

# Natural colour photographs that scikit-image ships inside its wheel (no download).
SAMPLE_IMAGES = ('astronaut', 'chelsea', 'coffee', 'rocket')


class NoTestSetError(UserError):
    """The NTIRE test set was asked for, but no layout of it is under the data folder."""


@dataclass
class EvalItem:
    name: str
    load_lr: Callable[[], np.ndarray]
    load_hr: Callable[[], np.ndarray] | None  # None: no ground truth (NTIRE test LR only)


@dataclass
class EvalSet:
    name: str
    scale: int
    items: list = field(default_factory=list)
    description: str = ''

    def __len__(self):
        return len(self.items)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _find_lr(lr_dir: str | None, name: str, scale: int) -> str | None:
    """The LR file for HR `name`: `{name}x{scale}.ext` (NTIRE/DIV2K) or `{name}.ext`."""
    if not lr_dir:
        return None
    for stem in (f'{name}x{scale}', name):
        for ext in ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'):
            for e in (ext, ext.upper()):
                path = os.path.join(lr_dir, stem + e)
                if os.path.isfile(path):
                    return path
    return None


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR made the standard way: MATLAB bicubic (antialiased) of the modcropped HR."""
    return imresize(modcrop(hr, scale), 1.0 / scale)


def _hr_loader(hr_path: str, scale: int) -> Callable[[], np.ndarray]:
    """Reads the HR image, cropped to a multiple of `scale`."""
    def load() -> np.ndarray:
        return modcrop(imread_rgb(hr_path), scale)
    return load


def _lr_loader(hr_path: str, lr_path: str | None, scale: int) -> Callable[[], np.ndarray]:
    """Reads the LR image, or makes it from the HR image by MATLAB bicubic when `lr_path` is None."""
    def load() -> np.ndarray:
        return bicubic_lr(imread_rgb(hr_path), scale) if lr_path is None else imread_rgb(lr_path)
    return load


def folder_set(hr_dir: str, lr_dir: str | None, scale: int, name: str | None = None) -> EvalSet:
    """Pairs from any HR folder; LR read from `lr_dir` or made by MATLAB bicubic."""
    hr_paths = list_images(hr_dir)
    if lr_dir is not None and not os.path.isdir(lr_dir):
        raise UserError(f'data folder not found: {lr_dir}')
    if name is None:
        base = os.path.basename(os.path.normpath(hr_dir))
        parent = os.path.basename(os.path.dirname(os.path.normpath(hr_dir)))
        name = parent if base.upper() == 'HR' and parent else base
    items, made = [], 0
    for hr_path in hr_paths:
        stem = _stem(hr_path)
        lr_path = _find_lr(lr_dir, stem, scale)
        if lr_path is None:
            made += 1
        items.append(EvalItem(stem, _lr_loader(hr_path, lr_path, scale), _hr_loader(hr_path, scale)))
    how = 'LR by MATLAB bicubic' if made == len(items) else (
        'LR from ' + lr_dir + (f' ({made} made by bicubic)' if made else ''))
    return EvalSet(name, scale, items, f'{name}: {len(items)} images from {hr_dir}, {how}')


def lr_only_set(lr_dir: str, scale: int, name: str) -> EvalSet:
    """LR images without ground truth (the NTIRE test LR): runtime and SR outputs only."""
    items = []
    for lr_path in list_images(lr_dir):
        stem = _stem(lr_path)
        if stem.endswith(f'x{scale}'):
            stem = stem[:-len(f'x{scale}')]
        items.append(EvalItem(stem, (lambda p=lr_path: imread_rgb(p)), None))
    return EvalSet(name, scale, items, f'{name}: {len(items)} LR images from {lr_dir} (no HR)')


def discover_ntire_sets(data_dir: str, scale: int, include_test: bool) -> list:
    """The NTIRE validation (and test) sets found under `data_dir`, newest layout first.

    With `include_test`, NoTestSetError when no test layout is there."""
    found = []
    for split in (['valid', 'test'] if include_test else ['valid']):
        for hr_sub, lr_sub in NTIRE_LAYOUTS[split]:
            hr_dir = os.path.join(data_dir, hr_sub)
            lr_dir = os.path.join(data_dir, lr_sub.format(scale=scale))
            if os.path.isdir(hr_dir):
                found.append(folder_set(hr_dir, lr_dir if os.path.isdir(lr_dir) else None,
                                        scale, name=split))
                break
            if split == 'test' and os.path.isdir(lr_dir):
                found.append(lr_only_set(lr_dir, scale, name=split))
                break
        else:
            if split == 'test':
                raise NoTestSetError(f'no test set under {data_dir} '
                                     f'(looked for DIV2K_LSDIR_test_LR or DIV2K_test_LR_bicubic/X{scale})')
    return found


def sample_set(scale: int, max_side: int | None = None) -> EvalSet:
    """The built-in sample set: scikit-image's colour photographs, LR by MATLAB bicubic.

    `max_side` centre-crops each HR image so that evaluation stays quick on a CPU.
    """
    import skimage.data

    items = []
    for name in SAMPLE_IMAGES:
        def load_hr(n=name):
            img = np.ascontiguousarray(getattr(skimage.data, n)()[..., :3])
            if max_side:
                h, w = img.shape[:2]
                top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
                img = img[top:top + max_side, left:left + max_side]
            return modcrop(img, scale)
        items.append(EvalItem(name, (lambda f=load_hr: imresize(f(), 1.0 / scale)), load_hr))
    return EvalSet('sample', scale, items,
                   f'built-in sample set: {len(items)} scikit-image photographs '
                   f'({", ".join(SAMPLE_IMAGES)}), LR by MATLAB bicubic ÷{scale}')


def check_set(eval_set: EvalSet) -> None:
    """Read every image once and check LR×scale == HR, before any model runs.

    Raises UserError naming the first unreadable image, size mismatch or HR image too small
    to score, so that a bad data folder stops the run before anything is written.
    """
    s = eval_set.scale
    for item in eval_set.items:
        hr = item.load_hr() if item.load_hr is not None else None
        # PSNR leaves out a border of `scale` pixels on every side: a (modcropped) HR side
        # below 3 × scale leaves nothing, or one LR pixel's worth, to compare
        if hr is not None and min(hr.shape[:2]) < 3 * s:
            raise UserError(f'{eval_set.name}/{item.name}: HR {hr.shape[1]}x{hr.shape[0]} (cropped to a '
                            f'multiple of {s}) is too small to score at ×{s}: PSNR leaves out a {s}-pixel '
                            f'border, so each side needs at least {3 * s} pixels (an LR of 3x3)')
        lr = item.load_lr()
        if hr is None:
            continue
        if (lr.shape[0] * s, lr.shape[1] * s) != hr.shape[:2]:
            raise UserError(f'{eval_set.name}/{item.name}: LR {lr.shape[1]}x{lr.shape[0]} ×{s} '
                            f'does not match HR {hr.shape[1]}x{hr.shape[0]}')

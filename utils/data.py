"""Training data: HR folders (LR made by MATLAB bicubic and cached) or paired HR/LR folders
in the DIV2K and LSDIR layouts; random patches with flips and 90° rotations.

Every batch is a pure function of (seed, step, rank): `PatchBatches[step]` draws its crops
from an RNG seeded with those numbers. So resuming at step t reproduces exactly the batches
an uninterrupted run would have drawn (the data position is the step), and N processes
with local batch B/N see together exactly the global batch of one process with batch B.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings

import numpy as np
import torch
from tqdm import tqdm

from .errors import UserError
from .image_io import IMAGE_EXTENSIONS, imread_rgb
from .matlab_functions import imresize, modcrop


def parse_patch_schedule(text: str | None, default_patch: int, total_iters: int) -> list:
    """'64:1000,160:500:4' -> [(64, 1000, None), (160, 500, 4)]: (LR patch size, steps, batch).

    A stage's batch is optional (None: the run's --batch_size); a larger-patch stage with a
    smaller batch keeps the pixels per step, hence the step time, comparable. Without a
    schedule, one stage of `default_patch` for `total_iters`.
    """
    if not text:
        return [(default_patch, total_iters, None)]
    stages = []
    for part in text.split(','):
        m = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?', part)
        if not m or int(m.group(1)) < 8 or int(m.group(2)) < 1 or (m.group(3) and int(m.group(3)) < 1):
            raise UserError(f'bad --patch_schedule "{text}": expected PATCH:STEPS[:BATCH][,...] '
                            'with PATCH >= 8, STEPS >= 1 and BATCH >= 1, e.g. 64:1000,160:500')
        stages.append((int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None))
    return stages


def stage_at(schedule: list, step: int) -> tuple:
    """The (patch, steps, batch) stage that global step `step` (0-based) falls in.

    Stages may also be given as (patch, steps) pairs (batch None)."""
    found = schedule[-1]
    for stage in schedule:
        if step < stage[1]:
            found = stage
            break
        step -= stage[1]
    return (found[0], found[1], found[2] if len(found) > 2 else None)


def patch_size_at(schedule: list, step: int) -> int:
    return stage_at(schedule, step)[0]


def _walk_images(folder: str) -> list:
    paths = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(root, f))
    return sorted(paths)


def _layout_pairs(folder: str, scale: int):
    """(hr_dir, lr_dir) if `folder` has the DIV2K or LSDIR layout, else None."""
    for hr, lr in (('DIV2K_train_HR', f'DIV2K_train_LR_bicubic/X{scale}'),
                   ('HR/train', f'X{scale}/train'),            # LSDIR
                   ('HR', f'X{scale}'), ('HR', f'LR_bicubic/X{scale}')):
        if os.path.isdir(os.path.join(folder, hr)):
            lr_dir = os.path.join(folder, lr)
            return os.path.join(folder, hr), (lr_dir if os.path.isdir(lr_dir) else None)
    return None


def find_training_pairs(data_dirs: list, scale: int, lr_dirs: list | None = None) -> list:
    """[(hr_path, lr_path or None)] from folders of HR images or DIV2K/LSDIR layouts."""
    pairs = []
    lr_dirs = list(lr_dirs or []) + [None] * (len(data_dirs) - len(lr_dirs or []))
    for folder, lr_dir in zip(data_dirs, lr_dirs):
        if not os.path.isdir(folder):
            raise UserError(f'training data folder not found: {folder}')
        hr_dir = folder
        layout = _layout_pairs(folder, scale)
        if layout and lr_dir is None:
            hr_dir, lr_dir = layout
        hr_paths = _walk_images(hr_dir)
        if not hr_paths:
            raise UserError(f'no images in training data folder {folder}')
        for hp in hr_paths:
            lp = None
            if lr_dir:
                rel = os.path.relpath(hp, hr_dir)
                stem, _ = os.path.splitext(rel)
                for cand in (f'{stem}x{scale}.png', f'{stem}.png'):
                    if os.path.isfile(os.path.join(lr_dir, cand)):
                        lp = os.path.join(lr_dir, cand)
                        break
            pairs.append((hp, lp))
    return pairs


class PairCache:
    """HR and LR images as uint8 arrays, decoded and bicubic-downscaled once.

    Small sets live in memory; with `cache_dir` they go to .npy files read by memory map
    (DIV2K/LSDIR size), so a training step never decodes or resizes an image.
    """

    def __init__(self, pairs: list, scale: int, min_lr_size: int, cache_dir: str | None = None,
                 progress: bool = True):
        self.scale = scale
        self.hr, self.lr, self.names = [], [], []
        self.skipped = 0
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        for hp, lp in tqdm(pairs, desc='caching training images', unit='img', disable=not progress,
                           leave=False):
            hr, lr = self._load(hp, lp, cache_dir)
            if min(lr.shape[:2]) < min_lr_size:
                self.skipped += 1
                continue
            self.hr.append(hr)
            self.lr.append(lr)
            self.names.append(hp)
        if not self.hr:
            raise UserError(f'no training image is at least {min_lr_size} LR pixels '
                            f'({min_lr_size * scale} HR) on each side ({self.skipped} skipped)')

    def _load(self, hp: str, lp: str | None, cache_dir: str | None):
        s = self.scale
        if cache_dir:
            key = hashlib.sha1(f'{os.path.abspath(hp)}|{lp}|{os.path.getmtime(hp)}|x{s}'.encode()).hexdigest()[:16]
            hr_file = os.path.join(cache_dir, f'{key}_hr.npy')
            lr_file = os.path.join(cache_dir, f'{key}_lr.npy')
            if os.path.isfile(hr_file) and os.path.isfile(lr_file):
                return np.load(hr_file, mmap_mode='r'), np.load(lr_file, mmap_mode='r')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            hr = modcrop(imread_rgb(hp), s)
            lr = imread_rgb(lp) if lp else imresize(hr, 1.0 / s)
        if lr.shape[0] * s != hr.shape[0] or lr.shape[1] * s != hr.shape[1]:
            raise UserError(f'training pair {hp}: LR {lr.shape[:2]} ×{s} != HR {hr.shape[:2]}')
        if cache_dir:
            for arr, f in ((hr, hr_file), (lr, lr_file)):
                tmp = f + '.tmp.npy'
                np.save(tmp, np.ascontiguousarray(arr))
                os.replace(tmp, f)
            return np.load(hr_file, mmap_mode='r'), np.load(lr_file, mmap_mode='r')
        return np.ascontiguousarray(hr), np.ascontiguousarray(lr)

    def __len__(self):
        return len(self.hr)

    def eligible(self, patch: int) -> np.ndarray:
        """Indices of the images whose LR is at least `patch` pixels on each side."""
        if not hasattr(self, '_eligible'):
            self._eligible = {}
        if patch not in self._eligible:
            self._eligible[patch] = np.array([i for i, x in enumerate(self.lr)
                                              if min(x.shape[:2]) >= patch], dtype=np.int64)
        return self._eligible[patch]


def random_patch(lr: np.ndarray, hr: np.ndarray, patch: int, scale: int, rng: np.random.Generator):
    """An aligned LR patch (patch²) and HR patch ((patch·scale)²) with a random flip/rotation."""
    h, w = lr.shape[:2]
    top = int(rng.integers(0, h - patch + 1))
    left = int(rng.integers(0, w - patch + 1))
    lp = lr[top:top + patch, left:left + patch]
    hp = hr[top * scale:(top + patch) * scale, left * scale:(left + patch) * scale]
    if rng.random() < 0.5:
        lp, hp = lp[:, ::-1], hp[:, ::-1]
    if rng.random() < 0.5:
        lp, hp = lp[::-1], hp[::-1]
    k = int(rng.integers(0, 4))
    lp, hp = np.rot90(lp, k), np.rot90(hp, k)
    return lp, hp


class PatchBatches(torch.utils.data.Dataset):
    """Item `step` is this rank's share of the global batch of that step.

    Returns (lr, hr): float32 tensors (b, 3, p, p) and (b, 3, p·s, p·s) in 0–1, where
    b = (the stage's batch, else batch_size) // world_size and p follows the patch schedule.
    """

    def __init__(self, cache: PairCache, batch_size: int, schedule: list, seed: int,
                 rank: int = 0, world_size: int = 1, total_steps: int = 10 ** 9):
        stage_batches = [stage_at([stage], 0)[2] for stage in schedule]  # pairs allowed
        for batch in [batch_size] + [b for b in stage_batches if b]:
            if batch % world_size:
                raise UserError(f'batch {batch} must be divisible by the {world_size} processes')
        for patch, *_ in schedule:
            if len(cache.eligible(patch)) == 0:
                raise UserError(f'no training image has an LR side of at least {patch} pixels '
                                f'(patch size {patch} of the schedule)')
        self.cache, self.batch_size, self.schedule = cache, batch_size, schedule
        self.seed, self.rank, self.world_size, self.total_steps = seed, rank, world_size, total_steps

    def __len__(self):
        return self.total_steps

    def __getitem__(self, step: int):
        patch, _, batch = stage_at(self.schedule, step)
        s = self.cache.scale
        lrs, hrs = [], []
        for j in range(self.rank, batch or self.batch_size, self.world_size):
            rng = np.random.default_rng([self.seed, step, j])
            # a later, larger patch stage draws only from the images big enough for it
            candidates = self.cache.eligible(patch)
            i = int(candidates[rng.integers(0, len(candidates))])
            lp, hp = random_patch(self.cache.lr[i], self.cache.hr[i], patch, s, rng)
            lrs.append(np.ascontiguousarray(lp))
            hrs.append(np.ascontiguousarray(hp))
        lr_t = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div_(255.0)
        hr_t = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float().div_(255.0)
        return lr_t, hr_t

"""Random aligned patches with flips and 90° rotations, as batches that are pure functions
of (seed, step, rank).

`PatchBatches[step]` draws its crops from RNGs seeded with those numbers, so resuming at
step t reproduces exactly the batches an uninterrupted run would have drawn (the data
position is the step), N processes with local batch B/N see together exactly the global
batch of one process with batch B, and the number of DataLoader workers changes nothing.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from utils.data.schedule import stage_at
from utils.data.training_set import TrainingSet, UnreadableImage
from utils.io.errors import UserError


def draw_patch(lr_shape: tuple, patch: int, rng: np.random.Generator) -> tuple:
    """(top, left, hflip, vflip, quarter_turns) of a random patch² LR crop in an LR (h, w)."""
    h, w = lr_shape
    top = int(rng.integers(0, h - patch + 1))
    left = int(rng.integers(0, w - patch + 1))
    hflip, vflip = rng.random() < 0.5, rng.random() < 0.5
    return top, left, hflip, vflip, int(rng.integers(0, 4))


def augment(patches: tuple, hflip: bool, vflip: bool, quarter_turns: int) -> tuple:
    """The same flips and rotation applied to aligned patches (HxWx3 arrays: LR, HR and
    the teacher's output when there is one)."""
    if hflip:
        patches = [p[:, ::-1] for p in patches]
    if vflip:
        patches = [p[::-1] for p in patches]
    return tuple(np.rot90(p, quarter_turns) for p in patches)


class PatchBatches(torch.utils.data.Dataset):
    """Item `step` is this rank's share of the global batch of that step.

    Returns (lr, hr): float32 tensors (b, 3, p, p) and (b, 3, p·s, p·s) in 0–1, where
    b = (the stage's batch, else batch_size) // world_size and p follows the patch schedule;
    (lr, hr, teacher) when the set has teacher outputs attached, teacher like hr (0–1 units,
    not clamped).

    Row j of a step draws (image, position, flips) from the RNG seeded (seed, step, j). An
    image that turns out undecodable is skipped (with a warning naming it) by drawing again
    from the same RNG: a process that already knows the image is bad consumes the RNG
    exactly as one that finds out, so batches stay independent of workers and resumes.
    """

    def __init__(self, train_set: TrainingSet, batch_size: int, schedule: list, seed: int,
                 rank: int = 0, world_size: int = 1, total_steps: int = 10 ** 9):
        stage_batches = [stage_at([stage], 0)[2] for stage in schedule]  # pairs allowed
        for batch in [batch_size] + [b for b in stage_batches if b]:
            if batch % world_size:
                raise UserError(f'batch {batch} must be divisible by the {world_size} processes')
        for patch, *_ in schedule:
            if len(train_set.eligible(patch)) == 0:
                raise UserError(f'no training image has an LR side of at least {patch} pixels '
                                f'(patch size {patch} of the schedule)')
        self.train_set, self.batch_size, self.schedule = train_set, batch_size, schedule
        self.seed, self.rank, self.world_size, self.total_steps = seed, rank, world_size, total_steps

    def __len__(self):
        return self.total_steps

    def _draw(self, rng: np.random.Generator, patch: int) -> tuple:
        data = self.train_set
        candidates = data.eligible(patch)  # a later, larger patch stage draws from fewer images
        while True:
            i = int(candidates[rng.integers(0, len(candidates))])
            top, left, *flips = draw_patch(data.lr_shapes[i], patch, rng)
            if i not in data.bad:
                try:
                    return augment(data.crop(i, top, left, patch), *flips)
                except UnreadableImage as exc:
                    data.bad.add(i)
                    warnings.warn(f'skipping unreadable training image {exc}', stacklevel=2)
            if data.bad.issuperset(candidates.tolist()):
                raise UserError(f'none of the {len(candidates)} training images with an LR side of '
                                f'at least {patch} pixels can be decoded')

    def __getitem__(self, step: int):
        patch, _, batch = stage_at(self.schedule, step)
        rows = [self._draw(np.random.default_rng([self.seed, step, j]), patch)
                for j in range(self.rank, batch or self.batch_size, self.world_size)]
        lr_t, hr_t, *teacher = (torch.from_numpy(np.stack([np.ascontiguousarray(p) for p in patches]))
                                .permute(0, 3, 1, 2).float() for patches in zip(*rows))
        return (lr_t.div_(255.0), hr_t.div_(255.0), *teacher)

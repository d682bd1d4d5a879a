"""Short fine-tuning rounds between pruning steps, the one way they are built.

prune.py (channel, kernel, bias and block modes, through `utils.compress.prune_loop`) and the
FMP mode (`utils.compress.fmp.run_fmp`) all fine-tune with a `Finetuner`: a fresh Trainer per
round (constant LR, Adam state from zero, seeded), one shared training-image index, no
validation and no checkpoint kept; the round trains in OUT_DIR/_finetune, which is removed
afterwards.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace

import torch.nn as nn

from utils.data import TrainingSet
from utils.engine.training import TrainConfig, Trainer

#: the scratch folder of a round, inside the pruning run's output folder
SCRATCH_DIR = '_finetune'


@dataclass
class FinetuneSettings:
    """How every round trains: `iters` steps of `batch_size` LR patches of `patch_size`
    pixels at a constant `lr`, pixel loss `loss` ('l1' or 'l2')."""
    iters: int
    lr: float = 1e-4
    batch_size: int = 16
    patch_size: int = 64
    loss: str = 'l1'
    workers: int = 2
    seed: int = 0
    device: str = 'cpu'
    progress: bool = True


def finetune_config(settings: FinetuneSettings, out_dir: str, scale: int, distill: bool) -> TrainConfig:
    """The TrainConfig of one round: output distillation as well as the pixel loss when
    `distill`; validation and periodic checkpoints off."""
    return TrainConfig(out_dir=out_dir, data_dirs=[], scale=scale, batch_size=settings.batch_size,
                       patch_size=settings.patch_size, iters=settings.iters, lr=settings.lr,
                       scheduler='constant', loss=settings.loss,
                       distill='output' if distill else 'none', val_every=0, save_every=10 ** 9,
                       workers=settings.workers, seed=settings.seed, device=settings.device,
                       log_every=10, progress=settings.progress)


class Finetuner:
    """`finetuner(model, post_step=None)` trains `model` in place for one round and returns
    the Trainer's summary. `teacher` (frozen) adds output distillation; `post_step(model)` runs
    after every optimizer step (FMP re-applies its weight masks there)."""

    def __init__(self, settings: FinetuneSettings, train_set: TrainingSet, work_dir: str,
                 teacher: nn.Module | None = None):
        self.settings = settings
        self.train_set = train_set
        self.teacher = teacher
        self.scratch = os.path.join(work_dir, SCRATCH_DIR)

    def __call__(self, model: nn.Module, post_step=None, iters: int | None = None) -> dict:
        """One round; `iters` overrides the settings' number of steps for this round."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        settings = self.settings if iters is None else replace(self.settings, iters=iters)
        cfg = finetune_config(settings, self.scratch, model.scale, self.teacher is not None)
        summary = Trainer(model, cfg, self.teacher, train_set=self.train_set, post_step=post_step).fit()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return summary


def make_finetuner(settings: FinetuneSettings, train_set: TrainingSet, work_dir: str,
                   teacher: nn.Module | None = None) -> Finetuner | None:
    """A Finetuner, or None when `settings.iters` is 0 (no fine-tuning)."""
    if settings.iters <= 0:
        return None
    return Finetuner(settings, train_set, work_dir, teacher)

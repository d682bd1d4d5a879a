"""The training engine behind `train.py` (and the fine-tuning of `prune.py` later).

One loop for every model and stage: pixel loss (L1 / L2), feature distillation from a
frozen teacher (the student's `distillation_features` matched to the teacher's) or output
distillation, Adam, multi-step or cosine schedule, gradient clipping, optional EMA, AMP on
CUDA, DistributedDataParallel under torchrun, validation PSNR-Y with the project's metric
code, atomic checkpoints and exact resume.

Files in `out_dir`:
    state.pth        training state to resume from (model, optimizer, scheduler, EMA, step,
                     torch RNG, best PSNR): a dict of state_dicts, loadable with weights_only
    model_last.pth   plain model state_dict (what load_model / test_demo read)
    model_best.pth   plain model state_dict of the best validation PSNR-Y
    log.csv          one row per logged step (and per validation)
    curves.png       loss and validation PSNR curves (with plot=True)
"""
from __future__ import annotations

import copy
import csv
import fnmatch
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from utils.data import PatchBatches, TrainingSet, find_training_pairs, parse_patch_schedule, validation_set
from utils.engine.evaluate import evaluate
from utils.io.atomic import atomic_path
from utils.io.checkpoint import describe_mismatch, remove_stale_temp_files, save_atomic, save_state_dict
from utils.io.errors import UserError


@dataclass
class TrainConfig:
    out_dir: str
    data_dirs: list
    lr_dirs: list = field(default_factory=list)
    scale: int = 4
    batch_size: int = 16
    patch_size: int = 64
    patch_schedule: str | None = None
    iters: int = 1000
    lr: float = 1e-4
    scheduler: str = 'multistep'          # multistep | cosine | constant
    milestones: tuple = ()
    gamma: float = 0.5
    min_lr: float = 1e-7
    loss: str = 'l1'                      # l1 | l2
    pixel_weight: float = 1.0
    distill: str = 'none'                 # none | features | output
    distill_weight: float = 1.0
    grad_clip: float = 0.0
    ema: float = 0.0
    amp: bool = False
    workers: int = 2
    seed: int = 0
    val_every: int = 500
    val_hr_dir: str | None = None
    save_every: int = 100
    log_every: int = 10
    plot: bool = False
    decode_cache_mb: float = 256.0       # decoded images kept per data-loading process
    device: str = 'cpu'
    progress: bool = True
    profile: bool = False


def select_trainable(model: nn.Module, trainable: list | None, freeze: list | None) -> list:
    """Parameters left trainable: those matching `trainable` (all if None), minus `freeze`.

    Patterns are fnmatch patterns over parameter names, e.g. 'S*' or 'B?.esa.*'.
    """
    names = []
    for name, p in model.named_parameters():
        on = trainable is None or any(fnmatch.fnmatch(name, pat) for pat in trainable)
        if freeze and any(fnmatch.fnmatch(name, pat) for pat in freeze):
            on = False
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise UserError('no parameter left to train: check --trainable / --freeze patterns')
    return names


def make_scheduler(opt, cfg: TrainConfig):
    if cfg.scheduler == 'cosine':
        floor = cfg.min_lr / cfg.lr

        def factor(step):
            t = min(step, cfg.iters) / max(1, cfg.iters)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    elif cfg.scheduler == 'multistep':
        milestones = sorted(cfg.milestones)

        def factor(step):
            return cfg.gamma ** sum(step >= m for m in milestones)
    elif cfg.scheduler == 'constant':
        def factor(step):
            return 1.0
    else:
        raise UserError(f'unknown --scheduler {cfg.scheduler} (multistep, cosine, constant)')
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: str) -> tuple[int, int, str]:
    """Initialise torch.distributed under torchrun (NCCL on GPUs, gloo on the CPU)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
        dist.init_process_group(backend)
        if device.startswith('cuda'):
            local = int(os.environ.get('LOCAL_RANK', '0'))
            torch.cuda.set_device(local)
            device = f'cuda:{local}'
    rank, world = _dist_info()
    return rank, world, device


class _StudentStep(nn.Module):
    """What one training step needs from the student, as one forward call, so that
    DistributedDataParallel sees (and synchronises) every path, feature distillation too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, want_output: bool, want_features: bool):
        out = self.model(x) if want_output else None
        feats = self.model.distillation_features(x) if want_features else None
        return out, feats


class Trainer:
    """Trains `model` (an SRModel) by the config; `teacher` is needed for distillation."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, teacher: nn.Module | None = None,
                 trainable: list | None = None, freeze: list | None = None,
                 train_set: TrainingSet | None = None, val_set=None, post_step=None):
        self.cfg = cfg
        self.post_step = post_step  # called with the model after every optimizer step
        self.rank, self.world, device = setup_distributed(cfg.device)
        self.device = torch.device(device)
        self.is_main = self.rank == 0
        if cfg.distill != 'none' and teacher is None:
            raise UserError(f'--distill {cfg.distill} needs --teacher')
        if cfg.distill == 'features' and not (hasattr(model, 'distillation_features')
                                              and hasattr(teacher, 'distillation_features')):
            raise UserError(f'--distill features: {type(model).__name__} and '
                            f'{type(teacher).__name__} have no matching features')
        if cfg.loss not in ('l1', 'l2'):
            raise UserError(f'unknown --loss {cfg.loss} (l1, l2)')
        if cfg.iters < 1:
            raise UserError('--iters must be at least 1')
        self.schedule = parse_patch_schedule(cfg.patch_schedule, cfg.patch_size, cfg.iters)
        if cfg.patch_schedule:
            cfg.iters = sum(stage[1] for stage in self.schedule)
        torch.manual_seed(cfg.seed)

        self.model = model.to(self.device)
        self.trainable_names = select_trainable(self.model, trainable, freeze)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.range = float(getattr(model, 'input_range', 255.0))
        self.step_module = _StudentStep(self.model)
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == 'cuda' else None)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        self.sched = make_scheduler(self.opt, cfg)
        self.ema = copy.deepcopy(self.model).eval() if cfg.ema > 0 else None
        self.scaler = torch.amp.GradScaler('cuda', enabled=cfg.amp and self.device.type == 'cuda')
        self.step = 0
        self.best_psnr = -math.inf
        self.history = []

        # data: every problem with it surfaces here, before the first step
        min_patch = min(stage[0] for stage in self.schedule)
        if train_set is None:  # prune.py passes one index to all its fine-tuning rounds
            # only names and header sizes here: pixels are decoded by the DataLoader workers
            pairs = find_training_pairs(cfg.data_dirs, cfg.scale, cfg.lr_dirs)
            train_set = TrainingSet(pairs, cfg.scale, min_patch, cfg.decode_cache_mb,
                                    cfg.progress and self.is_main)
            if train_set.skipped and self.is_main:
                print(f'skipped {train_set.skipped} training images smaller than one '
                      f'{min_patch}-pixel LR patch')
        self.train_set = train_set
        if val_set is None and cfg.val_hr_dir:
            val_set = validation_set(cfg.val_hr_dir, cfg.scale)
        self.val_set = val_set
        os.makedirs(cfg.out_dir, exist_ok=True)
        self.state_path = os.path.join(cfg.out_dir, 'state.pth')
        self.log_path = os.path.join(cfg.out_dir, 'log.csv')

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {'model': self.model.state_dict(), 'optimizer': self.opt.state_dict(),
                 'scheduler': self.sched.state_dict(), 'step': self.step,
                 'best_psnr': self.best_psnr, 'torch_rng': torch.get_rng_state()}
        if self.ema is not None:
            state['ema'] = self.ema.state_dict()
        if self.scaler.is_enabled():
            state['scaler'] = self.scaler.state_dict()
        return state

    def save(self) -> None:
        if not self.is_main:
            return
        save_atomic(self.state_dict(), self.state_path)
        save_state_dict(self.export_model().state_dict(), os.path.join(self.cfg.out_dir, 'model_last.pth'))

    def resume(self) -> bool:
        """Continue from out_dir/state.pth if there is one; returns whether it did.

        First removes the temporary files of saves that a kill interrupted (the files they
        would have replaced are intact: writes are atomic)."""
        if self.is_main:
            stale = remove_stale_temp_files(self.cfg.out_dir) if os.path.isdir(self.cfg.out_dir) else []
            if stale:
                print(f'removed {len(stale)} temporary file(s) of an interrupted save: {", ".join(stale)}')
        if not os.path.isfile(self.state_path):
            return False
        try:
            state = torch.load(self.state_path, map_location='cpu', weights_only=True)
            problem = describe_mismatch(self.model, state['model'])
            if problem:  # e.g. another --model than the run was started with
                raise UserError(f'cannot resume from {self.state_path}: its model does not fit '
                                f'{type(self.model).__name__} (was --model changed?): {problem}')
            self.model.load_state_dict(state['model'], strict=True)
            self.opt.load_state_dict(state['optimizer'])
            self.sched.load_state_dict(state['scheduler'])
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f'cannot resume from {self.state_path}: '
                            f'{str(exc).splitlines()[0][:160]}') from None
        if self.ema is not None and 'ema' in state:
            self.ema.load_state_dict(state['ema'])
        if 'scaler' in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state['scaler'])
        self.step = int(state['step'])
        self.best_psnr = float(state['best_psnr'])
        torch.set_rng_state(state['torch_rng'])
        if self.is_main:
            print(f'resumed from {self.state_path} at step {self.step}')
        return True

    def export_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA copy when EMA is on."""
        return self.ema if self.ema is not None else self.model

    # -- one step --------------------------------------------------------------------
    def losses(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """Loss terms on one batch; lr/hr in 0–1, the model sees its own input range."""
        cfg = self.cfg
        x = lr * self.range
        want_output = cfg.pixel_weight > 0 or cfg.distill == 'output'
        sr, feats = self.step_module(x, want_output, cfg.distill == 'features')
        out = {}
        total = 0.0
        if cfg.pixel_weight > 0:
            sr01 = sr / self.range
            pix = F.l1_loss(sr01, hr) if cfg.loss == 'l1' else F.mse_loss(sr01, hr)
            out['pixel'] = pix.detach()
            total = total + cfg.pixel_weight * pix
        if cfg.distill == 'output':
            with torch.no_grad():
                target = self.teacher(x)
            d = F.l1_loss(sr, target) / self.range
            out['distill'] = d.detach()
            total = total + cfg.distill_weight * d
        elif cfg.distill == 'features':
            with torch.no_grad():
                targets = self.teacher.distillation_features(x)
            # features live in the model's range (0–255 for RFDN): scale to 0–1 units
            d = sum(F.l1_loss(f, t) for f, t in zip(feats, targets)) / (len(targets) * self.range)
            out['distill'] = d.detach()
            total = total + cfg.distill_weight * d
        out['total'] = total
        return out

    @torch.enable_grad()  # whatever the caller's grad mode (e.g. prune.py between evaluations)
    def train_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        cfg = self.cfg
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
            losses = self.losses(lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True))
        total = losses['total']
        if not torch.isfinite(total.detach()):
            kept = (f'the last checkpoint in {cfg.out_dir} is intact' if os.path.isfile(self.state_path)
                    else 'no checkpoint was written')
            raise UserError(f'loss is {total.item()} at step {self.step}: stopping without saving; '
                            f'{kept} (lower --lr or use --grad_clip)')
        self.scaler.scale(total).backward()  # under DDP the gradients are averaged here
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.post_step is not None:  # e.g. re-apply weight-pruning masks
            self.post_step(self.model)
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
                    if e.dtype.is_floating_point:
                        e.mul_(cfg.ema).add_(p.detach(), alpha=1 - cfg.ema)
                    else:
                        e.copy_(p)
        self.step += 1
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}

    # -- validation and logs ------------------------------------------------------------
    def validate(self) -> float | None:
        if self.val_set is None or not self.is_main:
            return None
        model = self.export_model().eval()
        with torch.no_grad():
            res = evaluate(model, self.val_set, self.device, progress=False, warmup=False)
        psnr_y = sum(res['psnr_y']) / len(res['psnr_y'])
        if psnr_y > self.best_psnr:
            self.best_psnr = psnr_y
            save_state_dict(model.state_dict(), os.path.join(self.cfg.out_dir, 'model_best.pth'))
        return psnr_y

    def _log(self, row: dict) -> None:
        if not self.is_main:
            return
        self.history.append(row)
        fields = ['step', 'time', 'lr', 'loss', 'pixel', 'distill', 'patch', 'data_ms', 'step_ms',
                  'val_psnr_y']
        new = not os.path.isfile(self.log_path)
        with open(self.log_path, 'a', newline='') as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
            if new:
                w.writeheader()
            w.writerow(row)

    def plot(self) -> None:
        if not self.is_main or not os.path.isfile(self.log_path):
            return
        plot_training_log(self.log_path, os.path.join(self.cfg.out_dir, 'curves.png'))

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg = self.cfg
        data = PatchBatches(self.train_set, cfg.batch_size, self.schedule, cfg.seed, self.rank,
                            self.world, total_steps=cfg.iters)
        # the sampler starts at the current step: resuming continues the same batch stream
        sampler = range(self.step, cfg.iters)
        loader = torch.utils.data.DataLoader(
            data, batch_size=None, sampler=sampler, num_workers=cfg.workers,
            pin_memory=self.device.type == 'cuda', persistent_workers=False,
            prefetch_factor=4 if cfg.workers > 0 else None)
        bar = tqdm(total=cfg.iters, initial=self.step, disable=not (cfg.progress and self.is_main),
                   unit='it', dynamic_ncols=True, desc=os.path.basename(os.path.normpath(cfg.out_dir)))
        data_time = step_time = 0.0
        window_data = window_step = 0.0
        window_n = 0
        t_start = time.perf_counter()
        t0 = time.perf_counter()
        last_saved = self.step
        self._first_step = self.step
        for lr, hr in _one_line_errors(loader):
            t1 = time.perf_counter()
            patch = lr.shape[-1]
            losses = self.train_step(lr, hr)
            t2 = time.perf_counter()
            data_time += t1 - t0
            step_time += t2 - t0
            window_data += t1 - t0
            window_step += t2 - t0
            window_n += 1
            t0 = t2
            bar.update(1)
            bar.set_postfix(loss=f'{losses["total"]:.4g}', lr=f'{self.sched.get_last_lr()[0]:.2e}',
                            data=f'{100 * window_data / max(window_step, 1e-9):.0f}%')
            if self.step % cfg.log_every == 0 or self.step == cfg.iters:
                self._log({'step': self.step, 'time': round(time.perf_counter() - t_start, 2),
                           'lr': self.sched.get_last_lr()[0], 'loss': losses['total'],
                           'pixel': losses.get('pixel', ''), 'distill': losses.get('distill', ''),
                           'patch': patch, 'data_ms': round(1000 * window_data / window_n, 2),
                           'step_ms': round(1000 * window_step / window_n, 2)})
                window_data = window_step = 0.0
                window_n = 0
            if self.step % cfg.save_every == 0 or self.step == cfg.iters:
                if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == cfg.iters):
                    psnr = self.validate()
                    if psnr is not None:
                        self._log({'step': self.step, 'val_psnr_y': round(psnr, 4)})
                        bar.write(f'step {self.step}: validation PSNR-Y {psnr:.3f} dB '
                                  f'(best {self.best_psnr:.3f})')
                self.save()
                last_saved = self.step
            elif cfg.val_every and self.step % cfg.val_every == 0:
                psnr = self.validate()
                if psnr is not None:
                    self._log({'step': self.step, 'val_psnr_y': round(psnr, 4)})
                    bar.write(f'step {self.step}: validation PSNR-Y {psnr:.3f} dB '
                              f'(best {self.best_psnr:.3f})')
        bar.close()
        if self.step != last_saved:
            self.save()
        if cfg.plot:
            self.plot()
        share = data_time / step_time if step_time else 0.0
        summary = {'steps': self.step, 'best_psnr_y': self.best_psnr, 'data_wait_share': share,
                   'sec_per_step': step_time / max(1, self.step)}
        if cfg.profile and self.is_main:
            print(f'profile: {100 * share:.1f}% of step time waiting for data '
                  f'({data_time:.1f} s of {step_time:.1f} s over {self.step - self._first_step} steps)')
        return summary


def _one_line_errors(loader):
    """The loader's batches; a UserError raised in a DataLoader worker (which arrives
    wrapped in the worker's traceback) is raised again with its own one-line message."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except UserError as exc:
            last = str(exc).strip().splitlines()[-1]
            raise UserError(last.split('UserError: ', 1)[-1]) from None
        yield batch


def plot_training_log(csv_path: str, png_path: str) -> None:
    """Loss (log scale) and validation PSNR-Y against the step, from log.csv."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    steps, loss, vsteps, vpsnr = [], [], [], []
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            if row.get('val_psnr_y'):
                vsteps.append(int(row['step']))
                vpsnr.append(float(row['val_psnr_y']))
            elif row.get('loss'):
                steps.append(int(row['step']))
                loss.append(float(row['loss']))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(steps, loss)
    a1.set_yscale('log')
    a1.set_xlabel('step')
    a1.set_ylabel('training loss')
    a1.grid(alpha=0.3)
    a2.plot(vsteps, vpsnr, marker='o')
    a2.set_xlabel('step')
    a2.set_ylabel('validation PSNR-Y (dB)')
    a2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

"""The training engine behind `train.py` and the fine-tuning rounds of `prune.py`.

One loop for every model and stage: the loss terms of `utils.engine.losses` (pixel L1 / L2,
feature or output distillation from a frozen teacher), Adam, multi-step, cosine or constant
schedule, gradient clipping, optional EMA, AMP on CUDA, DistributedDataParallel under
torchrun (`utils.engine.distributed`), validation PSNR-Y with the project's metric code,
atomic checkpoints and exact resume (`utils.engine.checkpointer`), and progress, CSV,
curves and TensorBoard as callbacks (`utils.engine.callbacks`).

Files in `out_dir`:
    state.pth        training state to resume from (see utils/engine/checkpointer.py)
    model_last.pth   plain model state_dict (what load_model / test_demo read)
    model_best.pth   plain model state_dict of the best validation PSNR-Y
    log.csv          one row per logged step (and per validation)
    curves.png       loss and validation PSNR curves (with plot=True)
    tb/              TensorBoard event files (with tensorboard=True)
"""
from __future__ import annotations

import copy
import fnmatch
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from utils.data import PatchBatches, TrainingSet, find_training_pairs, parse_patch_schedule, validation_set
from utils.engine.callbacks import CallbackList, CsvLog, CurvePlot, ProgressBar, TensorBoardLog
from utils.engine.checkpointer import Checkpointer, TrainingState
from utils.engine.distributed import setup_distributed, wrap_for_world
from utils.engine.evaluate import evaluate
from utils.engine.losses import LossSet
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
    feature_weight: float = 0.0           # feature distillation beside output distillation
    teacher_outputs: str | None = None    # a teacher-output store read instead of the teacher's forward
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
    tensorboard: bool = False             # event files in out_dir/tb
    decode_cache_mb: float = 256.0       # decoded images kept per data-loading process
    device: str = 'cpu'
    progress: bool = True
    profile: bool = False


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the run stops without saving over its checkpoint."""


def trainable_parameter_names(model: nn.Module, trainable: list | None, freeze: list | None) -> list:
    """Names of the parameters matching `trainable` (all if None), minus those matching
    `freeze`; fnmatch patterns over parameter names, e.g. 'S*' or 'B?.esa.*'."""
    names = []
    for name, _ in model.named_parameters():
        on = trainable is None or any(fnmatch.fnmatch(name, pat) for pat in trainable)
        if freeze and any(fnmatch.fnmatch(name, pat) for pat in freeze):
            on = False
        if on:
            names.append(name)
    return names


def select_trainable(model: nn.Module, trainable: list | None, freeze: list | None) -> list:
    """Switch `requires_grad` on exactly for `trainable_parameter_names(...)`; returns them."""
    names = trainable_parameter_names(model, trainable, freeze)
    if not names:
        raise UserError('no parameter left to train: every parameter is outside the trainable '
                        'patterns or matches a frozen one')
    chosen = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in chosen)
    return names


def make_scheduler(opt, cfg: TrainConfig):
    """LambdaLR whose factor follows `cfg.scheduler` over `cfg.iters` steps."""
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
        raise UserError(f'unknown scheduler "{cfg.scheduler}" (multistep, cosine, constant)')
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def output_and_features(model: nn.Module, x: torch.Tensor) -> tuple:
    """(model(x), model.distillation_features(x)), from one forward pass where the model
    offers one (`output_and_features`), else from two."""
    if hasattr(model, 'output_and_features'):
        return model.output_and_features(x)
    return model(x), model.distillation_features(x)


class _StudentStep(nn.Module):
    """What one training step needs from the student, as one forward call, so that
    DistributedDataParallel sees (and synchronises) every path, feature distillation too."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, want_output: bool, want_features: bool):
        if want_output and want_features:
            return output_and_features(self.model, x)
        out = self.model(x) if want_output else None
        feats = self.model.distillation_features(x) if want_features else None
        return out, feats


class StepClock:
    """Wall-clock split of the loop into waiting for data and the whole step, in total and
    over the window since the last logged step."""

    def __init__(self):
        self.start = self.mark = self.arrived = time.perf_counter()
        self.data = self.step = 0.0
        self.window_data = self.window_step = 0.0
        self.window_n = 0

    def batch_arrived(self) -> None:
        self.arrived = time.perf_counter()

    def step_done(self) -> None:
        now = time.perf_counter()
        waited, took = self.arrived - self.mark, now - self.mark
        self.data += waited
        self.step += took
        self.window_data += waited
        self.window_step += took
        self.window_n += 1
        self.mark = now

    def window_share(self) -> float:
        return self.window_data / max(self.window_step, 1e-9)

    def window_row(self) -> dict:
        """Mean data wait and step time (ms) over the window, which starts anew."""
        row = {'data_ms': round(1000 * self.window_data / self.window_n, 2),
               'step_ms': round(1000 * self.window_step / self.window_n, 2)}
        self.window_data = self.window_step = 0.0
        self.window_n = 0
        return row


class Trainer:
    """Trains `model` (an SRModel) by the config; `teacher` is needed for distillation.

    `trainable` / `freeze`: fnmatch patterns choosing the parameters that train;
    `train_set` / `val_set`: given instead of building them from the config (prune.py
    shares one across its rounds); `post_step(model)` runs after every optimizer step;
    `callbacks`: added to the default ones (progress bar, log.csv, curves, TensorBoard)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, teacher: nn.Module | None = None,
                 trainable: list | None = None, freeze: list | None = None,
                 train_set: TrainingSet | None = None, val_set=None, post_step=None, callbacks=()):
        self.cfg = cfg
        self.post_step = post_step
        self.rank, self.world, device = setup_distributed(cfg.device)
        self.device = torch.device(device)
        self.is_main = self.rank == 0
        self.range = float(getattr(model, 'input_range', 255.0))
        self.loss_set = LossSet.from_config(cfg, self.range)
        if cfg.teacher_outputs and not self.loss_set.needs_teacher_output:
            raise UserError('stored teacher outputs are given, but no output distillation reads them')
        # with stored outputs, the teacher runs only for the features
        teacher_runs_output = self.loss_set.needs_teacher_output and not cfg.teacher_outputs
        if (teacher_runs_output or self.loss_set.needs_teacher_features) and teacher is None:
            raise UserError('distillation needs a teacher model')
        if self.loss_set.needs_features and not (hasattr(model, 'distillation_features')
                                                 and hasattr(teacher, 'distillation_features')):
            raise UserError(f'feature distillation: {type(model).__name__} and '
                            f'{type(teacher).__name__} have no matching features')
        if cfg.iters < 1:
            raise UserError('the number of steps must be at least 1')
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
        self.step_module = wrap_for_world(_StudentStep(self.model), self.device, self.world)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        self.sched = make_scheduler(self.opt, cfg)
        self.ema = copy.deepcopy(self.model).eval() if cfg.ema > 0 else None
        self.scaler = torch.amp.GradScaler('cuda', enabled=cfg.amp and self.device.type == 'cuda')
        self.live = TrainingState(self.model, self.opt, self.sched, self.ema, self.scaler)
        self.step = 0
        self.best_psnr = -math.inf

        # data: every problem with it surfaces here, before the first step
        min_patch = min(stage[0] for stage in self.schedule)
        if train_set is None:
            # only names and header sizes here: pixels are decoded by the DataLoader workers
            pairs = find_training_pairs(cfg.data_dirs, cfg.scale, cfg.lr_dirs)
            train_set = TrainingSet(pairs, cfg.scale, min_patch, cfg.decode_cache_mb,
                                    cfg.progress and self.is_main)
            if train_set.skipped and self.is_main:
                print(f'skipped {train_set.skipped} training images smaller than one '
                      f'{min_patch}-pixel LR patch')
        if cfg.teacher_outputs:
            train_set.attach_teacher_outputs(cfg.teacher_outputs)
        self.train_set = train_set
        if val_set is None and cfg.val_hr_dir:
            val_set = validation_set(cfg.val_hr_dir, cfg.scale)
        self.val_set = val_set
        os.makedirs(cfg.out_dir, exist_ok=True)
        self.checkpointer = Checkpointer(cfg.out_dir, self.is_main)
        self.state_path = self.checkpointer.state_path
        self.log_path = os.path.join(cfg.out_dir, 'log.csv')
        self.callbacks = CallbackList([*self.default_callbacks(), *callbacks])

    def default_callbacks(self) -> list:
        cfg = self.cfg
        name = os.path.basename(os.path.normpath(cfg.out_dir))
        found = [ProgressBar(cfg.iters, cfg.progress and self.is_main, name)]
        if self.is_main:
            found.append(CsvLog(self.log_path))
            if cfg.plot:
                found.append(CurvePlot(self.log_path, os.path.join(cfg.out_dir, 'curves.png')))
            if cfg.tensorboard:
                found.append(TensorBoardLog(os.path.join(cfg.out_dir, 'tb')))
        return found

    # -- checkpoints -----------------------------------------------------------------
    def save(self) -> None:
        self.checkpointer.save(self.live, self.step, self.best_psnr, self.export_model())

    def resume(self) -> bool:
        """Continue from out_dir/state.pth if there is one; returns whether it did.

        First removes the temporary files of saves that a kill interrupted (the files they
        would have replaced are intact: writes are atomic)."""
        stale = self.checkpointer.remove_stale_temp_files()
        if stale:
            print(f'removed {len(stale)} temporary file(s) of an interrupted save: {", ".join(stale)}')
        restored = self.checkpointer.restore(self.live)
        if restored is None:
            return False
        self.step, self.best_psnr = restored
        if self.is_main:
            print(f'resumed from {self.state_path} at step {self.step}')
        return True

    def export_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA copy when EMA is on."""
        return self.ema if self.ema is not None else self.model

    # -- one step --------------------------------------------------------------------
    def losses(self, lr: torch.Tensor, hr: torch.Tensor, teacher_sr: torch.Tensor | None = None) -> dict:
        """Loss terms on one batch (LossSet output); lr/hr in 0–1, the model sees its own
        input range; `teacher_sr` (like hr, 0–1 units): the stored teacher output, used
        instead of running the teacher for output distillation."""
        need = self.loss_set
        x = lr * self.range
        sr, feats = self.step_module(x, need.needs_output, need.needs_features)
        teacher_out = teacher_feats = None
        if need.needs_teacher_output and teacher_sr is not None:
            teacher_out = teacher_sr * self.range
        run_output = need.needs_teacher_output and teacher_out is None
        if run_output or need.needs_teacher_features:
            with torch.no_grad():
                if run_output and need.needs_teacher_features:
                    teacher_out, teacher_feats = output_and_features(self.teacher, x)
                elif run_output:
                    teacher_out = self.teacher(x)
                else:
                    teacher_feats = self.teacher.distillation_features(x)
        return self.loss_set(sr, hr, teacher_out=teacher_out, features=feats, teacher_features=teacher_feats)

    @torch.enable_grad()  # whatever the caller's grad mode (e.g. prune.py between evaluations)
    def train_step(self, lr: torch.Tensor, hr: torch.Tensor, teacher_sr: torch.Tensor | None = None) -> dict:
        """One optimizer step on a batch of PatchBatches; returns the loss terms as floats."""
        cfg = self.cfg
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        lr, hr, *teacher_sr = (t.to(self.device, non_blocking=True) for t in (lr, hr, teacher_sr)
                               if t is not None)
        with torch.autocast(self.device.type, enabled=self.scaler.is_enabled()):
            losses = self.losses(lr, hr, *teacher_sr)
        total = losses['total']
        if not torch.isfinite(total.detach()):
            kept = (f'the last checkpoint in {cfg.out_dir} is intact' if os.path.isfile(self.state_path)
                    else 'no checkpoint was written')
            raise NonFiniteLossError(f'loss is {total.item()} at step {self.step}: stopping without '
                                     f'saving; {kept}')
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

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> float | None:
        """Mean PSNR-Y (dB) of the exported weights on the validation set (main process only);
        a new best is saved as model_best.pth."""
        if self.val_set is None or not self.is_main:
            return None
        model = self.export_model().eval()
        with torch.no_grad():
            res = evaluate(model, self.val_set, self.device, progress=False, warmup=False)
        psnr_y = sum(res['psnr_y']) / len(res['psnr_y'])
        if psnr_y > self.best_psnr:
            self.best_psnr = psnr_y
            self.checkpointer.save_best(model)
        return psnr_y

    # -- the loop ------------------------------------------------------------------------
    def batches(self) -> torch.utils.data.DataLoader:
        """The batches of steps self.step .. cfg.iters - 1 (each a pure function of its step,
        so a resumed run continues the same stream)."""
        cfg = self.cfg
        data = PatchBatches(self.train_set, cfg.batch_size, self.schedule, cfg.seed, self.rank,
                            self.world, total_steps=cfg.iters)
        return torch.utils.data.DataLoader(
            data, batch_size=None, sampler=range(self.step, cfg.iters), num_workers=cfg.workers,
            pin_memory=self.device.type == 'cuda', persistent_workers=False,
            prefetch_factor=4 if cfg.workers > 0 else None)

    def fit(self) -> dict:
        """Train from self.step to cfg.iters; returns a summary (steps, best PSNR-Y, timing)."""
        cfg = self.cfg
        loader = self.batches()
        first_step = last_saved = self.step
        clock = StepClock()
        self.callbacks.on_fit_start(self)
        for batch in one_line_errors(loader):  # (lr, hr) or (lr, hr, stored teacher output)
            clock.batch_arrived()
            patch = batch[0].shape[-1]
            losses = self.train_step(*batch)
            clock.step_done()
            terms = {k: v for k, v in losses.items() if k != 'total'}
            lr_now = self.sched.get_last_lr()[0]
            self.callbacks.on_step_end(self.step, {'loss': losses['total'], **terms, 'lr': lr_now,
                                                   'data_share': clock.window_share()})
            last = self.step == cfg.iters
            if self.step % cfg.log_every == 0 or last:
                self.callbacks.on_log(self.step, {
                    'step': self.step, 'time': round(time.perf_counter() - clock.start, 2), 'lr': lr_now,
                    'loss': losses['total'], **terms, 'patch': patch, **clock.window_row()})
            if cfg.val_every and (self.step % cfg.val_every == 0 or last):
                psnr = self.validate()
                if psnr is not None:
                    self.callbacks.on_validation(self.step, psnr, self.best_psnr)
            if self.step % cfg.save_every == 0 or last:
                self.save()
                last_saved = self.step
        if self.step != last_saved:
            self.save()
        share = clock.data / clock.step if clock.step else 0.0
        summary = {'steps': self.step, 'best_psnr_y': self.best_psnr, 'data_wait_share': share,
                   'sec_per_step': clock.step / max(1, self.step)}
        self.callbacks.on_fit_end(summary)
        if cfg.profile and self.is_main:
            print(f'profile: {100 * share:.1f}% of step time waiting for data '
                  f'({clock.data:.1f} s of {clock.step:.1f} s over {self.step - first_step} steps)')
        return summary


def one_line_errors(loader):
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

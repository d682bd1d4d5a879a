"""Training state on disk: atomic saves and exact resume.

Files in the output folder:
    state.pth        everything a resumed run needs to continue the same trajectory: model,
                     optimizer, scheduler, EMA and grad-scaler state_dicts, the step, the best
                     validation PSNR-Y and the torch CPU RNG state (a dict of tensors and
                     numbers, loadable with weights_only=True)
    model_last.pth   plain model state_dict (what load_model / test_demo read)
    model_best.pth   plain model state_dict of the best validation PSNR-Y
                     (both with expanded kernels collapsed: models.expanded_kernel)

Every file is written through `utils.io.checkpoint.save_atomic` (temporary file, then
rename): a kill during a save leaves the previous file intact and a `.tmp_*` file, which
`remove_stale_temp_files` deletes when the run resumes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from models.expanded_kernel import plain_state_dict
from utils.io.checkpoint import describe_mismatch, remove_stale_temp_files, save_atomic, save_state_dict
from utils.io.errors import UserError

STATE_FILE = 'state.pth'
LAST_MODEL_FILE = 'model_last.pth'
BEST_MODEL_FILE = 'model_best.pth'


class StateMismatchError(UserError):
    """The saved training state holds another architecture than the model to resume."""

    def __init__(self, path: str, model_name: str, problem: str):
        self.path, self.model_name, self.problem = path, model_name, problem
        super().__init__(f'cannot resume from {path}: its model does not fit {model_name}: {problem}')


@dataclass
class TrainingState:
    """The live objects whose state a checkpoint holds (`ema`, `scaler` optional)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: nn.Module | None = None
    scaler: object | None = None  # torch.amp.GradScaler; saved only when enabled


class Checkpointer:
    """Saves and restores a run's TrainingState in `out_dir`; with `is_main=False` (the other
    processes of a DDP run) `save` and `save_best` write nothing."""

    def __init__(self, out_dir: str, is_main: bool = True):
        self.out_dir = out_dir
        self.is_main = is_main
        self.state_path = os.path.join(out_dir, STATE_FILE)

    def has_state(self) -> bool:
        return os.path.isfile(self.state_path)

    def remove_stale_temp_files(self) -> list:
        """Delete the temporary files of saves that a kill interrupted (their targets are
        intact); returns their names. Only the main process clears the shared folder."""
        if not self.is_main or not os.path.isdir(self.out_dir):
            return []
        return remove_stale_temp_files(self.out_dir)

    # -- saving -------------------------------------------------------------------------
    @staticmethod
    def state_dict(live: TrainingState, step: int, best_psnr: float) -> dict:
        state = {'model': live.model.state_dict(), 'optimizer': live.optimizer.state_dict(),
                 'scheduler': live.scheduler.state_dict(), 'step': step,
                 'best_psnr': best_psnr, 'torch_rng': torch.get_rng_state()}
        if live.ema is not None:
            state['ema'] = live.ema.state_dict()
        if live.scaler is not None and live.scaler.is_enabled():
            state['scaler'] = live.scaler.state_dict()
        return state

    def save(self, live: TrainingState, step: int, best_psnr: float, export: nn.Module) -> None:
        """state.pth, then model_last.pth with the weights of `export` (the EMA copy when EMA
        is on)."""
        if not self.is_main:
            return
        save_atomic(self.state_dict(live, step, best_psnr), self.state_path)
        save_state_dict(plain_state_dict(export), os.path.join(self.out_dir, LAST_MODEL_FILE))

    def save_best(self, model: nn.Module) -> None:
        if self.is_main:
            save_state_dict(plain_state_dict(model), os.path.join(self.out_dir, BEST_MODEL_FILE))

    # -- resuming -----------------------------------------------------------------------
    def restore(self, live: TrainingState) -> tuple[int, float] | None:
        """Load state.pth into `live` and the torch RNG; returns (step, best PSNR-Y), or None
        when there is no state.pth. A state of another architecture raises StateMismatchError,
        an unreadable one UserError (one line each)."""
        if not self.has_state():
            return None
        try:
            state = torch.load(self.state_path, map_location='cpu', weights_only=True)
            problem = describe_mismatch(live.model, state['model'])
            if problem:
                raise StateMismatchError(self.state_path, type(live.model).__name__, problem)
            live.model.load_state_dict(state['model'], strict=True)
            live.optimizer.load_state_dict(state['optimizer'])
            live.scheduler.load_state_dict(state['scheduler'])
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f'cannot resume from {self.state_path}: '
                            f'{str(exc).splitlines()[0][:160]}') from None
        if live.ema is not None and 'ema' in state:
            live.ema.load_state_dict(state['ema'])
        if 'scaler' in state and live.scaler is not None and live.scaler.is_enabled():
            live.scaler.load_state_dict(state['scaler'])
        torch.set_rng_state(state['torch_rng'])
        return int(state['step']), float(state['best_psnr'])

"""What a training run reports, as callbacks of the Trainer's loop.

Hooks (each optional; the Trainer's own callbacks write files on the main process only):
    on_fit_start(trainer)                 before the first step of `fit()` (trainer.step is
                                          where it starts: > 0 after a resume)
    on_step_end(step, row)                after every optimizer step; row: 'loss' (total), one
                                          entry per loss term ('pixel', 'distill'), 'lr',
                                          'data_share' (share of the step time spent waiting
                                          for data since the last logged step)
    on_log(step, row)                     every `log_every` steps and at the last: the row of
                                          log.csv ('step', 'time' s, 'lr', 'loss', terms,
                                          'patch' LR pixels, 'data_ms', 'step_ms')
    on_validation(step, psnr_y, best)     after a validation: mean PSNR-Y (dB) and the best so far
    on_fit_end(summary)                   after the last step and the last save

Callbacks here: `ProgressBar` (tqdm), `CsvLog` (OUT_DIR/log.csv), `CurvePlot`
(OUT_DIR/curves.png from log.csv) and `TensorBoardLog` (event files in OUT_DIR/tb, for
`tensorboard --logdir OUT_DIR/tb`).
"""
from __future__ import annotations

import csv
import os

from tqdm import tqdm

from utils.io.atomic import atomic_path

#: columns of log.csv
LOG_FIELDS = ['step', 'time', 'lr', 'loss', 'pixel', 'distill', 'features', 'patch', 'data_ms', 'step_ms',
              'val_psnr_y']


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_step_end(self, step: int, row: dict) -> None:
        pass

    def on_log(self, step: int, row: dict) -> None:
        pass

    def on_validation(self, step: int, psnr_y: float, best_psnr_y: float) -> None:
        pass

    def on_fit_end(self, summary: dict) -> None:
        pass


class CallbackList(Callback):
    """Calls each hook of every callback, in order."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def on_fit_start(self, trainer) -> None:
        for c in self.callbacks:
            c.on_fit_start(trainer)

    def on_step_end(self, step: int, row: dict) -> None:
        for c in self.callbacks:
            c.on_step_end(step, row)

    def on_log(self, step: int, row: dict) -> None:
        for c in self.callbacks:
            c.on_log(step, row)

    def on_validation(self, step: int, psnr_y: float, best_psnr_y: float) -> None:
        for c in self.callbacks:
            c.on_validation(step, psnr_y, best_psnr_y)

    def on_fit_end(self, summary: dict) -> None:
        for c in self.callbacks:
            c.on_fit_end(summary)


class ProgressBar(Callback):
    """A tqdm bar over the run's steps (loss, learning rate, data-wait share); validation
    results are printed as lines above it, also when the bar itself is off."""

    def __init__(self, total: int, enabled: bool = True, desc: str | None = None):
        self.total, self.enabled, self.desc = total, enabled, desc
        self.bar = None

    def on_fit_start(self, trainer) -> None:
        self.bar = tqdm(total=self.total, initial=trainer.step, disable=not self.enabled, unit='it',
                        dynamic_ncols=True, desc=self.desc)

    def on_step_end(self, step: int, row: dict) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f'{row["loss"]:.4g}', lr=f'{row["lr"]:.2e}',
                             data=f'{100 * row["data_share"]:.0f}%')

    def on_validation(self, step: int, psnr_y: float, best_psnr_y: float) -> None:
        tqdm.write(f'step {step}: validation PSNR-Y {psnr_y:.3f} dB (best {best_psnr_y:.3f})')

    def on_fit_end(self, summary: dict) -> None:
        if self.bar is not None:
            self.bar.close()


class CsvLog(Callback):
    """Appends every logged row and every validation to a CSV file (kept across resumes);
    columns LOG_FIELDS, empty where a row has no value. A file that exists keeps its own
    header, so a run resumed with a newer LOG_FIELDS still writes rows that match it.

    A run first drops the rows logged after the step it starts from: a killed run logs past
    its last checkpoint, and the resumed run logs those steps again. A run that starts at
    step 0 over an existing file (one killed before its first checkpoint; train.py refuses to
    start over a checkpoint) starts a new file."""

    def __init__(self, path: str):
        self.path = path
        self.fields = None

    def on_fit_start(self, trainer) -> None:
        if not os.path.isfile(self.path):
            return
        if trainer.step == 0:
            dropped = max(0, self.count_rows() - 1)
            os.remove(self.path)
        else:
            dropped = self.drop_rows_after(trainer.step)
        if dropped:
            print(f'{self.path}: dropped {dropped} row(s) an interrupted run logged after step {trainer.step}')

    def count_rows(self) -> int:
        """Rows in the file, header included."""
        with open(self.path, newline='') as f:
            return sum(1 for _ in csv.reader(f))

    def drop_rows_after(self, step: int) -> int:
        """Remove the rows whose step is > `step` (atomically); returns how many."""
        with open(self.path, newline='') as f:
            rows = list(csv.reader(f))
        if not rows:
            return 0
        header, body = rows[0], rows[1:]
        col = header.index('step') if 'step' in header else 0
        kept = [row for row in body if not (len(row) > col and row[col].isdigit() and int(row[col]) > step)]
        if len(kept) < len(body):
            with atomic_path(self.path) as tmp, open(tmp, 'w', newline='') as f:
                csv.writer(f).writerows([header] + kept)
        return len(body) - len(kept)

    def _append(self, row: dict) -> None:
        new = not os.path.isfile(self.path) or os.path.getsize(self.path) == 0
        if self.fields is None:
            if new:
                self.fields = LOG_FIELDS
            else:
                with open(self.path, newline='') as f:
                    self.fields = next(csv.reader(f), None) or LOG_FIELDS
        with open(self.path, 'a', newline='') as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction='ignore')
            if new:
                w.writeheader()
            w.writerow(row)

    def on_log(self, step: int, row: dict) -> None:
        self._append(row)

    def on_validation(self, step: int, psnr_y: float, best_psnr_y: float) -> None:
        self._append({'step': step, 'val_psnr_y': round(psnr_y, 4)})


class CurvePlot(Callback):
    """At the end of the run, loss and validation curves from log.csv to a PNG."""

    def __init__(self, csv_path: str, png_path: str):
        self.csv_path, self.png_path = csv_path, png_path

    def on_fit_end(self, summary: dict) -> None:
        if os.path.isfile(self.csv_path):
            plot_training_log(self.csv_path, self.png_path)


class TensorBoardLog(Callback):
    """Scalars for TensorBoard in `log_dir`: train/<column> for every numeric column of a
    logged row (loss, pixel, distill, lr, data_ms, step_ms), val/psnr_y per validation."""

    #: log-row columns that are not curves
    SKIPPED = ('step', 'time', 'patch')

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        # tensorboard is imported only by runs that ask for it
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(self.log_dir)

    def on_log(self, step: int, row: dict) -> None:
        for key, value in row.items():
            if key not in self.SKIPPED and isinstance(value, (int, float)):
                self.writer.add_scalar(f'train/{key}', value, step)

    def on_validation(self, step: int, psnr_y: float, best_psnr_y: float) -> None:
        self.writer.add_scalar('val/psnr_y', psnr_y, step)
        self.writer.flush()

    def on_fit_end(self, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()


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

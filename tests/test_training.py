"""train.py: resume after SIGKILL, torchrun (gloo) == one process, distillation, bad input."""
import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from synthetic_images import write_smooth_images

from models import RFDN, BranchRFDN, load_model
from utils.data import PatchBatches, TrainingSet, find_training_pairs, parse_patch_schedule
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError


@pytest.fixture()
def tiny(tmp_path):
    data = write_smooth_images(tmp_path / 'data', [(96, 96), (80, 112), (128, 96)])
    val = write_smooth_images(tmp_path / 'val' / 'HR', [(64, 64)], seed=1)
    torch.manual_seed(0)
    ckpt = tmp_path / 'tiny.pth'
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), str(ckpt))
    return tmp_path, data, val, ckpt


def train_args(out_dir, data, val, ckpt, *extra):
    """The tiny run's command line after `python`: ['train.py', ...]."""
    return ['train.py', '--model', 'RFDN', '--pretrained', str(ckpt), '--data_dir', str(data),
            '--val_hr_dir', str(val), '--out_dir', str(out_dir), '--batch_size', '4',
            '--patch_size', '16', '--lr', '1e-3', '--seed', '3', '--no_progress', '--workers', '0',
            '--log_every', '1', *extra]


def train_cmd(out_dir, data, val, ckpt, *extra, torchrun=None):
    args = train_args(out_dir, data, val, ckpt, *extra)
    if torchrun:
        return [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                f'--nproc_per_node={torchrun}', *args]
    return [sys.executable, *args]


def run(cmd, repo_root, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(repo_root, tiny, script_in_process):
    tmp, data, val, ckpt = tiny
    common = ['--iters', '24', '--save_every', '3', '--val_every', '12']
    ref = script_in_process(*train_args(tmp / 'ref', data, val, ckpt, *common))
    assert ref.returncode == 0, ref.stderr

    proc = subprocess.Popen(train_cmd(tmp / 'cut', data, val, ckpt, *common),
                            cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    log = tmp / 'cut' / 'log.csv'
    deadline = time.time() + 120
    while time.time() < deadline:  # kill between two checkpoints, mid-run
        if log.exists() and sum(1 for _ in open(log)) >= 11:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(tmp / 'cut' / 'state.pth', weights_only=True)
    assert 0 < state['step'] < 24
    resumed = script_in_process(*train_args(tmp / 'cut', data, val, ckpt, *common, '--resume'))
    assert resumed.returncode == 0, resumed.stderr
    assert 'resumed from' in resumed.stdout
    assert_same(weights(tmp / 'ref' / 'model_last.pth'), weights(tmp / 'cut' / 'model_last.pth'))
    # the log has each step once, as the uninterrupted run's has
    logged = [[(r['step'], r['val_psnr_y'] != '') for r in csv.DictReader((d / 'log.csv').read_text().splitlines())]
              for d in (tmp / 'ref', tmp / 'cut')]
    assert logged[0] == logged[1]
    # the resumed model is a plain state_dict that the builder rebuilds
    assert isinstance(load_model(str(tmp / 'cut' / 'model_best.pth')), RFDN)


@pytest.mark.slow
def test_resume_with_raised_iters_stretches_the_schedule(tiny, script_in_process):
    """A finished cosine run resumed with a larger --iters trains on to the new total, its LR
    following the cosine of the new length (the README's way of continuing a run)."""
    from utils.engine.training import TrainConfig
    tmp, data, val, ckpt = tiny
    common = ['--scheduler', 'cosine', '--save_every', '4', '--val_every', '0']
    first = script_in_process(*train_args(tmp / 'r', data, val, ckpt, '--iters', '4', *common))
    assert first.returncode == 0, first.stderr
    more = script_in_process(*train_args(tmp / 'r', data, val, ckpt, '--iters', '8', *common, '--resume'))
    assert more.returncode == 0, more.stderr
    assert torch.load(tmp / 'r' / 'state.pth', weights_only=True)['step'] == 8
    with open(tmp / 'r' / 'log.csv') as f:
        lr = {int(r['step']): float(r['lr']) for r in csv.DictReader(f)}
    floor = TrainConfig(out_dir='', data_dirs=[]).min_lr

    def cosine(step, total):
        return floor + (1e-3 - floor) * 0.5 * (1 + math.cos(math.pi * step / total))
    assert lr[4] == pytest.approx(floor)    # the 4-step schedule had ended ...
    assert lr[5] == pytest.approx(cosine(5, 8), rel=1e-6)   # ... the 8-step one goes on
    assert lr[8] == pytest.approx(floor)


@pytest.mark.slow
def test_torchrun_two_processes_matches_one(repo_root, tiny, script_in_process):
    tmp, data, val, ckpt = tiny
    common = ['--iters', '6', '--save_every', '6', '--val_every', '0']
    one = script_in_process(*train_args(tmp / 'one', data, val, ckpt, *common))
    assert one.returncode == 0, one.stderr
    two = run(train_cmd(tmp / 'two', data, val, ckpt, *common, torchrun=2), repo_root)
    assert two.returncode == 0, two.stderr[-2000:]
    assert '× 2 processes' in two.stdout
    assert_same(weights(tmp / 'one' / 'model_last.pth'), weights(tmp / 'two' / 'model_last.pth'),
                atol=1e-5)


def test_feature_distillation_trains_only_srfdbs(repo_root, tmp_path):
    """Stage 1 of PRFDN on a tiny RFDN: SRFDBs move towards the teacher's blocks, the rest
    is untouched, and the distillation loss falls."""
    from utils.engine.training import TrainConfig, Trainer
    data = write_smooth_images(tmp_path / 'data', [(96, 96), (96, 96)])
    torch.manual_seed(0)
    teacher = RFDN(nf=8, num_modules=3).eval()
    student = BranchRFDN.from_rfdn(teacher)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = TrainConfig(out_dir=str(tmp_path / 'out'), data_dirs=[str(data)], batch_size=4,
                      patch_size=24, iters=30, lr=2e-3, pixel_weight=0, distill='features',
                      val_every=0, save_every=30, workers=0, progress=False, log_every=1)
    trainer = Trainer(student, cfg, teacher, trainable=['S*', 'fea_conv?.*'])
    trainer.fit()
    after = student.state_dict()
    for k in before:
        moved = not torch.equal(before[k], after[k])
        assert moved == (k.startswith('S') or k[:9] in ('fea_conv1', 'fea_conv2')), k
    rows = list(csv.DictReader(open(tmp_path / 'out' / 'log.csv')))
    losses = [float(r['distill']) for r in rows if r['distill']]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_patch_schedule_and_data(tmp_path):
    assert parse_patch_schedule('64:10,160:5', 48, 99) == [(64, 10, None), (160, 5, None)]
    assert parse_patch_schedule('64:10, 160:5:4', 48, 99) == [(64, 10, None), (160, 5, 4)]
    assert parse_patch_schedule(None, 48, 99) == [(48, 99, None)]
    for bad in ('64', '64:0', 'a:3', '4:10', '64:10;160:5', '64:10:0', '64:10:4:2'):
        with pytest.raises(UserError):
            parse_patch_schedule(bad, 48, 10)
    data = write_smooth_images(tmp_path / 'd', [(96, 96), (40, 40), (200, 160)])
    cache = TrainingSet(find_training_pairs([str(data)], 4, None), 4, 16, progress=False)
    assert cache.skipped == 1 and len(cache) == 2  # 40 px HR -> 10 px LR < one 16-px patch
    batches = PatchBatches(cache, 4, [(16, 2), (32, 2)], seed=0)
    lr0, hr0 = batches[0]
    lr3, hr3 = batches[3]
    assert lr0.shape == (4, 3, 16, 16) and hr0.shape == (4, 3, 64, 64)
    assert lr3.shape == (4, 3, 32, 32) and hr3.shape == (4, 3, 128, 128)
    assert 0 <= float(lr0.min()) and float(lr0.max()) <= 1
    assert torch.equal(batches[0][0], lr0)                       # a pure function of the step
    staged = PatchBatches(cache, 4, parse_patch_schedule('16:2,32:2:2', 16, 4), seed=0)
    assert staged[1][0].shape == (4, 3, 16, 16) and staged[2][0].shape == (2, 3, 32, 32)
    with pytest.raises(UserError):                                # 3 rows over 2 processes
        PatchBatches(cache, 4, [(16, 2, 3)], seed=0, rank=0, world_size=2)
    half0 = PatchBatches(cache, 4, [(16, 2)], seed=0, rank=0, world_size=2)[0][0]
    half1 = PatchBatches(cache, 4, [(16, 2)], seed=0, rank=1, world_size=2)[0][0]
    assert torch.equal(torch.cat([half0, half1])[[0, 2, 1, 3]], lr0)  # ranks split the batch


def _one_line_error(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = [l for l in r.stderr.splitlines() if l.startswith('error:')]
    assert len(err) == 1 and needle in err[0], r.stderr
    assert 'Traceback' not in r.stderr


def test_bad_input_stops_before_training(repo_root, tiny):
    tmp, data, val, ckpt = tiny
    empty = tmp / 'empty'
    empty.mkdir()
    small = write_smooth_images(tmp / 'small', [(20, 20)])
    cases = [
        (['--data_dir', str(tmp / 'missing')], 'not found'),
        (['--data_dir', str(empty)], 'no images'),
        (['--data_dir', str(small)], 'at least 16 LR pixels'),
        (['--patch_schedule', '64-10'], 'bad --patch_schedule'),
        (['--model', 'IMDN'], 'does not fit IMDN'),
        (['--teacher', str(tmp / 'nope.pth'), '--distill', 'output'], 'checkpoint not found'),
        (['--distill', 'output'], 'needs --teacher or --teacher_outputs'),
    ]
    import train
    from utils.io.errors import UserError
    for extra, needle in cases:
        # in-process (tests/test_bad_input.py checks the exit code in a subprocess); later flags
        # win in argparse: the case's --data_dir / --model override the defaults
        argv = train_args(tmp / 'bad', data, val, ckpt, '--iters', '2', *extra)[1:]
        with pytest.raises(UserError) as caught:
            train.main(argv)
        assert needle in str(caught.value) and '\n' not in str(caught.value)
        assert not (tmp / 'bad' / 'state.pth').exists()


def test_ema_weights_are_exported(tmp_path):
    from utils.engine.training import TrainConfig, Trainer
    data = write_smooth_images(tmp_path / 'data', [(96, 96)])
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=1)
    cfg = TrainConfig(out_dir=str(tmp_path / 'out'), data_dirs=[str(data)], batch_size=2,
                      patch_size=16, iters=4, lr=1e-2, ema=0.5, grad_clip=1.0, val_every=0,
                      save_every=4, workers=0, progress=False, scheduler='cosine')
    trainer = Trainer(model, cfg)
    trainer.fit()
    saved = weights(tmp_path / 'out' / 'model_last.pth')
    ema = trainer.ema.state_dict()
    live = model.state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in saved)          # EMA weights are shipped
    assert any(not torch.equal(ema[k], live[k]) for k in live)         # and differ from the live ones


@pytest.mark.slow
def test_init_from_converts_and_two_stage_batches(tmp_path, script_in_process):
    """--init_from builds CLBIMDN from an IMDN checkpoint (same function before training);
    a PATCH:STEPS:BATCH stage trains end to end; wrong families get one line."""
    from models import CLBIMDN, IMDN, convert_from
    data = write_smooth_images(tmp_path / 'data', [(96, 96), (128, 112)])
    val = write_smooth_images(tmp_path / 'val' / 'HR', [(64, 64)], seed=1)
    torch.manual_seed(0)
    imdn = IMDN(nc=12, nb=2, upscale=4).eval()
    ckpt = tmp_path / 'imdn.pth'
    save_state_dict(imdn.state_dict(), str(ckpt))
    clb = convert_from('CLBIMDN', str(ckpt)).eval()
    assert isinstance(clb, CLBIMDN)
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert (clb(x) - imdn(x)).abs().max() < 1e-5

    base = ['train.py', '--init_from', str(ckpt), '--data_dir', str(data), '--val_hr_dir', str(val),
            '--batch_size', '4', '--lr', '1e-3', '--no_progress', '--workers', '0', '--log_every', '1']
    out = tmp_path / 'clb'
    r = script_in_process(*base, '--model', 'CLBIMDN', '--patch_schedule', '16:2,24:2:2', '--out_dir', out)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / 'log.csv')))
    assert [int(r_['patch']) for r_ in rows if r_['loss']] == [16, 16, 24, 24]
    trained = weights(out / 'model_last.pth')
    assert any(k.endswith('conv1x1.weight') and v.abs().max() > 0 for k, v in trained.items())

    rfdn_ckpt = tmp_path / 'rfdn.pth'
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), str(rfdn_ckpt))
    for extra, needle in (
            (['--model', 'CLBIMDN', '--init_from', str(rfdn_ckpt)], 'does not fit IMDN'),
            (['--model', 'RLFN'], 'converts into'),
            (['--model', 'CLBIMDN', '--pretrained', str(ckpt)], 'not both')):
        _one_line_error(script_in_process(*base, *extra, '--out_dir', tmp_path / 'bad'), needle)
        assert not (tmp_path / 'bad' / 'state.pth').exists()

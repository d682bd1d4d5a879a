"""Hostile input and faults: every script answers with one line and exit code 2, writes nothing
it should not, and never prints a silently wrong number (docs/ROBUSTNESS.md lists the cases).

The scripts run in-process through their `main(argv)`; one subprocess per script checks the
exit-code contract (exit 2, one `error: ...` line on stderr, no traceback). An unwritable
location is a path under a regular FILE: permission bits do not bind root, that does.
"""
import fcntl
import json
import os
import selectors
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from refusals import user_error

import prune
import reparam
import test_demo
import train
from models import IMDN, RFDN
from utils.data.eval_sets import folder_set
from utils.engine.evaluate import write_results
from utils.engine.inference import forward_tiled
from utils.io.checkpoint import (
    acquire_output_lock,
    check_output_dir,
    check_output_file,
    release_output_lock,
    save_state_dict,
)
from utils.io.errors import UserError
from utils.io.image_io import imread_rgb
from utils.io.matlab_functions import imresize
from utils.metrics.psnr_ssim import calculate_psnr


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread, and leave the other core to the machine."""


def files_under(folder) -> list:
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def smooth_image(h, w, seed=0):
    """HxWx3 uint8 RGB, blurred noise (bicubic scores 25-40 dB on it, like a photograph)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 3)


def write_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def tiny_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    save_state_dict(RFDN(nf=8, num_modules=2, upscale=4).state_dict(), str(path))
    return path


def under_a_file(tmp_path):
    """A location no process can create, root included: its parent is a regular file."""
    blocker = tmp_path / 'blocker'
    blocker.write_text('a file, not a folder')
    return blocker / 'out'


@pytest.fixture()
def demo(tmp_path):
    """One 48x48 HR image (LR 12x12 made by bicubic) and a tiny random RFDN."""
    hr = write_png(tmp_path / 'set' / 'HR' / 'img.png', smooth_image(48, 48))
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')

    def argv(*extra):
        return ['--checkpoint', str(ckpt), '--hr_dir', str(hr.parent), '--device', 'cpu',
                '--results', str(tmp_path / 'out' / 'r.json'), '--save_dir', str(tmp_path / 'sr'), *extra]
    return tmp_path, argv


def assert_demo_wrote_nothing(tmp_path):
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'sr').exists()
    assert not [f for f in files_under(tmp_path) if '.tmp_' in f or f.endswith('.lock')]


# ---------------------------------------------------------------- images
def exif_jpeg(path, rgb, orientation):
    """Store `rgb` as a JPEG with an EXIF orientation tag (4:4:4, quality 100)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=100, subsampling=0, exif=exif)
    return path


@pytest.mark.parametrize('orientation, upright', [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1))])
def test_jpeg_exif_orientation_is_applied(tmp_path, orientation, upright):
    stored = smooth_image(16, 24)
    img = imread_rgb(exif_jpeg(tmp_path / 'o.jpg', stored, orientation))
    expected = upright(stored)
    assert img.shape == expected.shape and img.dtype == np.uint8
    assert np.abs(img.astype(int) - expected).mean() < 1.5    # JPEG rounding only
    if orientation != 1 and img.shape == stored.shape:        # and not the pixels as stored
        assert np.abs(img.astype(int) - stored).mean() > 10


def test_exif_rotated_jpeg_hr_scores_like_the_png(tmp_path):
    """A square HR photo stored upside down with orientation 3, its LR upright: the HR the
    evaluation set yields is the upright one, so bicubic scores as on the PNG, not ~10 dB."""
    hr = smooth_image(48, 48)
    write_png(tmp_path / 'LR' / 'imgx4.png', imresize(hr, 0.25))
    write_png(tmp_path / 'png' / 'img.png', hr)
    (tmp_path / 'jpg').mkdir()
    exif_jpeg(tmp_path / 'jpg' / 'img.jpg', np.ascontiguousarray(hr[::-1, ::-1]), 3)
    scores = {}
    for kind in ('png', 'jpg'):
        item = folder_set(str(tmp_path / kind), str(tmp_path / 'LR'), 4).items[0]
        sr = imresize(item.load_lr(), 4.0)
        scores[kind] = calculate_psnr(sr, item.load_hr(), border=4, y_channel=True)
    assert scores['png'] > 25
    assert abs(scores['jpg'] - scores['png']) < 0.5


@pytest.mark.parametrize('hr_size, lr_size', [((4, 4), (1, 1)), ((1, 1), None), ((3, 3), None)])
def test_images_too_small_to_score_are_refused(tmp_path, hr_size, lr_size):
    write_png(tmp_path / 'set' / 'HR' / 'small.png', np.full((*hr_size, 3), 120, np.uint8))
    argv = ['--checkpoint', str(tiny_checkpoint(tmp_path / 'tiny.pth')), '--hr_dir',
            str(tmp_path / 'set' / 'HR'), '--results', str(tmp_path / 'out' / 'r.json'),
            '--save_dir', str(tmp_path / 'sr'), '--device', 'cpu']
    if lr_size:
        write_png(tmp_path / 'LR' / 'smallx4.png', np.full((*lr_size, 3), 120, np.uint8))
        argv += ['--lr_dir', str(tmp_path / 'LR')]
    message = user_error(test_demo.main, argv)
    assert 'small' in message and 'too small to score' in message and '12 pixels' in message
    assert_demo_wrote_nothing(tmp_path)


# ---------------------------------------------------------------- test_demo.py arguments
@pytest.mark.parametrize('extra, flag', [
    (['--tile', '16', '--tile_overlap', '-4'], '--tile_overlap'),
    (['--scale', '0'], '--scale'),
    (['--scale', '-4'], '--scale'),
    (['--tile', '8'], '--tile'),
    (['--device', 'foo'], '--device foo is not a device'),
    (['--device', 'mps'], '--device mps: this project runs on cpu or cuda only'),
])
def test_demo_bad_numbers_stop_before_any_work(demo, capsys, extra, flag):
    tmp_path, argv = demo
    assert flag in user_error(test_demo.main, argv(*extra))
    assert 'device:' not in capsys.readouterr().out      # no evaluation started
    assert_demo_wrote_nothing(tmp_path)


def test_negative_tile_overlap_is_refused_by_the_tiler():
    """A negative overlap leaves LR rows no tile writes (zeros in the SR): refused."""
    with pytest.raises(ValueError, match='overlap'):
        forward_tiled(torch.nn.Identity(), torch.zeros(1, 3, 40, 40), 1, 16, -4)


def test_unwritable_save_dir_is_found_before_the_evaluation(demo, capsys):
    tmp_path, argv = demo
    message = user_error(test_demo.main, argv('--save_dir', str(under_a_file(tmp_path) / 'sr')))
    assert message.startswith('--save_dir ') and 'is a file, not a folder' in message
    assert 'device:' not in capsys.readouterr().out
    assert_demo_wrote_nothing(tmp_path)


def test_unwritable_results_is_found_before_the_evaluation(demo, capsys):
    tmp_path, argv = demo
    message = user_error(test_demo.main, argv('--results', str(under_a_file(tmp_path) / 'r.json')))
    assert message.startswith('--results ') and 'is a file, not a folder' in message
    assert 'device:' not in capsys.readouterr().out
    assert_demo_wrote_nothing(tmp_path)


def test_results_that_is_a_folder_is_refused_without_temp_files(demo):
    tmp_path, argv = demo
    (tmp_path / 'out' / 'r.json').mkdir(parents=True)
    message = user_error(test_demo.main, argv())
    assert 'is a folder' in message
    assert files_under(tmp_path / 'out') == [] and not (tmp_path / 'sr').exists()


def test_results_may_not_replace_the_checkpoint(demo):
    tmp_path, argv = demo
    ckpt = tmp_path / 'tiny.pth'
    before = ckpt.read_bytes()
    assert 'refusing to overwrite' in user_error(test_demo.main, argv('--results', str(ckpt)))
    assert ckpt.read_bytes() == before


@pytest.mark.filterwarnings('ignore:.*far below bicubic')   # a random tiny model
def test_second_run_on_the_same_results_refuses(demo):
    """Another run holds the lock beside --results (its own open file): refused at once, the
    file it is writing stays as it is; once it is released, a run goes through and leaves
    no lock file behind."""
    tmp_path, argv = demo
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'r.json').write_text('{"other": "run"}\n')
    fd = os.open(out / '.r.json.lock', os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b'4242')
        message = user_error(test_demo.main, argv('--no_save', '--no_bicubic'))
        assert message.startswith('another run (pid 4242) is writing') and '--results' in message
        assert (out / 'r.json').read_text() == '{"other": "run"}\n'
    finally:
        os.close(fd)
    assert test_demo.main(argv('--no_save', '--no_bicubic')) == 0
    assert set(json.loads((out / 'r.json').read_text())) == {'tiny'}
    assert not (out / '.r.json.lock').exists()


def test_empty_model_zoo_says_only_bicubic_runs(tmp_path, capsys):
    write_png(tmp_path / 'set' / 'HR' / 'img.png', smooth_image(48, 48))
    (tmp_path / 'zoo').mkdir()
    assert test_demo.main(['--model_zoo', str(tmp_path / 'zoo'), '--hr_dir', str(tmp_path / 'set' / 'HR'),
                           '--results', str(tmp_path / 'r.json'), '--no_save']) == 0
    err = capsys.readouterr().err
    assert 'warning: no model found' in err and 'bicubic reference only' in err
    assert set(json.loads((tmp_path / 'r.json').read_text())) == {'bicubic'}


# ---------------------------------------------------------------- output locations and locks
def test_output_checks_create_nothing_and_see_through_links(tmp_path):
    check_output_dir(str(tmp_path / 'new' / 'deeper'), '--out_dir')      # creatable: fine
    assert files_under(tmp_path) == [] and not (tmp_path / 'new').exists()
    with pytest.raises(UserError, match='cannot be created'):
        check_output_dir(str(under_a_file(tmp_path) / 'x'), '--out_dir')
    src = tmp_path / 'in.pth'
    src.write_bytes(b'weights')
    os.symlink(src, tmp_path / 'soft.pth')
    os.link(src, tmp_path / 'hard.pth')
    for alias in ('in.pth', 'soft.pth', 'hard.pth', 'sub/../in.pth'):
        (tmp_path / 'sub').mkdir(exist_ok=True)
        with pytest.raises(UserError, match='refusing to overwrite'):
            check_output_file(str(tmp_path / alias), '--output', [str(src)])
    check_output_file(str(tmp_path / 'other.pth'), '--output', [str(src)])


def test_write_results_leaves_no_temp_file_when_it_fails(tmp_path):
    (tmp_path / 'r.json').mkdir()
    with pytest.raises(IsADirectoryError):
        write_results({}, ['valid'], str(tmp_path / 'r.json'), str(tmp_path / 'r.txt'), None)
    assert files_under(tmp_path) == []          # no .tmp_*, no lock file


def test_output_lock_is_reentrant_and_released(tmp_path):
    path = str(tmp_path / 'r.json')
    acquire_output_lock(path)
    acquire_output_lock(path)          # same process: fine (write_results inside a locked run)
    release_output_lock(path)
    assert (tmp_path / '.r.json.lock').exists()
    release_output_lock(path)
    assert not (tmp_path / '.r.json.lock').exists()


# ---------------------------------------------------------------- train.py
@pytest.fixture()
def train_argv(tmp_path):
    for i, (h, w) in enumerate([(64, 64), (64, 80)]):
        write_png(tmp_path / 'data' / f'img{i}.png', smooth_image(h, w, seed=i))
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')

    def argv(*extra, out=None):
        steps = [] if '--epochs' in extra or '--iters' in extra else ['--iters', '2']
        return ['--model', 'RFDN', '--pretrained', str(ckpt), '--data_dir', str(tmp_path / 'data'),
                '--val_hr_dir', 'none', '--out_dir', str(out or tmp_path / 'run'), '--batch_size', '2',
                '--patch_size', '16', '--no_progress', '--workers', '0', *steps, *extra]
    return tmp_path, argv


@pytest.mark.parametrize('extra, flag', [
    (['--batch_size', '0'], '--batch_size'), (['--batch_size', '-3'], '--batch_size'),
    (['--iters', '0'], '--iters'), (['--lr', '1e30'], '--lr'), (['--lr', 'nan'], '--lr'),
    (['--scale', '0'], '--scale'), (['--epochs', '0'], '--epochs'), (['--patch_size', '0'], '--patch_size'),
    (['--patch_size', '8'], 'LR patches of 8 pixels are too small for RFDN'),
    (['--ema', '1'], '--ema'), (['--gamma', '0'], '--gamma'), (['--workers', '-1'], '--workers'),
    (['--save_every', '0'], '--save_every'), (['--log_every', '0'], '--log_every'),
    (['--grad_clip', '-1'], '--grad_clip'), (['--milestones', '0'], '--milestones'),
    (['--lr', 'inf'], '--lr'), (['--device', 'foo'], '--device foo is not a device'),
])
def test_train_bad_numbers_write_nothing(train_argv, extra, flag):
    tmp_path, argv = train_argv
    assert user_error(train.main, argv(*extra)).startswith(flag)
    assert not (tmp_path / 'run').exists()


def test_train_unwritable_out_dir(train_argv):
    tmp_path, argv = train_argv
    message = user_error(train.main, argv(out=under_a_file(tmp_path) / 'run'))
    assert message.startswith('--out_dir ') and 'cannot be created' in message


def test_srfdb_init_only_for_a_branch_model_from_rfdn(train_argv):
    tmp_path, argv = train_argv
    message = user_error(train.main, argv('--srfdb_init', 'first_block'))
    assert message.startswith('--srfdb_init is for --model BranchRFDN')
    assert not (tmp_path / 'run').exists()
    message = user_error(train.main, argv('--srfdb_steps', '2'))
    assert message.startswith('--srfdb_steps is for --model BranchRFDN')
    assert not (tmp_path / 'run').exists()


def test_resume_removes_stale_temp_files(train_argv, capsys):
    tmp_path, argv = train_argv
    run = tmp_path / 'run'
    assert train.main(argv()) == 0
    # what a kill -9 inside save_atomic leaves beside the intact checkpoint
    (run / '.tmp_k9x2ab1c.pth').write_bytes(b'PK\x03\x04 half-written')
    capsys.readouterr()
    assert train.main(argv('--resume', '--iters', '3')) == 0
    out = capsys.readouterr().out
    assert 'removed 1 temporary file(s) of an interrupted save: .tmp_k9x2ab1c.pth' in out
    assert 'resumed from' in out and not [f for f in os.listdir(run) if f.startswith('.tmp_')]


def test_resume_with_another_model_names_the_keys(train_argv):
    tmp_path, argv = train_argv
    assert train.main(argv()) == 0
    imdn = ['--model', 'IMDN', *argv('--resume', '--iters', '4')[4:]]   # no --pretrained: a fresh IMDN
    message = user_error(train.main, imdn)
    assert 'its model does not fit IMDN (was --model or --expand_kernels changed?)' in message
    rfdn_keys = set(RFDN(nf=8, num_modules=2).state_dict())
    imdn_keys = set(IMDN().state_dict())
    assert 'missing' in message and 'unexpected' in message
    assert any(k in message for k in rfdn_keys - imdn_keys)
    assert any(k in message for k in imdn_keys - rfdn_keys)


# ---------------------------------------------------------------- prune.py / reparam.py
def test_prune_resume_removes_stale_temp_files(tmp_path, capsys):
    argv = ['--input', str(tiny_checkpoint(tmp_path / 'tiny.pth')), '--out_dir', str(tmp_path / 'p'),
            '--steps', '1', '--finetune_iters', '0', '--val_hr_dir', 'none']
    assert prune.main(argv) == 0
    (tmp_path / 'p' / '.tmp_k9x2ab1c.pth').write_bytes(b'PK\x03\x04 half-written')
    capsys.readouterr()
    assert prune.main([*argv, '--resume']) == 0
    assert 'removed 1 temporary file(s) of an interrupted save: .tmp_k9x2ab1c.pth' in capsys.readouterr().out
    assert not [f for f in os.listdir(tmp_path / 'p') if f.startswith('.tmp_')]


@pytest.mark.parametrize('extra, flag', [
    (['--batch_size', '0'], '--batch_size must be'), (['--patch_size', '0'], '--patch_size must be'),
    (['--lr', '0'], '--lr must be'), (['--ratio', '1.5'], '--ratio must be'),
    (['--finetune_iters', '-1'], '--finetune_iters must be'),
    (['--round_to', '0'], '--round_to must be'), (['--target_params', '-2'], '--target_params must be'),
    (['--device', 'foo'], '--device foo is not a device'),
])
def test_prune_bad_numbers_write_nothing(tmp_path, extra, flag):
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')
    message = user_error(prune.main, ['--input', str(ckpt), '--out_dir', str(tmp_path / 'p'), *extra])
    assert message.startswith(flag)
    assert files_under(tmp_path) == ['tiny.pth']


def test_prune_unwritable_out_dir(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')
    message = user_error(prune.main, ['--input', str(ckpt), '--out_dir', str(under_a_file(tmp_path) / 'p')])
    assert message.startswith('--out_dir ') and 'cannot be created' in message


def test_prune_steps_0_writes_nothing(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')
    message = user_error(prune.main, ['--input', str(ckpt), '--out_dir', str(tmp_path / 'p'), '--steps', '0',
                                      '--finetune_iters', '0', '--val_hr_dir', 'none'])
    assert message == '--steps must be at least 1, got 0'
    assert files_under(tmp_path) == ['tiny.pth']


@pytest.mark.parametrize('script, argv', [
    (prune, ['--out_dir', 'OUT']), (reparam, ['--output', 'OUT/x.pth'])])
def test_unknown_checkpoint_advises_no_missing_flag(tmp_path, script, argv):
    torch.save({'foo.weight': torch.zeros(3, 3)}, tmp_path / 'unknown.pth')
    argv = [a.replace('OUT', str(tmp_path / 'out')) for a in argv]
    message = user_error(script.main, ['--input', str(tmp_path / 'unknown.pth'), *argv])
    assert 'cannot recognise the architecture' in message and 'RFDN' in message
    assert '--model' not in message
    assert files_under(tmp_path) == ['unknown.pth']


def test_unknown_checkpoint_in_test_demo_asks_for_model(demo):
    tmp_path, argv = demo
    torch.save({'foo.weight': torch.zeros(3, 3)}, tmp_path / 'unknown.pth')
    message = user_error(test_demo.main, [*argv(), '--checkpoint', str(tmp_path / 'unknown.pth')])
    assert message.startswith('cannot recognise the architecture of unknown.pth: its tensor names fit none')
    assert message.endswith('; pass --model NAME')
    assert_demo_wrote_nothing(tmp_path)


def test_include_test_without_a_test_set(tmp_path):
    write_png(tmp_path / 'data' / 'DIV2K_valid_HR' / '0801.png', smooth_image(48, 48))
    message = user_error(test_demo.main, ['--data_dir', str(tmp_path / 'data'), '--include_test',
                                          '--model_zoo', str(tmp_path), '--results', str(tmp_path / 'r.json'),
                                          '--no_save'])
    assert message.startswith(f'--include_test: no test set under {tmp_path / "data"} (looked for ')
    assert not (tmp_path / 'r.json').exists()


@pytest.mark.parametrize('alias', ['same', 'symlink'])
def test_reparam_output_equal_to_input_refuses(tmp_path, alias):
    ckpt = tiny_checkpoint(tmp_path / 'in.pth')
    before = ckpt.read_bytes()
    output = ckpt
    if alias == 'symlink':
        output = tmp_path / 'link.pth'
        os.symlink(ckpt, output)
    message = user_error(reparam.main, ['--input', str(ckpt), '--output', str(output), '--mode', 'fold'])
    assert message.startswith('--output ') and 'refusing to overwrite' in message
    assert ckpt.read_bytes() == before


def test_prune_output_equal_to_input_refuses(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / 'in.pth')
    message = user_error(prune.main, ['--input', str(ckpt), '--out_dir', str(tmp_path / 'p'),
                                      '--output', str(ckpt)])
    assert 'refusing to overwrite' in message and not (tmp_path / 'p').exists()


# ---------------------------------------------------------------- the exit-code contract
def run_script(repo_root, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=120, env=env)


def assert_one_line_exit_2(result, start):
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ' + start), result.stderr


def test_exit_code_test_demo_second_run_on_locked_results(repo_root, demo):
    tmp_path, argv = demo
    results = str(tmp_path / 'out' / 'r.json')
    acquire_output_lock(results)         # this process is the run writing it
    try:
        r = run_script(repo_root, 'test_demo.py', *argv('--no_save'))
    finally:
        release_output_lock(results)
    assert_one_line_exit_2(r, f'another run (pid {os.getpid()}) is writing')


def test_exit_code_train(repo_root, train_argv):
    tmp_path, argv = train_argv
    assert_one_line_exit_2(run_script(repo_root, 'train.py', *argv('--batch_size', '0')), '--batch_size')
    assert not (tmp_path / 'run').exists()


def test_exit_code_prune(repo_root, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / 'tiny.pth')
    r = run_script(repo_root, 'prune.py', '--input', str(ckpt), '--out_dir', str(tmp_path / 'p'),
                   '--steps', '0')
    assert_one_line_exit_2(r, '--steps')


def test_exit_code_reparam(repo_root, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / 'in.pth')
    r = run_script(repo_root, 'reparam.py', '--input', str(ckpt), '--output', str(ckpt))
    assert_one_line_exit_2(r, '--output')


def test_script_output_reaches_a_redirected_log_line_by_line(tmp_path):
    """A script's progress lines are in its log while it runs, not when it ends: the child
    prints one line, then blocks until the test has read it (a block-buffered child never
    sends it, and the read times out)."""
    child = ('import sys; from utils.io.errors import run_cli\n'
             'run_cli(lambda: print("step 100: validation") or sys.stdin.readline() and 0)\n')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}  # buffered, as by default
    proc = subprocess.Popen([sys.executable, '-c', child], cwd=os.path.dirname(os.path.dirname(__file__)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=30), 'no output while the script runs'
        assert proc.stdout.readline() == 'step 100: validation\n'
    finally:
        proc.communicate('done\n', timeout=60)
    assert proc.returncode == 0


def test_sequential_branches_only_for_a_branch_model(train_argv):
    tmp_path, argv = train_argv
    message = user_error(train.main, argv('--sequential_branches', '2'))
    assert message.startswith('--sequential_branches is for --model BranchRFDN')
    assert not (tmp_path / 'run').exists()

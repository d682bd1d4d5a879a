"""End-to-end checks of test_demo.py: the NTIRE outputs, and what bad input gets."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from models import IMDN, RFDN
from utils.io.checkpoint import save_state_dict


def run_demo(repo_root, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(repo_root, 'test_demo.py'), *args],
                          cwd=cwd or repo_root, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def tiny_data(tmp_path):
    """Two HR images (48x40, 36x52) and a tiny random RFDN checkpoint."""
    rng = np.random.default_rng(0)
    hr_dir = tmp_path / 'tiny' / 'HR'   # the set is named after 'tiny'
    hr_dir.mkdir(parents=True)
    for name, (h, w) in {'a': (48, 40), 'b': (36, 52)}.items():
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(hr_dir / f'{name}.png'), img)
    torch.manual_seed(0)
    ckpt = tmp_path / 'tiny_rfdn.pth'
    save_state_dict(RFDN(nf=8, num_modules=2, upscale=4).state_dict(), str(ckpt))
    return tmp_path, hr_dir, ckpt


@pytest.mark.slow
def test_demo_writes_ntire_results(script_in_process, tiny_data):
    tmp, hr_dir, ckpt = tiny_data
    out = tmp / 'out' / 'res.json'
    r = script_in_process('test_demo', '--checkpoint', str(ckpt), '--hr_dir', str(hr_dir), '--ssim',
                          '--results', str(out), '--save_dir', str(tmp / 'sr'), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res) == {'tiny_rfdn', 'bicubic'}
    rec = res['tiny_rfdn']
    for key in ('valid_ave_psnr', 'valid_ave_psnr_y', 'valid_ave_ssim_y', 'valid_ave_runtime',
                'valid_memory', 'num_parameters', 'flops', 'flops_fvcore', 'activations',
                'num_conv', 'valid_psnr', 'valid_runtime', 'device', 'tiny_ave_psnr'):
        assert key in rec, key
    assert len(rec['valid_psnr']) == 2 and len(rec['valid_runtime']) == 2
    assert rec['device'] == 'cpu'
    # bicubic of a blurred image is a sensible reference: well above noise level
    assert res['bicubic']['valid_ave_psnr'] > 20
    assert (tmp / 'out' / 'res.txt').read_text().count('\n') == 2
    md = (tmp / 'out' / 'res.md').read_text().splitlines()
    assert len(md) == 2 + 2 and md[2].startswith('| tiny_rfdn | ')   # header, rule, 2 models
    psnr_y = float(md[2].split('|')[2])          # first set's PSNR-Y, as in results.json
    assert abs(psnr_y - rec['valid_ave_psnr_y']) <= 0.005
    assert (tmp / 'out' / 'res.png').stat().st_size > 1000
    sr = cv2.imread(str(tmp / 'sr' / 'tiny_rfdn' / 'tiny' / 'ax4.png'))
    assert sr.shape == (48, 40, 3)


def test_demo_default_runs_on_sample_set(repo_root, tmp_path):
    """A fresh clone: no data folder, an empty model zoo -> bicubic on the sample set."""
    zoo = tmp_path / 'zoo'
    zoo.mkdir()
    r = run_demo(repo_root, '--model_zoo', str(zoo), '--results', str(tmp_path / 'r.json'),
                 '--no_save', '--data_dir', str(tmp_path / 'nodata'), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert 'built-in sample set' in r.stdout
    res = json.loads((tmp_path / 'r.json').read_text())
    assert 25 < res['bicubic']['valid_ave_psnr'] < 35


def test_small_images_are_padded_not_crashed(script_in_process, tmp_path):
    """LR 6x5 is below ESA's 15-pixel minimum: reflect/replicate padding, cropped back."""
    hr_dir = tmp_path / 'small' / 'HR'
    hr_dir.mkdir(parents=True)
    cv2.imwrite(str(hr_dir / 'tiny.png'), np.full((24, 20, 3), 120, np.uint8))
    ckpt = tmp_path / 'm.pth'
    save_state_dict(RFDN(nf=8, num_modules=1).state_dict(), str(ckpt))
    r = script_in_process('test_demo', '--checkpoint', str(ckpt), '--hr_dir', str(hr_dir), '--no_bicubic',
                          '--results', str(tmp_path / 'r.json'), '--save_dir', str(tmp_path / 'sr'))
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(tmp_path / 'sr' / 'm' / 'small' / 'tinyx4.png')).shape == (24, 20, 3)


def _assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith('error:')]
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.slow
def test_runtime_in_turns(script_in_process, tiny_data):
    # --runtime_rounds N: every network timed N rounds × 3 calls, in turns, after the evaluation
    tmp, hr_dir, ckpt = tiny_data
    imdn = tmp / 'tiny_imdn.pth'
    save_state_dict(IMDN(nc=8, nb=2, upscale=4).state_dict(), str(imdn))     # a 0–1 model
    out = tmp / 'turns.json'
    r = script_in_process('test_demo', '--checkpoint', str(ckpt), str(imdn), '--hr_dir', str(hr_dir),
                          '--runtime_rounds', '2', '--no_save', '--results', str(out), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert 'timing 2 models in turns at 256² (2 rounds × 3 calls)' in r.stdout
    res = json.loads(out.read_text())
    for label in ('tiny_rfdn', 'tiny_imdn'):
        times = res[label]['runtime_256_times']
        assert len(times) == 6 and res[label]['runtime_256'] == pytest.approx(np.median(times))
    assert 'runtime_256_times' not in res['bicubic'] and res['bicubic']['runtime_256'] > 0
    _assert_one_line_error(script_in_process('test_demo', '--checkpoint', str(ckpt), '--hr_dir', str(hr_dir),
                                             '--runtime_rounds', '-1', '--results', str(tmp / 'x.json')),
                           'must be 0 or more')
    assert not (tmp / 'x.json').exists()


def _assert_refused(argv, *needles):
    """test_demo.main(argv) stops with a one-line UserError containing every needle."""
    import test_demo
    from utils.io.errors import UserError
    with pytest.raises(UserError) as caught:
        test_demo.main(argv)
    message = str(caught.value)
    assert '\n' not in message and all(n in message for n in needles), message


def test_bad_input_one_line_errors_nothing_written(repo_root, tiny_data):
    """In-process through main(argv); tests/test_bad_input.py checks the exit code and stderr
    of a real run."""
    tmp, hr_dir, ckpt = tiny_data
    res = tmp / 'bad' / 'r.json'
    common = ['--results', str(res), '--save_dir', str(tmp / 'bad_sr')]

    _assert_refused(['--checkpoint', str(ckpt), '--hr_dir',
                                    str(tmp / 'missing'), *common], 'not found')
    empty = tmp / 'empty'
    empty.mkdir()
    _assert_refused(['--checkpoint', str(ckpt), '--hr_dir', str(empty),
                                    *common], 'no images')
    # LR of the wrong size
    lr_dir = tmp / 'LR'
    lr_dir.mkdir()
    cv2.imwrite(str(lr_dir / 'ax4.png'), np.zeros((10, 10, 3), np.uint8))
    _assert_refused(['--checkpoint', str(ckpt), '--hr_dir', str(hr_dir),
                                    '--lr_dir', str(lr_dir), *common], 'does not match')
    # a corrupt image
    bad_hr = tmp / 'badHR'
    bad_hr.mkdir()
    (bad_hr / 'x.png').write_bytes(b'\x89PNG not really')
    _assert_refused(['--checkpoint', str(ckpt), '--hr_dir', str(bad_hr),
                                    *common], 'cannot read image')
    # unknown model name, a checkpoint that does not fit, a missing checkpoint
    _assert_refused(['--model', 'NoSuchNet', '--checkpoint', str(ckpt),
                                    '--hr_dir', str(hr_dir), *common], 'unknown model')
    _assert_refused(['--model', 'IMDN', '--checkpoint', str(ckpt),
                                    '--hr_dir', str(hr_dir), *common], 'does not fit IMDN', 'missing')
    _assert_refused(['--checkpoint', str(tmp / 'nope.pth'),
                                    '--hr_dir', str(hr_dir), *common], 'checkpoint not found')
    _assert_refused(['--model_id', '99', '--hr_dir', str(hr_dir), *common],
                           'unknown --model_id')
    _assert_refused(['--checkpoint', str(ckpt), '--hr_dir', str(hr_dir),
                                    '--fp16', '--device', 'cpu', *common], '--fp16 needs --device cuda')
    assert not res.exists() and not (tmp / 'bad_sr').exists()


def test_model_range_is_respected():
    """IMDN works in 0-1, RFDN in 0-255: super_resolve must scale for each, so a model
    that is the identity in its own range gives back the image (here: nearest upsampling
    of the LR written as a pixel-shuffle conv)."""
    from utils.engine.inference import super_resolve
    lr = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    expected = lr.repeat(2, axis=0).repeat(2, axis=1)
    for model in (IMDN(nc=4, nb=1, upscale=2), RFDN(nf=4, num_modules=1, upscale=2)):
        class Nearest(torch.nn.Module):
            input_range, scale, min_input_size = model.input_range, 2, 1

            def forward(self, x):
                assert x.max() <= self.input_range + 1e-6 and x.max() > 0.5 * self.input_range
                return torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest')
        assert np.array_equal(super_resolve(Nearest(), lr), expected)


def test_ntire_layout_discovery_and_include_test(script_in_process, tmp_path):
    """DIV2K_valid_HR + DIV2K_valid_LR_bicubic/X4 as 'valid'; test LR without HR as 'test'."""
    rng = np.random.default_rng(0)
    data = tmp_path / 'data'
    for sub in ('DIV2K_valid_HR', 'DIV2K_valid_LR_bicubic/X4', 'DIV2K_test_LR_bicubic/X4'):
        (data / sub).mkdir(parents=True)
    from utils.io.matlab_functions import imresize
    hr = cv2.GaussianBlur(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8), (5, 5), 2)
    cv2.imwrite(str(data / 'DIV2K_valid_HR' / '0801.png'), hr)
    cv2.imwrite(str(data / 'DIV2K_valid_LR_bicubic/X4' / '0801x4.png'), imresize(hr, 0.25))
    cv2.imwrite(str(data / 'DIV2K_test_LR_bicubic/X4' / '0901x4.png'), imresize(hr, 0.25))
    out = tmp_path / 'r.json'
    r = script_in_process('test_demo', '--data_dir', str(data), '--include_test', '--model_zoo', str(tmp_path),
                          '--results', str(out), '--save_dir', str(tmp_path / 'sr'))
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())['bicubic']
    assert len(rec['valid_psnr']) == 1 and rec['valid_ave_psnr'] > 20
    assert rec['test_psnr'] == [] and len(rec['test_runtime']) == 1
    assert (tmp_path / 'sr' / 'bicubic' / 'test' / '0901x4.png').exists()


def test_unique_labels_for_same_file_names():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from test_demo import unique_labels
    labels = [l for l, _ in unique_labels(['a/x/pruned.pth', 'b/y/pruned.pth', 'c/rfdn.pth'])]
    assert labels == ['x/pruned', 'y/pruned', 'rfdn']


def test_labels_name_the_checkpoints():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from test_demo import parse_args, select_checkpoints
    from utils.io.errors import UserError
    args = parse_args(['--checkpoint', 'a/x.pth', 'b/y.pth', '--labels', 'IMDN-7', 'IMDN-7 + CLB'])
    assert select_checkpoints(args) == [('IMDN-7', 'a/x.pth'), ('IMDN-7 + CLB', 'b/y.pth')]
    for bad in (['--checkpoint', 'a.pth', 'b.pth', '--labels', 'one'],
                ['--checkpoint', 'a.pth', 'b.pth', '--labels', 'same', 'same'],
                ['--labels', 'orphan']):
        with pytest.raises(UserError):
            select_checkpoints(parse_args(bad))


def test_onnx_export_is_scored_with_its_source_counts_and_checked_against_it(script_in_process, tiny_data):
    """--onnx ONNX SOURCE: the export is evaluated like a model, its params and FLOPs come from
    SOURCE; an ONNX of other weights, a file that is not ONNX, or a scale other than --scale is
    refused before any evaluation."""
    import test_demo
    from utils.compress.export import export_onnx
    from utils.io.errors import UserError
    tmp, hr_dir, ckpt = tiny_data
    onnx_path = tmp / 'tiny.onnx'
    model = RFDN(nf=8, num_modules=2, upscale=4).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    export_onnx(model, str(onnx_path))
    out = tmp / 'res.json'
    (tmp / 'empty_zoo').mkdir()
    common = ['--hr_dir', str(hr_dir), '--no_save', '--no_bicubic', '--device', 'cpu',
              '--model_zoo', str(tmp / 'empty_zoo')]
    r = script_in_process('test_demo', '--onnx', str(onnx_path), str(ckpt), '--results', str(out), *common)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())['tiny (onnx)']
    assert rec['num_parameters'] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    other = tmp / 'wider.pth'
    save_state_dict(RFDN(nf=12, num_modules=2, upscale=4).state_dict(), str(other))
    x2, x2_onnx = tmp / 'x2.pth', tmp / 'x2.onnx'
    save_state_dict(RFDN(nf=8, num_modules=2, upscale=2).state_dict(), str(x2))
    export_onnx(RFDN(nf=8, num_modules=2, upscale=2), str(x2_onnx))
    not_onnx = tmp / 'a.onnx'
    not_onnx.write_bytes(b'\x89PNG not a graph')
    never = tmp / 'never.json'
    for onnx_file, source, expected in [
            (onnx_path, other, 'holds .* weights, but .*wider.pth has .* parameters'),
            (not_onnx, ckpt, 'is not an ONNX model'),
            (x2_onnx, x2, 'is a ×2 model but --scale is 4')]:
        with pytest.raises(UserError, match=expected):
            test_demo.main(['--onnx', str(onnx_file), str(source), '--results', str(never), *common])
    assert not never.exists()

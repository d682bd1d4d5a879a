"""utils.engine.figures: a bad --out, --scale, --crop, --at or checkpoint is refused with one line
before any model runs, and never overwrites an input."""

import cv2
import numpy as np
import pytest
import torch
from refusals import snapshot, user_error

from models import RFDN
from utils.engine import figures
from utils.io.checkpoint import save_state_dict

HR_H, HR_W, CROP = 50, 70, 16  # at ×4 the figure uses 48×68: Y in [0, 32], X in [0, 52]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run fastest on one thread, and leave the other core to the machine."""


@pytest.fixture()
def inputs(tmp_path):
    """(HR image, ×4 checkpoint, ×2 checkpoint) in tmp_path."""
    rng = np.random.default_rng(0)
    hr = tmp_path / 'photo.png'
    assert cv2.imwrite(str(hr), cv2.GaussianBlur(rng.integers(0, 256, (HR_H, HR_W, 3), dtype=np.uint8), (7, 7), 3))
    checkpoints = []
    for scale in (4, 2):
        torch.manual_seed(0)
        path = tmp_path / f'tiny_x{scale}.pth'
        save_state_dict(RFDN(nf=8, num_modules=2, upscale=scale).state_dict(), str(path))
        checkpoints.append(path)
    return hr, *checkpoints


def refusal(tmp_path, argv) -> str:
    """The one-line UserError of figures.main(argv); tmp_path is left as it was."""
    before = snapshot(tmp_path)
    message = user_error(figures.main, argv)
    assert snapshot(tmp_path) == before
    return message


def no_model_may_run(monkeypatch):
    def refuse(*_):
        raise AssertionError('a model ran before the arguments were checked')
    monkeypatch.setattr(figures, 'super_resolve', refuse)


@pytest.mark.parametrize('which', ['hr', 'checkpoint'])
def test_out_naming_an_input_is_refused(tmp_path, inputs, which, monkeypatch):
    hr, x4, _ = inputs
    no_model_may_run(monkeypatch)
    out = hr if which == 'hr' else x4
    message = refusal(tmp_path, ['--out', out, '--hr', hr, '--checkpoint', x4])
    assert message.startswith(f'--out {out} is the input') and 'refusing to overwrite' in message


@pytest.mark.parametrize('out, expected', [
    ('blocker/f.png', 'blocker is a file, not a folder'),
    ('folder.pth', 'is a folder; give a file name'),
    ('f.xyz', 'cannot write .xyz figures; use one of'),
])
def test_unwritable_out_is_refused_before_any_model_runs(tmp_path, inputs, out, expected, monkeypatch):
    hr, x4, _ = inputs
    (tmp_path / 'blocker').write_text('a file, not a folder')
    (tmp_path / 'folder.pth').mkdir()
    no_model_may_run(monkeypatch)
    message = refusal(tmp_path, ['--out', tmp_path / out, '--hr', hr, '--checkpoint', x4])
    assert message.startswith('--out ') and expected in message


def test_a_model_of_another_scale_is_refused(tmp_path, inputs, monkeypatch):
    hr, x4, x2 = inputs
    no_model_may_run(monkeypatch)
    message = refusal(tmp_path, ['--out', tmp_path / 'f.png', '--hr', hr, '--checkpoint', x4, x2])
    assert message == f'--checkpoint {x2} is ×2, --scale is 4'
    message = refusal(tmp_path, ['--out', tmp_path / 'f.png', '--hr', hr, '--checkpoint', x4, '--scale', '2'])
    assert message == f'--checkpoint {x4} is ×4, --scale is 2'


@pytest.mark.parametrize('option, value', [('--scale', 0), ('--crop', 0), ('--crop', -8)])
def test_scale_and_crop_below_one_are_refused(tmp_path, inputs, option, value, monkeypatch):
    hr, x4, _ = inputs
    no_model_may_run(monkeypatch)
    message = refusal(tmp_path, ['--out', tmp_path / 'f.png', '--hr', hr, '--checkpoint', x4, option, value])
    assert message == f'{option} must be at least 1, got {value}'


@pytest.mark.parametrize('y, x', [(500, -3), (-1, 0), (33, 0), (0, 53)])
def test_a_crop_outside_the_image_is_refused(tmp_path, inputs, y, x, monkeypatch):
    hr, x4, _ = inputs
    no_model_may_run(monkeypatch)
    message = refusal(tmp_path, ['--out', tmp_path / 'f.png', '--hr', hr, '--checkpoint', x4,
                                 '--crop', CROP, '--at', y, x])
    assert message == (f'--at {y} {x} puts the {CROP}-pixel crop outside {hr} ({HR_W}×{HR_H} pixels): '
                       f'Y in [0, 32], X in [0, 52]')


def test_a_crop_larger_than_the_image_is_refused(tmp_path, inputs, monkeypatch):
    hr, x4, _ = inputs
    no_model_may_run(monkeypatch)
    message = refusal(tmp_path, ['--out', tmp_path / 'f.png', '--hr', hr, '--checkpoint', x4,
                                 '--crop', 49, '--at', 0, 0])
    assert message.endswith('the crop is larger than the image')


def test_the_last_crop_inside_the_image_is_drawn(tmp_path, inputs, script_in_process):
    hr, x4, _ = inputs
    photo = hr.read_bytes()
    out = tmp_path / 'figure.png'
    r = script_in_process('utils.engine.figures', '--out', out, '--hr', hr, '--checkpoint', x4,
                          '--crop', CROP, '--at', 32, 52)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)) is not None and hr.read_bytes() == photo


def test_a_refusal_is_one_error_line_and_exit_code_2(tmp_path, inputs, script_in_process):
    hr, x4, _ = inputs
    photo = hr.read_bytes()
    r = script_in_process('utils.engine.figures', '--out', hr, '--hr', hr, '--checkpoint', x4)
    assert r.returncode == 2 and r.stderr.startswith('error: --out ') and r.stderr.count('\n') == 1
    assert hr.read_bytes() == photo

"""Teacher-labelled pairs (python -m utils.engine.teacher_pairs): the LR input is the MATLAB
bicubic of the downscaled training image, the HR target the teacher's output of exactly that
input, in a layout train.py reads as training pairs; reruns resume, bad input is one line."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from refusals import snapshot, user_error
from synthetic_images import write_smooth_images

from models import RFDN
from utils.data import TrainingSet, find_training_pairs
from utils.engine import teacher_pairs
from utils.engine.inference import super_resolve, super_resolve_tensor
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError
from utils.io.image_io import imread_rgb, uint8_to_tensor
from utils.io.matlab_functions import imresize, modcrop

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    """A tiny RFDN teacher, two HR images (the second small) and their pairs at 1/2 and 1/3."""
    tmp = tmp_path_factory.mktemp('pairs')
    data = write_smooth_images(tmp / 'hr', [(97, 130), (64, 70)])
    torch.manual_seed(0)
    teacher = RFDN(nf=8, num_modules=2).eval()
    ckpt = str(tmp / 'teacher.pth')
    save_state_dict(teacher.state_dict(), ckpt)
    argv = ['--teacher', ckpt, '--out_dir', str(tmp / 'pairs'), '--data_dir', str(data),
            '--downscale', '2', '3', '--no_progress']
    assert teacher_pairs.main(argv) == 0
    return tmp, data, teacher, argv


def test_pairs_are_the_teachers_output_of_the_downscaled_image(pairs):
    tmp, data, teacher, _ = pairs
    for name, d in (('img0', 2), ('img0', 3), ('img1', 2)):
        hr = modcrop(imread_rgb(str(data / f'{name}.png')), 4)  # the index modcrops to the scale
        lr = imread_rgb(str(tmp / 'pairs' / 'X4' / f'{name}_d{d}.png'))
        assert np.array_equal(lr, imresize(modcrop(hr, d), 1 / d))
        target = imread_rgb(str(tmp / 'pairs' / 'HR' / f'{name}_d{d}.png'))
        assert np.array_equal(target, super_resolve(teacher, lr))
    # img1 at 1/3 is 21x22 LR (from 63x66 of the modcropped 64x68): small, but made; only a
    # side under 8 LR pixels is left out
    assert (tmp / 'pairs' / 'HR' / 'img1_d3.png').is_file()


def test_train_py_reads_them_as_training_pairs(pairs):
    tmp = pairs[0]
    found = find_training_pairs([str(tmp / 'pairs')], 4)
    assert len(found) == 4 and all(lr is not None for _, lr in found)
    train_set = TrainingSet(found, 4, 1, progress=False)
    lr, hr = train_set.crop(0, 2, 3, 8)  # the LR file and the teacher's output, aligned
    hr_path, lr_path = found[0]
    assert np.array_equal(lr, imread_rgb(lr_path)[2:10, 3:11])
    assert np.array_equal(hr, imread_rgb(hr_path)[8:40, 12:44])


def test_a_rerun_writes_nothing_and_fills_in_what_is_missing(pairs, capsys):
    tmp, _, _, argv = pairs
    (tmp / 'pairs' / 'HR' / 'img0_d3.png').unlink()  # as if interrupted between LR and HR
    assert teacher_pairs.main(argv) == 0
    assert '4 teacher-labelled pairs' in capsys.readouterr().out
    assert teacher_pairs.main(argv) == 0
    assert '(0 written, 4 already there' in capsys.readouterr().out


def test_images_too_small_to_downscale_are_counted_not_written(pairs, tmp_path, capsys):
    _, data, _, argv = pairs
    argv = [a if a != str(pairs[0] / 'pairs') else str(tmp_path / 'p') for a in argv]
    argv[argv.index('3')] = '9'  # 64 / 9 = 7 LR pixels: too small
    assert teacher_pairs.main(argv) == 0
    out = capsys.readouterr().out
    assert '1 left out as under 8 LR pixels' in out and not (tmp_path / 'p' / 'HR' / 'img1_d9.png').exists()


def test_bad_input_is_one_line(pairs, tmp_path):
    tmp, data, _, argv = pairs
    with pytest.raises(UserError, match='--downscale factor'):
        teacher_pairs.main(argv[:-4] + ['--downscale', '0', '--no_progress'])
    dup = write_smooth_images(tmp_path / 'other', [(64, 64)])  # img0.png again
    with pytest.raises(UserError, match='would both write the pair img0_d2'):
        teacher_pairs.main(['--teacher', argv[1], '--out_dir', str(tmp_path / 'o'),
                            '--data_dir', str(data), str(dup), '--downscale', '2', '--no_progress'])


def refused(argv, match):
    """The one-line UserError of teacher_pairs.main(argv), which must match `match`."""
    return user_error(teacher_pairs.main, argv, match)


def test_another_teacher_or_scale_cannot_add_to_the_pairs(pairs, tmp_path):
    """The pairs already there are kept: another checkpoint's would be mixed with them, and
    another scale's HR targets would overwrite theirs (HR/ is shared by every scale)."""
    tmp, data, _, argv = pairs
    mine = tmp_path / 'pairs'
    shutil.copytree(tmp / 'pairs', mine)
    before = snapshot(mine)
    torch.manual_seed(4)
    other, x2 = str(tmp_path / 'other.pth'), str(tmp_path / 'x2.pth')
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), other)
    save_state_dict(RFDN(nf=8, num_modules=2, upscale=2).state_dict(), x2)
    common = ['--out_dir', str(mine), '--data_dir', str(data), '--downscale', '2', '--no_progress']
    refused(['--teacher', other] + common,
                    r'made by another teacher checkpoint \(teacher.pth\) than other.pth: give another --out_dir')
    refused(['--teacher', x2, '--scale', '2'] + common, r'are ×4, not ×2: give another --out_dir')
    assert snapshot(mine) == before
    assert json.loads((mine / 'teacher_pairs.json').read_text())['teacher'] == 'teacher.pth'


def test_outputs_and_teacher_are_checked_before_any_work(pairs, tmp_path):
    _, data, _, argv = pairs
    hr = tmp_path / 'hr'
    shutil.copytree(data, hr)
    (tmp_path / 'afile').write_text('x')
    (tmp_path / 'st').mkdir()  # a store's manifest: the teacher is hashed to compare with it
    (tmp_path / 'st' / 'manifest.json').write_text(json.dumps({'scale': 4, 'teacher_sha256': '0'}))
    before = snapshot(tmp_path)
    out = str(tmp_path / 'o')
    for args, match in (
            (['--out_dir', str(tmp_path / 'afile')], '--out_dir .*afile is a file, not a folder'),
            (['--out_dir', str(tmp_path / 'afile' / 'tp')], 'cannot be created: .*afile is a file'),
            (['--out_dir', out, '--store', str(tmp_path / 'afile')], '--store .*afile is a file'),
            (['--out_dir', str(hr)], 'is the --data_dir'),  # its pairs would be indexed with it
            (['--out_dir', str(hr / 'tp')], 'lies inside the --data_dir'),
            (['--out_dir', str(tmp_path)], 'holds the --data_dir'),
            (['--out_dir', out, '--store', str(hr / 'st')], '--store .*lies inside the --data_dir'),
            (['--out_dir', out, '--store', str(tmp_path / 'st'), '--teacher', str(tmp_path / 'missing.pth')],
             'missing.pth not found'),
            (['--out_dir', out, '--store', str(tmp_path / 'st'), '--teacher', str(tmp_path)],
             'is a folder, not a checkpoint file')):
        refused(['--teacher', argv[1], '--data_dir', str(hr), '--downscale', '2', '--no_progress']
                        + args, match)
    assert snapshot(tmp_path) == before
    (tmp_path / 'o').mkdir()
    (tmp_path / 'o' / 'teacher_pairs.json').write_text('[1]')
    refused(['--teacher', argv[1], '--out_dir', out, '--data_dir', str(hr), '--no_progress'],
                    'record of teacher-labelled pairs .* holds no JSON object')


def test_store_gets_the_pairs_outputs_beside_the_original_images(pairs, tmp_path, capsys):
    from utils.data.teacher_store import decode, read_manifest, read_output
    from utils.engine import precompute
    tmp, data, teacher, argv = pairs
    store = tmp_path / 'store'
    ckpt = argv[1]
    assert precompute.main(['--teacher', ckpt, '--out_dir', str(store), '--data_dir', str(data),
                            '--no_progress']) == 0
    out = tmp_path / 'pairs'
    assert teacher_pairs.main(['--teacher', ckpt, '--out_dir', str(out), '--data_dir', str(data),
                               '--downscale', '2', '--store', str(store), '--no_progress']) == 0
    assert read_manifest(str(store), 4, ckpt)['images'] == 4  # 2 images + 2 pairs
    both = TrainingSet(find_training_pairs([str(data), str(out)], 4), 4, 1, progress=False)
    both.attach_teacher_outputs(str(store))  # every image and pair has its output
    lr = imread_rgb(str(out / 'X4' / 'img0_d2.png'))
    with torch.no_grad():  # the teacher as test_demo.py runs it (small inputs padded)
        expected = super_resolve_tensor(teacher, uint8_to_tensor(lr), 4)[0].permute(1, 2, 0).numpy() / 255
    stored = decode(read_output(both.teacher_refs[both.names.index(str(out / 'HR' / 'img0_d2.png'))]))
    # an untrained teacher overshoots the store's range [-0.25, 1.25]: compare within it
    assert np.abs(stored - np.clip(expected, -0.25, 1.25)).max() < 2e-5
    # a deleted store entry is written again (the teacher re-run), the pair files kept
    os.remove(both.teacher_refs[-1])
    capsys.readouterr()
    assert teacher_pairs.main(['--teacher', ckpt, '--out_dir', str(out), '--data_dir', str(data),
                               '--downscale', '2', '--store', str(store), '--no_progress']) == 0
    assert '(1 written, 1 already there' in capsys.readouterr().out
    torch.manual_seed(1)
    other = str(tmp_path / 'other.pth')
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), other)
    with pytest.raises(UserError, match='written by another checkpoint'):
        teacher_pairs.main(['--teacher', other, '--out_dir', str(out), '--data_dir', str(data),
                            '--downscale', '2', '--store', str(store), '--no_progress'])

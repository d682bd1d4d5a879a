"""Stored teacher outputs (utils/data/teacher_store.py, python -m utils.engine.precompute):
the store holds the teacher's whole-image output to within the encoding error, batches carry
its patch aligned and augmented with LR/HR, and training on it gives the losses of the live
teacher wherever the two see the same pixels."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from refusals import snapshot, user_error
from synthetic_images import write_smooth_images

from models import RFDN
from utils.data import PatchBatches, TrainingSet, augment, draw_patch, find_training_pairs
from utils.data.teacher_store import (
    MANIFEST,
    OFFSET,
    SPAN,
    decode,
    encode,
    output_name,
    read_manifest,
    read_output,
    store_paths,
)
from utils.engine import precompute
from utils.engine.training import TrainConfig, Trainer
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError
from utils.io.image_io import imwrite_rgb, uint8_to_tensor

pytestmark = pytest.mark.usefixtures('one_thread')

#: the encoding's largest error, 0–1 units (half a uint16 step), plus float32 rounding
TOLERANCE = SPAN / 65535 / 2 + 1e-6


def test_encoding_round_trip_keeps_overshoot_and_counts_clipping():
    x = np.array([[[-0.25, 0.0, 0.5], [1.0, 1.1, 1.25]]], dtype=np.float32)
    u16, clipped = encode(x)
    assert u16.dtype == np.uint16 and clipped == 0
    assert np.abs(decode(u16) - x).max() <= TOLERANCE
    _, clipped = encode(np.array([-0.3, 0.2, 1.3]))
    assert clipped == 2


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """A tiny RFDN teacher, two HR-only images (LR by MATLAB bicubic) and its store."""
    tmp = tmp_path_factory.mktemp('teacher')
    data = write_smooth_images(tmp / 'hr', [(96, 80), (64, 64)])
    torch.manual_seed(0)
    teacher = RFDN(nf=8, num_modules=2).eval()
    ckpt = str(tmp / 'teacher.pth')
    save_state_dict(teacher.state_dict(), ckpt)
    argv = ['--teacher', ckpt, '--out_dir', str(tmp / 'store'), '--data_dir', str(data), '--no_progress']
    assert precompute.main(argv) == 0
    return tmp, data, teacher, ckpt, argv


def _whole_outputs(teacher, train_set, clip=True):
    """The live teacher on each whole LR image, HxWx3 float in 0–1 units (clipped to the
    stored range: an untrained teacher overshoots it)."""
    with torch.no_grad():
        outs = [(teacher(uint8_to_tensor(train_set.whole_lr(i), 255.0))[0] / 255).permute(1, 2, 0).numpy()
                for i in range(len(train_set))]
    return [np.clip(o, -OFFSET, SPAN - OFFSET) for o in outs] if clip else outs


def test_store_holds_the_whole_image_outputs_and_a_rerun_writes_nothing(store, capsys):
    tmp, data, teacher, ckpt, argv = store
    train_set = TrainingSet(find_training_pairs([str(data)], 4), 4, 1, progress=False)
    manifest = read_manifest(str(tmp / 'store'), 4, ckpt)
    assert manifest['images'] == 2 and manifest['scale'] == 4
    paths = store_paths(str(tmp / 'store'), train_set.names)
    for path, live in zip(paths, _whole_outputs(teacher, train_set)):
        assert np.abs(decode(read_output(path)) - live).max() <= TOLERANCE
    outside = sum(int(np.count_nonzero((o < -OFFSET) | (o > SPAN - OFFSET)))
                  for o in _whole_outputs(teacher, train_set, clip=False))
    assert manifest['clipped_values'] == outside > 0
    capsys.readouterr()
    assert precompute.main(argv) == 0
    assert '0 written, 2 already there' in capsys.readouterr().out


def test_the_store_serves_the_same_images_spelled_another_way(store, tmp_path, monkeypatch):
    """Written from an absolute data path, read through a relative one and through a symlink
    (ESR_SHARED=/abs/shared against ../shared): the same files, the same stored outputs."""
    tmp, data, *_ = store
    absolute = store_paths(str(tmp / 'store'), [p for p, _ in find_training_pairs([str(data)], 4)])
    link = tmp_path / 'linked_hr'
    link.symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for spelled in (os.path.relpath(data, tmp_path), 'linked_hr'):
        names = [p for p, _ in find_training_pairs([spelled], 4)]
        assert not os.path.isabs(names[0])
        assert store_paths(str(tmp / 'store'), names) == absolute
    (tmp_path / 'train.lmdb').mkdir()  # an LMDB entry is 'folder:key'; its folder is resolved
    assert output_name('train.lmdb:0001') == output_name(f'{tmp_path / "train.lmdb"}:0001')
    assert output_name('train.lmdb:0001') != output_name('train.lmdb:0002')


def test_batches_carry_the_teacher_patch_aligned_and_augmented(store):
    tmp, data, teacher, _, _ = store
    plain = TrainingSet(find_training_pairs([str(data)], 4), 4, 16, progress=False)
    with_teacher = TrainingSet(find_training_pairs([str(data)], 4), 4, 16, progress=False)
    with_teacher.attach_teacher_outputs(str(tmp / 'store'))
    whole = _whole_outputs(teacher, plain)
    step = 3
    lr_a, hr_a = PatchBatches(plain, 4, [(16, 1)], seed=5)[step]
    lr_b, hr_b, teacher_b = PatchBatches(with_teacher, 4, [(16, 1)], seed=5)[step]
    assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)   # the draw is unchanged
    assert teacher_b.shape == hr_b.shape
    for j in range(4):
        rng = np.random.default_rng([5, step, j])
        i = int(plain.eligible(16)[rng.integers(0, len(plain.eligible(16)))])
        top, left, *flips = draw_patch(plain.lr_shapes[i], 16, rng)
        (expected,) = augment((whole[i][top * 4:(top + 16) * 4, left * 4:(left + 16) * 4],), *flips)
        got = teacher_b[j].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= TOLERANCE


def test_training_reads_the_stored_patch_instead_of_running_the_teacher(store, tmp_path):
    """The distillation term is L1 to the batch's stored patch (in the model's range), the
    pixel term is the live run's; no teacher model is needed."""
    tmp, data, _, _, _ = store
    torch.manual_seed(1)
    student = RFDN(nf=8, num_modules=1)
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), data_dirs=[str(data)], iters=2, patch_size=16,
                      batch_size=2, distill='output', workers=0, progress=False, val_every=0,
                      teacher_outputs=str(tmp / 'store'))
    trainer = Trainer(student, cfg, None, val_set=None)
    lr, hr, teacher_sr = PatchBatches(trainer.train_set, 2, [(16, 1)], seed=0)[0]
    terms = trainer.losses(lr, hr, teacher_sr)
    with torch.no_grad():
        sr = student(lr * 255)
    assert torch.allclose(terms['distill'], (sr - teacher_sr * 255).abs().mean() / 255, rtol=1e-6)
    assert torch.allclose(terms['pixel'], (sr / 255 - hr).abs().mean(), rtol=1e-6)
    assert trainer.fit()['steps'] == 2


def test_bad_stores_are_one_line_errors(store, tmp_path):
    tmp, data, teacher, ckpt, _ = store
    other = str(tmp_path / 'other.pth')
    torch.manual_seed(3)
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), other)
    with pytest.raises(UserError, match='written by another checkpoint'):
        read_manifest(str(tmp / 'store'), 4, other)
    with pytest.raises(UserError, match='are ×4, training is ×2'):
        read_manifest(str(tmp / 'store'), 2)
    with pytest.raises(UserError, match='no manifest.json'):
        read_manifest(str(tmp_path), 4)
    more = write_smooth_images(tmp_path / 'more', [(64, 64)], seed=9)
    train_set = TrainingSet(find_training_pairs([str(data), str(more)], 4), 4, 16, progress=False)
    with pytest.raises(UserError, match='no teacher output for 1 of 3 .*writes the missing ones'):
        train_set.attach_teacher_outputs(str(tmp / 'store'))
    wrong = tmp_path / 'wrong_size'
    shutil.copytree(tmp / 'store', wrong)
    first = sorted(p for p in os.listdir(wrong) if p.endswith('.png'))[0]
    imwrite_rgb(wrong / first, np.zeros((8, 8, 3), np.uint16))
    one_set = TrainingSet(find_training_pairs([str(data)], 4), 4, 16, progress=False)
    with pytest.raises(UserError, match='teacher output 8x8, its HR image'):
        one_set.attach_teacher_outputs(str(wrong))
    with pytest.raises(UserError, match='no output distillation reads them'):
        Trainer(RFDN(nf=8, num_modules=1), TrainConfig(out_dir=str(tmp_path / 'x'), data_dirs=[str(data)],
                                                        patch_size=16, workers=0, progress=False,
                                                        teacher_outputs=str(tmp / 'store')), val_set=None)
    with open(os.path.join(tmp, 'store', MANIFEST)) as f:
        assert json.load(f)['teacher'] == 'teacher.pth'


def refused(argv, match):
    """The one-line UserError of precompute.main(argv), which must match `match`."""
    return user_error(precompute.main, argv, match)


def test_another_teacher_or_scale_cannot_take_over_a_store(store, tmp_path):
    """The outputs already there are kept: a run with another checkpoint (or scale) would leave
    them and write its own manifest over them, a store that lies about its teacher."""
    tmp, data, _, ckpt, _ = store
    mine = tmp_path / 'store'
    shutil.copytree(tmp / 'store', mine)
    before = snapshot(mine)
    other = str(tmp_path / 'other.pth')
    torch.manual_seed(4)
    save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), other)
    common = ['--out_dir', str(mine), '--data_dir', str(data), '--no_progress']
    refused(['--teacher', other] + common, r'written by another checkpoint .*give another --out_dir')
    refused(['--teacher', ckpt, '--scale', '2'] + common, r'are ×4, training is ×2: give another --out_dir')
    refused(['--teacher', str(tmp_path / 'missing.pth')] + common, 'missing.pth not found')
    refused(['--teacher', str(tmp_path)] + common, 'is a folder, not a checkpoint file')
    assert snapshot(mine) == before


def test_an_output_folder_that_cannot_be_one_is_refused_before_any_work(store, tmp_path):
    tmp, data, _, ckpt, _ = store
    hr = tmp_path / 'hr'
    shutil.copytree(data, hr)
    (tmp_path / 'afile').write_text('x')
    before = snapshot(tmp_path)
    for out, match in ((tmp_path / 'afile', 'is a file, not a folder'),
                       (tmp_path / 'afile' / 'st', 'cannot be created: .*afile is a file'),
                       (hr, 'is the --data_dir'),        # the store would be read as training images
                       (hr / 'st', 'lies inside the --data_dir'),
                       (tmp_path, 'holds the --data_dir')):
        refused(['--teacher', ckpt, '--out_dir', str(out), '--data_dir', str(hr), '--no_progress'],
                        match)
    assert snapshot(tmp_path) == before


class _NearestTeacher(torch.nn.Module):
    """Nearest-neighbour ×4 upsampling with a weight: equivariant to flips and 90° rotations
    and blind to what lies outside a patch, so stored and live outputs may differ only by the
    encoding."""
    scale, input_range = 4, 255.0

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.9))

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=4, mode='nearest') * self.gain


def test_compare_measures_only_what_the_live_teacher_sees_differently(store, tmp_path):
    tmp, data, rfdn, _, _ = store
    train_set = TrainingSet(find_training_pairs([str(data)], 4), 4, 16, progress=False)
    nearest = _NearestTeacher()
    precompute.write_teacher_outputs(nearest, train_set, str(tmp_path / 'nearest'), str(tmp / 'teacher.pth'),
                                     progress=False)
    train_set.attach_teacher_outputs(str(tmp_path / 'nearest'))
    exact = precompute.compare_with_live(nearest, train_set, batches=3, batch_size=4, patch=16, margin=2)
    assert exact['max'] <= 255 * TOLERANCE and exact['patches'] == 12
    train_set.attach_teacher_outputs(str(tmp / 'store'))  # the RFDN's: borders and rotations differ
    differs = precompute.compare_with_live(rfdn, train_set, batches=3, batch_size=4, patch=16, margin=2)
    assert differs['mean'] > 100 * exact['max'] + 0.01


def test_a_store_stopped_part_way_names_its_teacher_and_is_not_used(tmp_path, monkeypatch):
    """Its manifest is written before the first output: resuming it with another teacher is
    refused, training refuses it until a resumed run finishes it."""
    data = write_smooth_images(tmp_path / 'hr', [(64, 64), (48, 48)])
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpts.append(str(tmp_path / f'teacher{seed}.pth'))
        save_state_dict(RFDN(nf=8, num_modules=2).state_dict(), ckpts[-1])
    store = tmp_path / 'store'
    argv = ['--out_dir', str(store), '--data_dir', str(data), '--no_progress']
    write = precompute.write_stored_output
    calls = []

    def stop_at_the_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(*args)

    monkeypatch.setattr(precompute, 'write_stored_output', stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        precompute.main(['--teacher', ckpts[0], *argv])
    monkeypatch.setattr(precompute, 'write_stored_output', write)
    assert len([f for f in os.listdir(store) if f.endswith('.png')]) == 1
    with pytest.raises(UserError, match='not a finished teacher-output store: its writing was stopped'):
        read_manifest(str(store), 4, ckpts[0])
    with pytest.raises(UserError, match='written by another checkpoint .*: give another --out_dir'):
        precompute.main(['--teacher', ckpts[1], *argv])
    from utils.engine import teacher_pairs
    with pytest.raises(UserError, match='not a finished teacher-output store.*: give another --store'):
        teacher_pairs.main(['--teacher', ckpts[0], '--out_dir', str(tmp_path / 'pairs'), '--data_dir',
                            str(data), '--store', str(store), '--no_progress'])
    assert not (tmp_path / 'pairs').exists()
    assert precompute.main(['--teacher', ckpts[0], *argv]) == 0
    assert read_manifest(str(store), 4, ckpts[0])['finished'] is True

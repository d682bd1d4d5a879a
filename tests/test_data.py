"""utils.data: the header-only index, exact lazy LR crops, batches independent of the
number of workers, LMDB and sub-image round trips, unreadable images."""
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from refusals import user_error

import utils.data.training_set as training_set_module
from utils.data import (
    PatchBatches,
    TrainingSet,
    augment,
    bicubic_crop,
    draw_patch,
    find_training_pairs,
    validation_set,
)
from utils.data.lmdb_store import read_lmdb_rgb, read_meta_info
from utils.data.prepare import main as prepare_main
from utils.data.prepare import sub_image_boxes
from utils.io.errors import UserError
from utils.io.image_io import imread_rgb
from utils.io.matlab_functions import imresize, modcrop


def _image(rng, h, w):
    """Smooth random RGB image, HxWx3 uint8 (what cv2.imwrite gets is BGR; tests compare
    through imread_rgb, so the channel order does not matter)."""
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2)


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _lsdir(root, sizes, seed=0, scale=4):
    """An LSDIR-layout root: HR/train/0001000/NNNNNNN.png + X4/train/0001000/NNNNNNNx4.png."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        hr = _image(rng, h, w)
        _write(root / 'HR' / 'train' / '0001000' / f'{i:07d}.png', hr)
        lr = cv2.resize(hr[:h - h % scale, :w - w % scale], (w // scale, h // scale),
                        interpolation=cv2.INTER_AREA)
        _write(root / f'X{scale}' / 'train' / '0001000' / f'{i:07d}x{scale}.png', lr)
    return root


def _hr_folder(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        _write(folder / f'img{i}.png', _image(rng, h, w))
    return folder


def _batches(train_set, steps, workers, schedule=((16, 100),), batch=4, seed=3):
    data = PatchBatches(train_set, batch, list(schedule), seed)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=steps, num_workers=workers)
    return [(lr.clone(), hr.clone()) for lr, hr in loader]


def test_index_reads_headers_only(tmp_path, monkeypatch):
    """Layouts are found, LR sizes come from headers, and no pixel is decoded at start-up."""
    _lsdir(tmp_path / 'lsdir', [(96, 128), (40, 44), (130, 98)])
    plain = _hr_folder(tmp_path / 'plain', [(64, 80), (101, 99)])
    (plain / '.tmp_half_written.png').write_bytes(b'partial')  # hidden: never data
    div2k = tmp_path / 'div2k'
    _hr_folder(div2k / 'DIV2K_train_HR', [(96, 96)])
    _hr_folder(div2k / 'DIV2K_train_LR_bicubic' / 'X4', [(24, 24)])  # same name: img0.png

    def no_decoding(*args, **kwargs):
        raise AssertionError('pixels decoded while indexing')
    monkeypatch.setattr(training_set_module, 'imread_rgb', no_decoding)
    monkeypatch.setattr(cv2, 'imdecode', no_decoding)

    pairs = find_training_pairs([str(tmp_path / 'lsdir'), str(plain), str(div2k)], 4)
    assert [os.path.basename(h) for h, _ in pairs] == ['0000000.png', '0000001.png', '0000002.png',
                                                      'img0.png', 'img1.png', 'img0.png']
    assert pairs[0][1].endswith(os.path.join('X4', 'train', '0001000', '0000000x4.png'))
    assert pairs[3][1] is None and pairs[5][1].endswith(os.path.join('X4', 'img0.png'))
    index = TrainingSet(pairs, 4, 12, progress=False)
    assert index.skipped == 1 and len(index) == 5            # the 40x44 HR has a 10-pixel LR side
    assert index.lr_shapes.tolist() == [[24, 32], [32, 24], [16, 20], [25, 24], [24, 24]]
    assert index.eligible(20).tolist() == [0, 1, 3, 4]

    _hr_folder(tmp_path / 'bad' / 'HR', [(96, 96)])
    _hr_folder(tmp_path / 'bad' / 'X4', [(20, 24)])           # ×4 is 80x96, not 96x96
    with pytest.raises(UserError, match='does not match HR'):
        TrainingSet(find_training_pairs([str(tmp_path / 'bad')], 4), 4, 8, progress=False)
    with pytest.raises(UserError, match='not found'):
        find_training_pairs([str(tmp_path / 'missing')], 4)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_crop_equals_whole_image_bicubic(scale):
    rng = np.random.default_rng(scale)
    for h, w in ((11 * scale, 13 * scale), (40 * scale, 7 * scale), (67 * scale, 53 * scale)):
        hr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: no pixel is easy
        full = imresize(hr, 1.0 / scale)
        crops = [(0, 0, h // scale, w // scale), (h // scale - 3, w // scale - 2, 3, 2), (0, 1, 4, 5)]
        for _ in range(12):
            ch, cw = int(rng.integers(1, h // scale + 1)), int(rng.integers(1, w // scale + 1))
            top, left = int(rng.integers(0, h // scale - ch + 1)), int(rng.integers(0, w // scale - cw + 1))
            crops.append((top, left, ch, cw))
        for top, left, ch, cw in crops:
            got = bicubic_crop(hr, scale, top, left, ch, cw)
            assert np.array_equal(got, full[top:top + ch, left:left + cw]), (h, w, top, left, ch, cw)


def test_batches_are_the_same_for_any_number_of_workers(tmp_path):
    """0, 1 and 2 workers, a start mid-run (resume), a tiny or no decode cache: the same
    tensors, equal to crops of images decoded and bicubic-downscaled whole."""
    hr_only = _hr_folder(tmp_path / 'hr', [(96, 100), (81, 114), (130, 97)])
    paired = _lsdir(tmp_path / 'lsdir', [(96, 128), (72, 72)], seed=1)
    pairs = find_training_pairs([str(hr_only), str(paired)], 4)
    schedule = [(16, 3), (20, 4, 2)]
    steps = range(1, 7)
    reference = _batches(TrainingSet(pairs, 4, 16, progress=False), steps, 0, schedule)
    for workers, cache_mb in ((1, 256), (2, 256), (2, 0.05), (0, 0)):
        train_set = TrainingSet(pairs, 4, 16, cache_mb=cache_mb, progress=False)
        got = _batches(train_set, steps, workers, schedule)
        for (lr_a, hr_a), (lr_b, hr_b) in zip(reference, got):
            assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b), (workers, cache_mb)
    bounded = TrainingSet(pairs, 4, 16, cache_mb=0.05, progress=False)
    _batches(bounded, steps, 0, schedule)
    assert 0 < bounded._cached_bytes <= bounded.cache_bytes  # the cache stays within its budget

    # the same batch from eagerly decoded images (the LR of HR-only ones made whole)
    hrs = [modcrop(imread_rgb(h), 4) for h, _ in pairs]
    lrs = [imread_rgb(lr) if lr else imresize(hr, 0.25) for hr, (_, lr) in zip(hrs, pairs)]
    step = 2
    lr_t, hr_t = reference[steps.index(step)]
    for j in range(4):
        rng = np.random.default_rng([3, step, j])
        i = int(rng.integers(0, len(pairs)))  # every image is eligible for 16² patches
        top, left, *flips = draw_patch(lrs[i].shape[:2], 16, rng)
        lp, hp = augment((lrs[i][top:top + 16, left:left + 16],
                          hrs[i][top * 4:(top + 16) * 4, left * 4:(left + 16) * 4]), *flips)
        assert torch.equal(lr_t[j], torch.from_numpy(lp.copy()).permute(2, 0, 1).float() / 255)
        assert torch.equal(hr_t[j], torch.from_numpy(hp.copy()).permute(2, 0, 1).float() / 255)


def test_prepare_round_trip_resume_and_lmdb(tmp_path):
    """Every sub-image equals its source crop (HR, LR file, or bicubic LR), a rerun decodes
    nothing, a lost file is rewritten, and the LMDB holds the same pixels and batches."""
    src = _lsdir(tmp_path / 'lsdir', [(200, 264), (96, 120), (72, 300)])
    hr_only = _hr_folder(tmp_path / 'hr', [(150, 130)], seed=2)
    out = tmp_path / 'sub'
    assert prepare_main(['--data_dir', str(src), str(hr_only), '--out', str(out), '--crop', '96',
                         '--step', '48', '--lmdb', '--workers', '2', '--no_progress']) == 0
    expected = {}
    for hr_path, lr_path in find_training_pairs([str(src), str(hr_only)], 4):
        hr = modcrop(imread_rgb(hr_path), 4)
        lr = imread_rgb(lr_path) if lr_path else imresize(hr, 0.25)
        stem = os.path.splitext(os.path.basename(hr_path))[0]
        for k, (top, left, h, w) in enumerate(sub_image_boxes(*hr.shape[:2], 4, 96, 48, 0), 1):
            expected[f'{stem}_s{k:03d}'] = (hr[top:top + h, left:left + w],
                                            lr[top // 4:(top + h) // 4, left // 4:(left + w) // 4])
    # HR 200x264: tops 0,48,96,104 x lefts 0,48,96,144,168; 96x120: 1x2; 72x300: 1x6 (72-pixel
    # high boxes); 150x130 -> 148x128: 3x2
    assert len(expected) == 20 + 2 + 6 + 6
    assert sorted(os.listdir(out / 'HR')) == sorted(f'{k}.png' for k in expected)
    meta = read_meta_info(str(out / 'HR.lmdb'))
    for key, (hr, lr) in expected.items():
        assert np.array_equal(imread_rgb(out / 'HR' / f'{key}.png'), hr), key
        assert np.array_equal(imread_rgb(out / 'X4' / f'{key}.png'), lr), key
        assert np.array_equal(read_lmdb_rgb(str(out / 'HR.lmdb'), key), hr), key
        assert np.array_equal(read_lmdb_rgb(str(out / 'X4.lmdb'), key), lr), key
        assert meta[key] == hr.shape
    first = (out / 'X4.lmdb' / 'meta_info.txt').read_text().splitlines()[0]
    assert first == f'{sorted(expected)[0]}.png (24,24,3) 1'    # BasicSR's "name (h,w,c) level"

    # resume: nothing is rewritten; a lost sub-image (and a killed run's temp file) is repaired
    mtimes = {f: os.path.getmtime(out / 'HR' / f) for f in os.listdir(out / 'HR')}
    os.remove(out / 'X4' / '0000001_s002.png')
    (out / 'HR' / '.tmp_killed.png').write_bytes(b'partial')
    assert prepare_main(['--data_dir', str(src), str(hr_only), '--out', str(out), '--crop', '96',
                         '--step', '48', '--workers', '0', '--no_progress']) == 0
    assert np.array_equal(imread_rgb(out / 'X4' / '0000001_s002.png'), expected['0000001_s002'][1])
    changed = [f for f, t in mtimes.items() if os.path.getmtime(out / 'HR' / f) != t]
    assert set(changed) <= {'0000001_s001.png', '0000001_s002.png'}
    assert not [f for d in ('HR', 'X4') for f in os.listdir(out / d) if f.startswith('.')]

    # train.py's view: the sub-image folders and the LMDB give the same batches
    from_png = TrainingSet(find_training_pairs([str(out)], 4), 4, 16, progress=False)
    from_lmdb = TrainingSet(find_training_pairs([str(out / 'HR.lmdb')], 4), 4, 16, progress=False)
    assert from_lmdb.lr_refs[0] == (str(out / 'X4.lmdb'), sorted(expected)[0])  # sibling LR found
    for (a_lr, a_hr), (b_lr, b_hr) in zip(_batches(from_png, range(3), 0), _batches(from_lmdb, range(3), 2)):
        assert torch.equal(a_lr, b_lr) and torch.equal(a_hr, b_hr)

    import train
    run = ['--model', 'RFDN', '--batch_size', '2', '--patch_size', '16', '--iters', '2', '--workers', '0',
           '--val_hr_dir', 'none', '--no_progress']
    assert train.main(run + ['--data_dir', str(out / 'HR.lmdb'), '--out_dir', str(tmp_path / 'run')]) == 0
    assert (tmp_path / 'run' / 'model_last.pth').is_file()

    os.remove(out / 'HR.lmdb' / 'meta_info.txt')     # as if packing had been interrupted
    read_meta_info.cache_clear()
    with pytest.raises(UserError, match='unfinished'):
        train.main(run + ['--data_dir', str(out / 'HR.lmdb'), '--out_dir', str(tmp_path / 'run2')])
    with pytest.raises(UserError, match='multiple of --scale'):
        prepare_main(['--data_dir', str(src), '--out', str(tmp_path / 'x'), '--crop', '90'])


def test_prepare_refuses_bad_output_folders_and_thresh_before_writing(tmp_path):
    """Crops written into (or around) an input folder would be indexed as training images by the
    next run; a negative --thresh adds an edge crop equal to the last one."""
    data = _hr_folder(tmp_path / 'nest' / 'HR', [(64, 64)])
    (tmp_path / 'afile').write_text('x')
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*'))
    crop = ['--crop', '32', '--step', '32', '--workers', '0', '--no_progress']
    for args, match in (
            (['--data_dir', str(data), '--out', str(data.parent)], 'holds the --data_dir'),  # OUT/HR is it
            (['--data_dir', str(data.parent), '--out', str(data)], 'lies inside the --data_dir'),
            (['--data_dir', str(data), '--out', str(data)], 'is the --data_dir'),
            (['--data_dir', str(data), '--lr_dir', str(data.parent), '--out', str(data.parent / 'X4')],
             'lies inside the --lr_dir'),
            (['--data_dir', str(data), '--out', str(tmp_path / 'afile')], 'afile is a file, not a folder'),
            (['--data_dir', str(data), '--out', str(tmp_path / 'afile' / 'pp')], 'cannot be created'),
            (['--data_dir', str(data), '--out', str(tmp_path / 'pp'), '--thresh', '-1'],
             '--thresh must be at least 0, got -1')):
        user_error(prepare_main, args + crop, match)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*')) == before


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    """A corrupt file is left out of the index (warning at start-up); a truncated one whose
    header reads fine is skipped when drawn (warning naming it), and the draw that replaces
    it is the same whichever process found out."""
    data = _hr_folder(tmp_path / 'set', [(80, 96)] * 5)
    (data / 'zz_not_an_image.png').write_bytes(b'this is not a PNG file')
    ok, encoded = cv2.imencode('.png', _image(np.random.default_rng(9), 96, 96))
    (data / 'img_truncated.png').write_bytes(encoded.tobytes()[:len(encoded) // 2])
    pairs = find_training_pairs([str(data)], 4)
    with pytest.warns(UserWarning, match='zz_not_an_image.png'):
        train_set = TrainingSet(pairs, 4, 16, progress=False)
    assert len(train_set) == 6 and train_set.unreadable == [str(data / 'zz_not_an_image.png')]
    truncated = [os.path.basename(n) for n in train_set.names].index('img_truncated.png')

    steps = range(0, 8)
    with pytest.warns(UserWarning, match='img_truncated.png'):
        in_process = _batches(train_set, steps, 0, batch=8)
    assert truncated in train_set.bad
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        in_workers = _batches(TrainingSet(pairs, 4, 16, progress=False), steps, 2, batch=8)
    for (a_lr, a_hr), (b_lr, b_hr) in zip(in_process, in_workers):
        assert torch.equal(a_lr, b_lr) and torch.equal(a_hr, b_hr)

    only_bad = tmp_path / 'only_bad'
    only_bad.mkdir()
    (only_bad / 'a.png').write_bytes(encoded.tobytes()[:len(encoded) // 2])
    from models import RFDN
    from utils.engine.training import TrainConfig, Trainer
    cfg = TrainConfig(out_dir=str(tmp_path / 'out'), data_dirs=[str(only_bad)], batch_size=2,
                      patch_size=16, iters=2, val_every=0, workers=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(UserError) as raised:       # found in a worker, reported in one line
            Trainer(RFDN(nf=8, num_modules=1), cfg).fit()
    assert str(raised.value) == ('none of the 1 training images with an LR side of at least 16 '
                                 'pixels can be decoded')


def test_validation_set_reads_the_ntire_layout(tmp_path):
    root = tmp_path / 'data'
    _hr_folder(root / 'DIV2K_LSDIR_valid_HR', [(64, 64)])
    lr_dir = root / 'DIV2K_LSDIR_valid_LR'
    lr_dir.mkdir(parents=True)
    lr = np.full((16, 16, 3), 7, np.uint8)               # not the bicubic of the HR: must be read
    cv2.imwrite(str(lr_dir / 'img0x4.png'), lr)
    for path in (root, root / 'DIV2K_LSDIR_valid_HR'):
        val = validation_set(str(path), 4)
        assert len(val) == 1 and np.array_equal(val.items[0].load_lr(), lr), path
    other = _hr_folder(tmp_path / 'Set' / 'HR', [(64, 64)])
    hr = imread_rgb(other / 'img0.png')
    assert np.array_equal(validation_set(str(other), 4).items[0].load_lr(), imresize(hr, 0.25))
    with pytest.raises(UserError, match='not found'):
        validation_set(str(tmp_path / 'nope'), 4)

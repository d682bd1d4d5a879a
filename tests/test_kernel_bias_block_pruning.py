"""Kernel pruning (3×3 -> 1×1), bias pruning (AdvancedSR) and block pruning (CLB-IMDN).

The official checkpoints are read (never copied) from <shared>/pretrained.
"""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from models import IMDN, RFDN, RLFN, RLFN_NTIRE2022, load_model
from utils.compress.block_pruning import drop_blocks
from utils.compress.kernel_pruning import (
    bias_prune,
    centre_tap_share,
    eligible_convs,
    psnr_drop_table,
    replace_with_1x1,
)
from utils.data.eval_sets import folder_set
from utils.io.checkpoint import read_state_dict, save_state_dict
from utils.io.image_io import imwrite_rgb

ADVANCEDSR_1X1 = ['block_4.c2_r', 'conv_2', 'upsampler.0']


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def pretrained(shared_dir):
    path = os.path.join(shared_dir, 'pretrained')
    assert os.path.isdir(path), f'no pretrained folder in {shared_dir}'
    return path


def small_rlfn(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(feature_channels=12, mid_channels=10, esa_channels=4, num_blocks=2, upscale=2)
    cfg.update(kw)
    return RLFN(**cfg).eval()


def rand_input(model, h=16, w=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * model.input_range


def key_shapes(sd):
    return sorted((k, tuple(v.shape)) for k, v in sd.items())


# -- AdvancedSR: team00 -> team17 structure ------------------------------------------------

def test_team00_pruned_like_advancedsr_has_team17_layout(pretrained):
    model = load_model(os.path.join(pretrained, 'team00_rlfn.pth'))
    replace_with_1x1(model, ADVANCEDSR_1X1)
    removed = bias_prune(model)
    expected_removed = [f'block_{i}.{c}' for i in range(1, 5) for c in ('c1_r', 'c2_r', 'c3_r', 'c5')]
    assert sorted(removed) == sorted(expected_removed + ['conv_2', 'upsampler.0'])

    team17 = read_state_dict(os.path.join(pretrained, 'team17_AdvancedSR.pth'))
    assert key_shapes(model.state_dict()) == key_shapes(team17)
    model.load_state_dict(team17, strict=True)
    x = rand_input(model, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 64, 64)


# -- replace_with_1x1 ----------------------------------------------------------------------

def test_replace_with_1x1_shapes_and_centre_init():
    model = small_rlfn()
    old = model.block_1.c2_r.weight.detach().clone()
    x = rand_input(model)
    replace_with_1x1(model, ['block_1.c2_r', 'conv_2', 'upsampler.0'])
    conv = model.block_1.c2_r
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.bias is not None
    assert (conv.in_channels, conv.out_channels) == (10, 10)
    assert torch.equal(conv.weight[:, :, 0, 0], old[:, :, 1, 1])
    with torch.no_grad():
        assert model(x).shape == (1, 3, 32, 36)


def test_replace_with_1x1_exact_for_centre_only_kernel():
    model = small_rlfn(seed=1)
    with torch.no_grad():
        w = model.block_2.c1_r.weight
        centre = w[:, :, 1, 1].clone()
        w.zero_()
        w[:, :, 1, 1] = centre
        x = rand_input(model)
        before = model(x)
        replace_with_1x1(model, ['block_2.c1_r'])
        after = model(x)
    assert model.block_2.c1_r.kernel_size == (1, 1)
    assert (after - before).abs().max().item() < 1e-4


def test_replace_with_1x1_save_and_reload(tmp_path):
    model = replace_with_1x1(small_rlfn(seed=2), ['block_1.c1_r', 'upsampler.0'])
    path = str(tmp_path / 'kp.pth')
    save_state_dict(model.state_dict(), path)
    loaded = load_model(path)
    assert isinstance(loaded, RLFN) and loaded.block_1.c1_r.kernel_size == (1, 1)
    assert loaded.upsampler[0].kernel_size == (1, 1)
    x = rand_input(model)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-5)


def test_replace_with_1x1_rejects_strided_or_pointwise():
    model = small_rlfn()
    with pytest.raises(ValueError):
        replace_with_1x1(model, ['block_1.esa.conv2'])  # stride 2
    with pytest.raises(ValueError):
        replace_with_1x1(model, ['block_1.c5'])  # already 1×1
    with pytest.raises(KeyError):
        replace_with_1x1(model, ['block_1.act'])


# -- centre_tap_share ----------------------------------------------------------------------

def test_centre_tap_share_range_and_eligible_convs():
    model = small_rlfn(seed=3)
    images = [rand_input(model, 16, 16, seed=0), rand_input(model, 12, 20, seed=1)[0]]
    shares = centre_tap_share(model, images)
    expected = [f'block_{i}.{c}' for i in (1, 2) for c in ('c1_r', 'c2_r', 'c3_r')]
    expected += ['conv_2', 'upsampler.0']
    assert list(shares) == expected == eligible_convs(model)
    assert 'conv_1' not in shares and not any('esa' in n for n in shares)
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    assert all(0.0 < v < 1.0 for v in shares.values())  # random kernels: both parts respond


def test_centre_tap_share_is_one_for_centre_only_kernel():
    model = small_rlfn(seed=4)
    with torch.no_grad():
        w = model.block_1.c3_r.weight
        centre = w[:, :, 1, 1].clone()
        w.zero_()
        w[:, :, 1, 1] = centre
    shares = centre_tap_share(model, [rand_input(model, 16, 16)])
    assert shares['block_1.c3_r'] == 1.0
    assert shares['block_1.c2_r'] < 1.0


# -- bias_prune ----------------------------------------------------------------------------

def test_bias_prune_names_and_exact_when_biases_zero():
    model = small_rlfn(seed=5)
    removed_expected = [f'block_{i}.{c}' for i in (1, 2) for c in ('c1_r', 'c2_r', 'c3_r', 'c5')]
    removed_expected += ['conv_2', 'upsampler.0']
    with torch.no_grad():
        for name in removed_expected:
            dict(model.named_modules())[name].bias.zero_()
        x = rand_input(model)
        before = model(x)
        removed = bias_prune(model)
        after = model(x)
    assert removed == removed_expected
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name, conv in convs.items():
        assert (conv.bias is None) == (name in removed_expected), name
    assert convs['conv_1'].bias is not None
    assert all(convs[n].bias is not None for n in convs if '.esa.' in n)
    assert (after - before).abs().max().item() < 1e-4
    assert bias_prune(model) == []  # idempotent


def test_bias_prune_custom_keep():
    model = small_rlfn()
    removed = bias_prune(model, keep=('conv_1', 'block_*', 'upsampler.*'))
    assert removed == ['conv_2']


# -- psnr_drop_table -----------------------------------------------------------------------

def smooth_eval_set(folder, scale=4, count=2):
    """`count` smooth 64² colour images (HR; LR made by MATLAB bicubic) as an eval set."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(count):
        base = np.stack([np.sin(xx / (5 + i + c)) + np.cos(yy / (7 + c)) for c in range(3)], -1)
        img = (base - base.min()) / (base.max() - base.min()) * 200 + rng.uniform(0, 40, base.shape)
        imwrite_rgb(str(folder / f'img{i}.png'), img.clip(0, 255).astype(np.uint8))
    eval_set = folder_set(str(folder), None, scale)
    assert len(eval_set) == count
    return eval_set


def test_psnr_drop_table_runs_and_is_sorted(pretrained, tmp_path):
    eval_set = smooth_eval_set(tmp_path / 'HR')

    model = load_model(os.path.join(pretrained, 'team00_rlfn.pth'))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = psnr_drop_table(model, ['block_4.c2_r', 'block_1.c1_r'], eval_set)
    assert [r['name'] for r in rows] in (['block_4.c2_r', 'block_1.c1_r'],
                                         ['block_1.c1_r', 'block_4.c2_r'])
    assert all(set(r) == {'name', 'centre_share', 'psnr_y_drop'} for r in rows)
    drops = [r['psnr_y_drop'] for r in rows]
    assert drops == sorted(drops) and all(np.isfinite(drops))
    assert all(0.0 <= r['centre_share'] <= 1.0 for r in rows)
    # the model itself is left untouched (each conv is replaced in a copy)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# -- drop_blocks ---------------------------------------------------------------------------

def test_drop_blocks_imdn_official_8_to_7(pretrained):
    official = load_model(os.path.join(pretrained, 'imdn_baseline.pth'))
    sd = official.state_dict()
    pruned = drop_blocks(official, [8])
    assert isinstance(pruned, IMDN) and pruned.num_blocks == 7
    new = pruned.state_dict()
    assert not any(k.startswith('model.1.sub.8.') for k in new)
    for i in range(7):
        assert torch.equal(new[f'model.1.sub.{i}.conv1.0.weight'], sd[f'model.1.sub.{i}.conv1.0.weight'])
    assert torch.equal(new['model.1.sub.7.weight'], sd['model.1.sub.8.weight'])  # body conv moved
    assert torch.equal(new['model.2.weight'], sd['model.2.weight'])
    assert official.num_blocks == 8  # original untouched
    with torch.no_grad():
        assert pruned(torch.rand(1, 3, 10, 12)).shape == (1, 3, 40, 48)


def test_drop_blocks_imdn_middle_block():
    torch.manual_seed(0)
    model = IMDN(nc=12, nb=3, upscale=2).eval()
    sd = model.state_dict()
    new = drop_blocks(model, [2]).state_dict()
    assert torch.equal(new['model.1.sub.1.conv4.weight'], sd['model.1.sub.2.conv4.weight'])
    assert torch.equal(new['model.1.sub.2.weight'], sd['model.1.sub.3.weight'])


def test_drop_blocks_rfdn_fusion_conv_columns():
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=4, upscale=2).eval()
    sd = model.state_dict()
    pruned = drop_blocks(model, [2])
    assert isinstance(pruned, RFDN) and pruned.num_modules == 3
    assert pruned.c[0].in_channels == 3 * 8
    w, w_new = sd['c.0.weight'], pruned.state_dict()['c.0.weight']
    assert torch.equal(w_new, torch.cat([w[:, 0:8], w[:, 16:24], w[:, 24:32]], dim=1))
    assert torch.equal(pruned.B2.c1_r.weight, model.B3.c1_r.weight)
    assert torch.equal(pruned.B3.esa.conv4.weight, model.B4.esa.conv4.weight)
    with torch.no_grad():
        assert pruned(rand_input(pruned, 16, 16)).shape == (1, 3, 32, 32)


def test_drop_blocks_rlfn_both_layouts():
    model = small_rlfn(num_blocks=4)
    pruned = drop_blocks(model, [1, 2])
    assert isinstance(pruned, RLFN) and pruned.num_blocks == 2
    assert torch.equal(pruned.block_1.c1_r.weight, model.block_3.c1_r.weight)
    assert torch.equal(pruned.block_2.esa.conv3.bias, model.block_4.esa.conv3.bias)
    assert torch.equal(pruned.conv_2.weight, model.conv_2.weight)
    with torch.no_grad():
        assert pruned(rand_input(pruned)).shape == (1, 3, 32, 36)

    torch.manual_seed(0)
    old = RLFN_NTIRE2022(feature_channels=12, mid_channels=10, esa_channels=4, num_blocks=3,
                         upscale=2).eval()
    new = drop_blocks(old, [3])
    assert type(new) is RLFN_NTIRE2022 and new.num_blocks == 2
    assert torch.equal(new.B2.c2_r.weight, old.B2.c2_r.weight)


def test_drop_blocks_keeps_kernel_and_bias_pruned_convs():
    model = small_rlfn(num_blocks=3)
    replace_with_1x1(model, ['block_3.c2_r', 'conv_2'])
    bias_prune(model)
    pruned = drop_blocks(model, [1])
    assert pruned.block_2.c2_r.kernel_size == (1, 1) and pruned.block_2.c2_r.bias is None
    with torch.no_grad():
        x = rand_input(model)
        assert pruned(x).shape == model(x).shape


def test_block_drop_table_matches_drop_blocks(tmp_path):
    from utils.compress.block_pruning import block_drop_table
    from utils.engine.evaluate import evaluate
    eval_set = smooth_eval_set(tmp_path / 'HR', scale=2)
    torch.manual_seed(0)
    model = IMDN(nc=12, nb=3, upscale=2).eval()
    rows = block_drop_table(model, eval_set)
    assert sorted(r['block'] for r in rows) == [1, 2, 3]
    drops = [r['psnr_y_drop'] for r in rows]
    assert drops == sorted(drops)
    base = np.mean(evaluate(model, eval_set, progress=False, warmup=False)['psnr_y'])
    for r in rows:  # each row is what evaluating the model without that block gives
        alone = np.mean(evaluate(drop_blocks(model, [r['block']]), eval_set, progress=False,
                                 warmup=False)['psnr_y'])
        assert abs(r['psnr_y'] - alone) < 1e-9 and abs(r['psnr_y_drop'] - (base - alone)) < 1e-9
    assert model.num_blocks == 3  # untouched


def test_drop_blocks_errors():
    model = small_rlfn(num_blocks=3)
    for bad in ([0], [4], [-1], [1, 2, 3], [1.5], ['2']):
        with pytest.raises(ValueError):
            drop_blocks(model, bad)
    with pytest.raises(ValueError, match='out of range'):
        drop_blocks(model, [4])
    with pytest.raises(ValueError, match='all 3 blocks'):
        drop_blocks(model, [3, 1, 2])

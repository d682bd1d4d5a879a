"""Architectures, the checkpoint -> model builder and checkpoint I/O.

The official checkpoints are read (never copied) from <shared>/pretrained.
"""
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.serialization

import models
from models import IMDN, RFDN, RLFN, RLFN_NTIRE2022, load_model, model_from_state_dict
from models.blocks import apply_conv_overrides, conv_spec
from utils.io.checkpoint import read_state_dict, save_state_dict
from utils.io.errors import UserError

OFFICIAL = {
    'rfdn_baseline.pth': RFDN,
    'imdn_baseline.pth': IMDN,
    'team04_rlfn.pth': RLFN_NTIRE2022,
    'team00_rlfn.pth': RLFN,
    'team17_AdvancedSR.pth': RLFN,
}

# small instances of every family, by upscale factor
SMALL = {
    'RFDN': lambda s: RFDN(nf=20, num_modules=2, upscale=s),
    'IMDN': lambda s: IMDN(nc=20, nb=2, upscale=s),
    'RLFN': lambda s: RLFN(feature_channels=14, mid_channels=10, esa_channels=6,
                           num_blocks=2, upscale=s),
    'RLFN_NTIRE2022': lambda s: RLFN_NTIRE2022(feature_channels=14, mid_channels=10,
                                               esa_channels=6, num_blocks=2, upscale=s),
}


@pytest.fixture(scope='module')
def pretrained(shared_dir):
    path = os.path.join(shared_dir, 'pretrained')
    assert os.path.isdir(path), f'no pretrained folder in {shared_dir}'
    return path


def conv_specs(model: nn.Module) -> dict:
    return {n: conv_spec(m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def rand_input(model, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * model.input_range


def raises_one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and '\n' not in msg and '\r' not in msg, repr(msg)
    return msg


# ------------------------------------------------------------------ official checkpoints
@pytest.mark.parametrize('fname', sorted(OFFICIAL))
def test_official_checkpoint_loads(pretrained, fname):
    path = os.path.join(pretrained, fname)
    cls = OFFICIAL[fname]
    x = rand_input(cls, 20, 24)

    model = load_model(path)
    assert type(model) is cls  # exact class: RLFN_NTIRE2022 is a subclass of RLFN
    assert models.recognise(read_state_dict(path)) is cls
    assert not model.training and model.scale == 4
    assert all(p.device.type == 'cpu' for p in model.parameters())

    # the raw pattern of the NTIRE test scripts
    sd = torch.load(path, map_location='cpu', weights_only=True)
    raw = cls.from_state_dict(sd)
    result = raw.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    raw.eval()
    for k, v in raw.state_dict().items():
        assert torch.equal(v, sd[k]), k

    with torch.no_grad():
        y = model(x)
        y_raw = raw(x)
    assert y.shape == (1, 3, 80, 96)
    assert torch.isfinite(y).all()
    assert torch.equal(y, y_raw)


def test_advancedsr_structure_from_tensors(pretrained):
    """team17's pruned kernels and dropped biases are read back from the tensors alone."""
    model = load_model(os.path.join(pretrained, 'team17_AdvancedSR.pth'))
    assert type(model) is RLFN
    c2 = model.block_4.c2_r
    assert c2.kernel_size == (1, 1) and c2.padding == (0, 0) and c2.bias is None
    assert (c2.in_channels, c2.out_channels) == (48, 48)
    for i in range(1, 5):
        block = getattr(model, f'block_{i}')
        for name in ('c1_r', 'c2_r', 'c3_r', 'c5'):
            assert getattr(block, name).bias is None, f'block_{i}.{name}'
        assert block.esa.conv1.bias is not None  # ESA keeps its biases
    for i in (1, 2, 3):
        assert getattr(model, f'block_{i}').c2_r.kernel_size == (3, 3)
    assert model.conv_2.kernel_size == (1, 1) and model.conv_2.bias is None
    up = model.upsampler[0]
    assert up.kernel_size == (1, 1) and up.padding == (0, 0) and up.bias is None
    assert (up.in_channels, up.out_channels) == (46, 48)


# ------------------------------------------------------------------ GPU-saved checkpoints
def _storage_locations(path):
    locations = set()

    def record(storage, location):
        locations.add(location)
        return storage

    torch.load(path, map_location=record, weights_only=True)
    return locations


def test_gpu_saved_checkpoint_loads_on_cpu(pretrained):
    path = os.path.join(pretrained, 'team00_rlfn.pth')
    locations = _storage_locations(path)
    assert locations and all(loc.startswith('cuda') for loc in locations), locations
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(path, weights_only=True)  # what a script without map_location hits
    sd = read_state_dict(path)
    assert sd and all(v.device.type == 'cpu' for v in sd.values())
    model = load_model(path)
    assert type(model) is RLFN
    assert all(p.device.type == 'cpu' for p in model.parameters())


def test_simulated_cuda_checkpoint_loads_on_cpu(tmp_path):
    """A file whose storages are tagged 'cuda:0' (written by faking the location tag)."""
    path = str(tmp_path / 'cuda.pth')
    model = SMALL['RLFN'](2)
    with mock.patch.object(torch.serialization, 'location_tag', lambda storage: 'cuda:0'):
        torch.save(model.state_dict(), path)
    assert _storage_locations(path) == {'cuda:0'}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            torch.load(path, weights_only=True)
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_read_state_dict_maps_to_cpu_weights_only(monkeypatch, tmp_path):
    path = str(tmp_path / 'w.pth')
    save_state_dict({'a.weight': torch.ones(2, 2)}, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    read_state_dict(path)
    assert len(calls) == 1
    assert 'map_location' in calls[0]
    assert torch.device(calls[0]['map_location']).type == 'cpu'
    assert calls[0].get('weights_only') is True


# ------------------------------------------------------------------ save / rebuild round trips
@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('family', sorted(SMALL))
def test_round_trip_same_process(family, scale, tmp_path):
    torch.manual_seed(scale)
    model = SMALL[family](scale).eval()
    h, w = 17, 23  # odd sizes, above the ESA minimum
    x = rand_input(model, h, w, seed=scale)
    with torch.no_grad():
        ref = model(x)
    assert ref.shape == (1, 3, scale * h, scale * w)

    path = str(tmp_path / f'{family}_x{scale}.pth')
    save_state_dict(model.state_dict(), path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.scale == scale and not loaded.training
    assert conv_specs(loaded) == conv_specs(model)
    with torch.no_grad():
        out = loaded(x)
    assert out.shape == ref.shape
    assert torch.equal(out, ref) or torch.allclose(out, ref, rtol=1e-6, atol=1e-6)


IRREGULAR = {
    'block_1.c2_r': (48, 48, 1, False),
    'block_2.c1_r': (46, 31, 3, True),
    'block_2.c2_r': (31, 48, 3, True),
}

_FRESH_PROCESS = textwrap.dedent('''
    import json, sys
    import torch, torch.nn as nn
    from models import load_model
    from models.blocks import conv_spec
    ckpt, io_path = sys.argv[1], sys.argv[2]
    model = load_model(ckpt)
    io = torch.load(io_path, map_location='cpu', weights_only=True)
    with torch.no_grad():
        out = model(io['x'])
    print(json.dumps({
        'cls': type(model).__name__,
        'specs': {n: list(conv_spec(m)) for n, m in model.named_modules()
                  if isinstance(m, nn.Conv2d)},
        'equal': bool(torch.equal(out, io['y'])),
        'max_diff': float((out - io['y']).abs().max()),
    }))
''')


def test_irregular_widths_round_trip(tmp_path, repo_root):
    torch.manual_seed(0)
    model = RLFN()
    apply_conv_overrides(model, IRREGULAR)
    model.eval()
    specs = conv_specs(model)
    for name, spec in IRREGULAR.items():
        assert specs[name] == spec
    assert model.block_1.c2_r.padding == (0, 0)  # 1×1 keeps the spatial size
    x = rand_input(model, 16, 19)
    with torch.no_grad():
        ref = model(x)
    assert ref.shape == (1, 3, 64, 76)

    ckpt = str(tmp_path / 'pruned.pth')
    save_state_dict(model.state_dict(), ckpt)
    loaded = load_model(ckpt)
    assert type(loaded) is RLFN
    assert conv_specs(loaded) == specs
    with torch.no_grad():
        assert torch.equal(loaded(x), ref)

    # in a fresh interpreter: nothing but the tensors describes the widths
    io_path = str(tmp_path / 'io.pt')
    torch.save({'x': x, 'y': ref}, io_path)
    proc = subprocess.run([sys.executable, '-c', _FRESH_PROCESS, ckpt, io_path], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['cls'] == 'RLFN'
    assert {n: tuple(s) for n, s in result['specs'].items()} == specs
    assert result['equal'] or result['max_diff'] <= 1e-4, result['max_diff']


# ------------------------------------------------------------------ bad inputs -> UserError
def test_unknown_model_name(pretrained):
    for fn in (models.build_model, models.get_model_class):
        msg = raises_one_line(fn, 'NoSuchNet')
        assert 'NoSuchNet' in msg and 'RFDN' in msg  # lists the known names
    raises_one_line(load_model, os.path.join(pretrained, 'rfdn_baseline.pth'), name='NoSuchNet')
    assert models.get_model_class('rfdn') is RFDN  # case-insensitive
    assert type(models.build_model('imdn', nc=8, nb=1)) is IMDN


def test_wrong_forced_name(pretrained):
    msg = raises_one_line(load_model, os.path.join(pretrained, 'rfdn_baseline.pth'), name='IMDN')
    assert 'missing' in msg and 'IMDN' in msg and 'rfdn_baseline.pth' in msg


def test_wrong_shape_tensor(tmp_path):
    sd = SMALL['RFDN'](4).state_dict()
    bad = dict(sd)
    bad['B1.c1_d.bias'] = torch.zeros(7)
    path = str(tmp_path / 'bad.pth')
    save_state_dict(bad, path)
    msg = raises_one_line(load_model, path)
    assert 'shape mismatch' in msg and 'B1.c1_d.bias' in msg

    # a conv weight with other out-channels no longer fits its bias
    bad = dict(sd)
    bad['B2.c3_r.weight'] = torch.zeros(13, 20, 3, 3)
    msg = raises_one_line(model_from_state_dict, bad)
    assert 'shape mismatch' in msg and 'B2.c3_r' in msg

    # a weight that is not 4-D is reported under its own key
    bad = dict(sd)
    bad['B1.c5.weight'] = bad['B1.c5.weight'].flatten(1)
    msg = raises_one_line(model_from_state_dict, bad)
    assert 'shape mismatch' in msg and 'B1.c5.weight' in msg


def test_inconsistent_conv_input_width():
    """Widths are read conv by conv; ones that do not chain are caught at load time."""
    sd = dict(SMALL['RFDN'](4).state_dict())
    sd['B1.c5.weight'] = torch.zeros(20, 30, 1, 1)  # c5 gets 4·10 channels, not 30
    with pytest.raises(UserError) as exc:
        model_from_state_dict(sd)
    assert 'widths do not fit' in str(exc.value) and '\n' not in str(exc.value)


def test_unrecognisable_state_dict(tmp_path):
    sd = {'foo.weight': torch.zeros(3, 3)}
    msg = raises_one_line(model_from_state_dict, sd)
    assert 'recognise' in msg
    path = str(tmp_path / 'foo.pth')
    save_state_dict(sd, path)
    msg = raises_one_line(load_model, path)
    assert 'recognise' in msg and 'foo.pth' in msg


def test_not_a_torch_file(tmp_path):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(b'\x00\xffnot a checkpoint\n' * 64)
    msg = raises_one_line(load_model, str(path))
    assert 'garbage.pth' in msg


def test_missing_file(tmp_path):
    msg = raises_one_line(load_model, str(tmp_path / 'nope.pth'))
    assert 'not found' in msg and 'nope.pth' in msg


def test_no_tensors(tmp_path):
    path = str(tmp_path / 'empty.pth')
    torch.save({'epoch': 3}, path)
    raises_one_line(load_model, path)


def test_pickled_module_is_refused(tmp_path):
    path = str(tmp_path / 'module.pth')
    torch.save(SMALL['RLFN'](2), path)  # a whole nn.Module, not a state_dict
    msg = raises_one_line(load_model, path)
    assert 'module.pth' in msg


# ------------------------------------------------------------------ min input size
@pytest.mark.parametrize('family,expected', [('RFDN', 15), ('RLFN', 15),
                                             ('RLFN_NTIRE2022', 15), ('IMDN', 1)])
def test_min_input_size(family, expected):
    model = SMALL[family](2).eval()
    assert model.min_input_size == expected
    size = expected
    with torch.no_grad():
        assert model(rand_input(model, size, size)).shape == (1, 3, 2 * size, 2 * size)
        if expected > 1:  # the minimum is tight for ESA
            with pytest.raises(RuntimeError):
                model(rand_input(model, expected - 1, expected - 1))


def test_srfdb_cut_from_the_first_block():
    """--srfdb_init first_block: each SRFDB computes RFDN's B1 with its middle two distillation
    steps left out (d1 and the residual path after step 1 feed c4, c5 reads d1 and c4's output)."""
    import torch.nn.functional as F

    from models import RFDN, BranchRFDN
    torch.manual_seed(0)
    rfdn = RFDN(nf=16).eval()
    branch = BranchRFDN.from_rfdn(rfdn, srfdb_init='first_block').eval()
    b1 = rfdn.B1
    x = torch.rand(1, 16, 20, 20)
    with torch.no_grad():
        act = b1.act
        d1 = act(b1.c1_d(x))
        r1 = act(b1.c1_r(x) + x)
        r4 = act(b1.c4(r1))
        w = b1.c5.weight
        dc = b1.c1_d.out_channels
        fused = F.conv2d(torch.cat([d1, r4], 1), torch.cat([w[:, :dc], w[:, 3 * dc:]], 1), b1.c5.bias)
        expected = b1.esa(fused)
        for j in (1, 2, 3):
            assert torch.allclose(getattr(branch, f'S{j}')(x), expected, atol=1e-5)
    fresh = BranchRFDN.from_rfdn(rfdn)
    assert not torch.equal(fresh.S1.c1_d.weight, b1.c1_d.weight)
    with pytest.raises(ValueError, match='srfdb_init'):
        BranchRFDN.from_rfdn(rfdn, srfdb_init='last_block')


def test_sequential_branches_from_rfdn_to_the_branch_model():
    """Progressive branching: with every branch sequential the branch model is RFDN itself; with
    branch 4 detached only B4's input changes (to S3's output); with none it is the branch model."""
    from models import RFDN, BranchRFDN
    torch.manual_seed(0)
    rfdn = RFDN(nf=16).eval()
    branch = BranchRFDN.from_rfdn(rfdn, srfdb_init='first_block').eval()
    x = torch.rand(1, 3, 24, 24) * 255
    with torch.no_grad():
        parallel = branch(x)
        assert torch.equal(branch.set_sequential_branches([2, 3, 4])(x), rfdn(x))
        blocks = rfdn.block_outputs(x)
        h4 = branch.S3(branch.fea_conv3(x))
        out_b = rfdn.c(torch.cat(blocks[1:4] + [rfdn.B4(h4)], dim=1))
        expected = rfdn.upsampler(rfdn.LR_conv(out_b) + rfdn.fea_conv(x))
        branch.set_sequential_branches([3, 2])
        assert branch.sequential_branches == (2, 3)
        assert torch.allclose(branch(x), expected, atol=1e-3)
        assert not torch.allclose(branch(x), rfdn(x), atol=1e-1)
        assert torch.allclose(branch.branch_inputs(x)[3], h4)
        assert torch.equal(branch.set_sequential_branches([])(x), parallel)
    with pytest.raises(ValueError, match='numbered 2..4'):
        branch.set_sequential_branches([1])


def test_deeper_srfdbs_cut_from_the_first_block_merge_exactly():
    """srfdb_steps: a 3-step SRFDB cut from B1 is B1 itself; 2-step SRFDBs are recognised from
    their tensors and merge into one wide model with the same output."""
    from models import RFDN, BranchRFDN, ParallelRFDN, model_from_state_dict
    from utils.compress.reparam import branch_to_parallel, fold_parallel
    torch.manual_seed(0)
    rfdn = RFDN(nf=16).eval()
    x = torch.rand(1, 16, 20, 20)
    full = BranchRFDN.from_rfdn(rfdn, srfdb_init='first_block', srfdb_steps=3).eval()
    with torch.no_grad():
        assert torch.equal(full.S2(x), rfdn.B1(x))
    branch = BranchRFDN.from_rfdn(rfdn, srfdb_steps=2).eval()
    assert branch.S1.steps == 2 and 'S1.c2_d.weight' in branch.state_dict()
    again = model_from_state_dict(branch.state_dict())
    assert isinstance(again, BranchRFDN) and again.S3.steps == 2
    parallel = branch_to_parallel(branch)
    assert parallel.S.steps == 2
    reloaded = model_from_state_dict(parallel.state_dict())
    assert isinstance(reloaded, ParallelRFDN) and reloaded.S.steps == 2
    img = torch.rand(1, 3, 24, 24) * 255
    folded = fold_parallel(branch_to_parallel(branch, cat_as_conv=True, split_as_conv=True))
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(img), branch(img), atol=1e-3)
        assert torch.allclose(folded(img), branch(img), atol=1e-3)
    with pytest.raises(ValueError, match='srfdb_steps'):
        BranchRFDN.from_rfdn(rfdn, srfdb_steps=4)

"""Published entries in the evaluator (utils/engine/entries.py, test_demo.py --entry / --entry_list), and the
check that stops silent wrong scores (utils/engine/evaluate.py: check_output, preflight, evaluate's guard).

Look-alike checkpoints are built here for the purpose; images are small crops of real benchmark
images from <shared>/benchmark; the published entries are read from <shared>/ntire2024.
"""
import contextlib
import json
import os
import textwrap
import warnings

import cv2
import numpy as np
import pytest
import torch

import test_demo
from models import RFDN
from utils.data.eval_sets import EvalItem, EvalSet, bicubic_lr
from utils.engine.entries import (
    EntrySpec,
    cuda_calls_ignored,
    find_model_class,
    import_entry,
    load_entry,
    parse_entry_args,
    read_entry_list,
    read_entry_state,
)
from utils.engine.evaluate import BadOutputError, ScoreWarning, check_output, evaluate, preflight
from utils.engine.inference import super_resolve_tensor
from utils.io.checkpoint import read_state_dict, save_state_dict
from utils.io.errors import UserError
from utils.io.image_io import imread_rgb, tensor_to_uint8, uint8_to_tensor
from utils.metrics.psnr_ssim import calculate_psnr

CROP = 96  # HR side of the crops: LR 24×24, above ESA's 15-pixel minimum


# -- fixtures and builders ----------------------------------------------------------------------

def _crops(shared_dir, names=('baby', 'bird', 'butterfly')):
    """{name: CROP×CROP×3 uint8 HR}: centre crops of Set5 images."""
    out = {}
    for name in names:
        img = imread_rgb(os.path.join(shared_dir, 'benchmark', 'Set5', 'HR', f'{name}.png'))
        h, w = img.shape[:2]
        top, left = (h - CROP) // 2, (w - CROP) // 2
        out[name] = np.ascontiguousarray(img[top:top + CROP, left:left + CROP])
    return out


@pytest.fixture(scope='module')
def crop_set(shared_dir):
    """An in-memory EvalSet of three Set5 crops, LR by MATLAB bicubic."""
    items = [EvalItem(n, (lambda h=hr: bicubic_lr(h, 4)), (lambda h=hr: h))
             for n, hr in _crops(shared_dir).items()]
    return EvalSet('crops', 4, items)


@pytest.fixture()
def crop_dir(shared_dir, tmp_path):
    """The same crops as PNG files (for test_demo --hr_dir)."""
    folder = tmp_path / 'crops' / 'HR'
    folder.mkdir(parents=True)
    for name, hr in _crops(shared_dir).items():
        cv2.imwrite(str(folder / f'{name}.png'), hr[:, :, ::-1])
    return folder


@pytest.fixture(scope='module')
def rfdn_state(shared_dir):
    """The official RFDN (0–255) weights."""
    return read_state_dict(os.path.join(shared_dir, 'pretrained', 'rfdn_baseline.pth'))


def rfdn_from(state):
    model = RFDN()
    model.load_state_dict(state, strict=True)
    return model.eval()


def as_zero_one(state):
    """The same function for 0–1 input and output: first conv ×255, output conv ÷255 (RFDN layout)."""
    s = {k: v.clone() for k, v in state.items()}
    s['fea_conv.weight'] *= 255
    s['upsampler.0.weight'] /= 255
    s['upsampler.0.bias'] /= 255
    return s


MEAN = torch.tensor([0.4488, 0.4371, 0.4040]) * 255  # the DIV2K RGB mean (0–255)


def with_mean_shift(state):
    """Weights of an RFDN that subtracts the RGB mean from its input and adds it to its output
    (a layer without weights): in that architecture they compute what `state` does in RFDN,
    but for the zero padding of the first convolution, which now pads x - mean."""
    s = {k: v.clone() for k, v in state.items()}
    s['fea_conv.bias'] += (s['fea_conv.weight'] * MEAN.view(1, 3, 1, 1)).sum((1, 2, 3))
    scale2 = s['upsampler.0.bias'].numel() // 3
    s['upsampler.0.bias'] -= MEAN.repeat_interleave(scale2)
    return s


class MeanShiftRFDN(RFDN):
    """The architecture `with_mean_shift` weights belong to: RFDN between a mean shift and its inverse."""

    def forward(self, x):
        m = MEAN.view(1, 3, 1, 1).to(x)
        return super().forward(x - m) + m


def with_nan(state, key='B2.c1_d.weight'):
    s = {k: v.clone() for k, v in state.items()}
    s[key].view(-1)[0] = float('nan')
    return s


# A tiny RFDN (nf=8, one block) made by hand to be a working 0–255 model: bilinear ×4 upsampling
# whose red channel also passes through RFDN's leaky ReLUs below a threshold T, so that the
# model is not range-invariant (a network without non-linearities would score the same at any
# input range); fast enough for whole test_demo runs.
T, W = 300.0, 4.0


def _bilinear_taps(i):
    """Weights of LR rows y-1, y, y+1 for HR row 4y+i (×4, align_corners=False)."""
    d = (2 * i - 3) / 8
    return [-d, 1 + d, 0.0] if d < 0 else [0.0, 1 - d, d]


def tiny_rfdn_state(skip=False):
    """State of the hand-made tiny RFDN. `skip`: weights of an architecture that adds nearest
    upsampling of the input to the output (the upsampler then computes bilinear − nearest)."""
    model = RFDN(nf=8, num_modules=1, upscale=4)
    s = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for c in range(3):
        s['fea_conv.weight'][c, c, 1, 1] = 1.0
    # red channel: x - T (negative for 0–255 images) through c1_d, c5, ESA (mask 1), c and LR_conv
    s['fea_conv.weight'][3, 0, 1, 1] = 1.0
    s['fea_conv.bias'][3] = -T
    s['B1.c1_d.weight'][0, 3, 0, 0] = 1.0
    s['B1.c5.weight'][0, 0, 0, 0] = 1.0
    s['B1.esa.conv4.bias'][:] = 30.0
    s['c.0.weight'][0, 0, 0, 0] = 1.0
    s['LR_conv.weight'][0, 0, 1, 1] = W
    # both leaky ReLUs pass 0.05 each below the threshold: cancel W·0.0025·(x - T) in the red channel
    s['fea_conv.weight'][0, 0, 1, 1] = 1.0 - 0.0025 * W
    s['fea_conv.bias'][0] = 0.0025 * W * T
    for c in range(3):
        for i in range(4):
            for j in range(4):
                kernel = torch.outer(torch.tensor(_bilinear_taps(i)), torch.tensor(_bilinear_taps(j)))
                if skip:
                    kernel[1, 1] -= 1.0
                s['upsampler.0.weight'][c * 16 + i * 4 + j, c] = kernel
    return s


@pytest.fixture()
def grad_restored():
    """test_demo.main switches autograd off for the process; switch it back afterwards."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


def run_demo(tmp_path, *argv):
    """test_demo.main in-process; returns the results JSON."""
    out = tmp_path / 'res' / 'r.json'
    assert test_demo.main([*argv, '--results', str(out), '--no_save', '--device', 'cpu']) == 0
    return json.loads(out.read_text())


@contextlib.contextmanager
def no_score_warning():
    """Within the block a ScoreWarning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', ScoreWarning)
        yield


# -- entry files: class, arguments, weights, CUDA calls -----------------------------------------

PUBLISHED = {  # entry file -> model class of the official select_model
    'team00_RLFN.py': 'RLFN_Prune', 'team17_AdvancedSR.py': 'ASR_Prune', 'team38_SPAN.py': 'SPAN30',
    'team39_SPANtiny.py': 'SPAN30', 'team01_PFDNLITE.py': 'PFDN_Lite', 'team22_GFMN.py': 'GFMN',
    'team10_SMRN.py': 'SMRN', 'team21_SlimRLFN.py': 'SlimRLFN', 'team26_RDEN.py': 'RDEN',
    'team23_safmnpp.py': 'SAFMNPP',
}


def test_class_auto_detected_in_every_published_entry(shared_dir):
    for fname, cls in PUBLISHED.items():
        path = os.path.join(shared_dir, 'ntire2024', 'models', fname)
        assert find_model_class(import_entry(path), path).__name__ == cls, fname


def write_entry(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


TWO_MODELS = '''
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    def make_up(c, s):
        return nn.Sequential(nn.Conv2d(c, 3 * s * s, 3, padding=1), nn.PixelShuffle(s))

    class NetA(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.body, self.up = nn.Conv2d(3, 8, 3, padding=1), Block(8), make_up(8, 4)

        def forward(self, x):
            return self.up(self.body(self.head(x)))

    class NetB(NetA):
        pass

    class NetC(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.up = Block(3), make_up(3, 4)

        def forward(self, x):
            return self.up(self.body(x))
'''


def test_ambiguous_file_names_candidates_and_entry_class(tmp_path):
    # NetA is NetB's base, hence used; NetB and NetC both remain (and both upsample)
    path = write_entry(tmp_path, 'team99_Two.py', TWO_MODELS)
    module = import_entry(path)
    with pytest.raises(UserError) as err:
        find_model_class(module, path)
    msg = str(err.value)
    assert 'NetB, NetC' in msg and err.value.fields == ('class',) and 'NetA' not in msg and '\n' not in msg
    assert find_model_class(module, path, 'NetC').__name__ == 'NetC'
    with pytest.raises(UserError, match='no nn.Module class Nope'):
        find_model_class(module, path, 'Nope')


def test_rule_skips_unused_blocks_and_main_block(tmp_path):
    # an unused helper block (using another class, but never upsampling) and a __main__ harness
    source = (textwrap.dedent(TWO_MODELS).replace('class NetB(NetA):\n    pass', '')
              .replace('class NetC(nn.Module)', 'class Unused(nn.Module)')
              .replace('self.body, self.up = Block(3), make_up(3, 4)', 'self.body = Block(3)')
              .replace('return self.up(self.body(x))', 'return self.body(x)')
              + "\nif __name__ == '__main__':\n    print(NetA(), Unused())\n")
    assert 'NetB' not in source and 'Unused' in source
    path = write_entry(tmp_path, 'team98_Net.py', source)
    assert find_model_class(import_entry(path), path).__name__ == 'NetA'
    # two modules of the same file name in two folders do not collide
    other = tmp_path / 'other'
    other.mkdir()
    path2 = write_entry(other, 'team98_Net.py', TWO_MODELS)
    assert import_entry(path2).__name__ != import_entry(path).__name__


def test_entry_args_are_literals_only():
    assert parse_entry_args('3, 3, upscale=4, feature_channels=28') == ((3, 3), {'upscale': 4,
                                                                                'feature_channels': 28})
    assert parse_entry_args("dim=36, ffn_scale=1.5, depths=[2, 2], name='x', bias=False, act=None") == (
        (), {'dim': 36, 'ffn_scale': 1.5, 'depths': [2, 2], 'name': 'x', 'bias': False, 'act': None})
    assert parse_entry_args(None) == ((), {}) and parse_entry_args('  ') == ((), {})
    for bad in ("__import__('os').system('true')", 'x', '*a', '**k', '3, upscale=', 'f(1)', '1) + (2'):
        with pytest.raises(UserError, match='entry arguments'):
            parse_entry_args(bad)


TINY_ENTRY = '''
    import torch
    import torch.nn as nn

    class TinySR(nn.Module):
        """(N, 3, H, W) in 0–1 -> (N, 3, sH, sW)."""
        def __init__(self, num_in_ch, num_out_ch, feature_channels=48, upscale=4):
            super().__init__()
            self.head = nn.Conv2d(num_in_ch, feature_channels, 3, padding=1)
            self.tail = nn.Conv2d(feature_channels, num_out_ch * upscale ** 2, 3, padding=1)
            self.up = nn.PixelShuffle(upscale)
            self.cuda()                                # as published entries do
            self(torch.rand(1, 3, 8, 8).cuda())        # SPAN even runs a forward pass here

        def forward(self, x):
            return self.up(self.tail(self.head(x)))
'''


def tiny_entry_checkpoint(tmp_path, module, width=8, wrap=None, extra=None, bilinear=False):
    """A checkpoint for TINY_ENTRY: random weights, or (`bilinear`) bilinear ×4 upsampling."""
    torch.manual_seed(0)
    with cuda_calls_ignored():
        net = module.TinySR(3, 3, feature_channels=width, upscale=4)
    if bilinear:
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
            for c in range(3):
                net.head.weight[c, c, 1, 1] = 1.0
                for i in range(4):
                    for j in range(4):
                        net.tail.weight[c * 16 + i * 4 + j, c] = torch.outer(
                            torch.tensor(_bilinear_taps(i)), torch.tensor(_bilinear_taps(j)))
    state = dict(net.state_dict())
    if extra:
        state.update(extra)
    path = tmp_path / f'tiny_{width}.pth'
    torch.save(state if wrap is None else {k: state for k in wrap}, path)
    return str(path), net


def test_entry_calling_cuda_in_init_runs_on_cpu(tmp_path):
    path = write_entry(tmp_path, 'team97_Tiny.py', TINY_ENTRY)
    ckpt, net = tiny_entry_checkpoint(tmp_path, import_entry(path))
    logs = []
    spec = EntrySpec(path, ckpt, args='3, 3, feature_channels=8', data_range=1)
    model = load_entry(spec, 4, log=logs.append)
    assert logs == [] and model.model_name == 'TinySR' and model.input_range == 1.0 and model.scale == 4
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
    assert not any(p.requires_grad for p in model.parameters())
    if not torch.cuda.is_available():  # the no-op .cuda() is gone again
        with pytest.raises((AssertionError, RuntimeError)):
            torch.zeros(1).cuda()
        with cuda_calls_ignored():
            assert torch.zeros(1).cuda().device.type == 'cpu'


def test_entry_args_inferred_from_checkpoint_when_not_given(tmp_path):
    path = write_entry(tmp_path, 'team97_Tiny.py', TINY_ENTRY)
    ckpt, net = tiny_entry_checkpoint(tmp_path, import_entry(path), width=12)
    logs = []
    model = load_entry(EntrySpec(path, ckpt), 4, log=logs.append)
    assert model.net.head.out_channels == 12 and not model.range_declared
    assert logs == ['team97_Tiny: built as TinySR(num_in_ch=3, num_out_ch=3, feature_channels=12, upscale=4) '
                    '(no arguments given: channels 3, scale 4, feature_channels from head.weight)']
    # explicit arguments are taken as given: a wrong width is a one-line error naming the tensors
    with pytest.raises(UserError, match='do not fit TinySR.*head.weight'):
        load_entry(EntrySpec(path, ckpt, args='3, 3'), 4)
    with pytest.raises(UserError, match=r'cannot build TinySR\(3\)'):
        load_entry(EntrySpec(path, ckpt, args='3'), 4)
    # an entry whose output is not ×--scale is refused before any evaluation
    with pytest.raises(UserError, match='not ×2'):
        load_entry(EntrySpec(path, ckpt, args='3, 3, feature_channels=12'), 2)


def test_state_key_and_wrapped_checkpoints(tmp_path):
    path = write_entry(tmp_path, 'team97_Tiny.py', TINY_ENTRY)
    module = import_entry(path)
    ckpt, net = tiny_entry_checkpoint(tmp_path, module, wrap=['params'])
    logs = []
    load_entry(EntrySpec(path, ckpt, args='3, 3, feature_channels=8'), 4, log=logs.append)
    assert logs == ['team97_Tiny: weights read from the checkpoint\'s "params" entry']
    both, _ = tiny_entry_checkpoint(tmp_path, module, wrap=['params', 'params_ema'])
    with pytest.raises(UserError, match='both "params" and "params_ema"'):
        read_entry_state(both)
    state, used = read_entry_state(both, 'params_ema')
    assert used == 'params_ema' and set(state) == set(net.state_dict())
    with pytest.raises(UserError, match='no "params_x" weights.*params, params_ema'):
        read_entry_state(both, 'params_x')
    with pytest.raises(UserError, match='checkpoint not found'):
        read_entry_state(str(tmp_path / 'nope.pth'))


def test_strict_false_reported_nothing_matching_refused(tmp_path):
    path = write_entry(tmp_path, 'team97_Tiny.py', TINY_ENTRY)
    module = import_entry(path)
    spec_args = '3, 3, feature_channels=8'
    # one checkpoint tensor the class does not have, and one the class has but the checkpoint lacks
    ckpt, net = tiny_entry_checkpoint(tmp_path, module, extra={'aux.weight': torch.zeros(2)})
    state = torch.load(ckpt, weights_only=True)
    del state['tail.bias']
    torch.save(state, ckpt)
    logs = []
    model = load_entry(EntrySpec(path, ckpt, args=spec_args), 4, log=logs.append)
    assert logs == ['team97_Tiny: strict loading failed; loaded with strict=False: 1 missing, '
                    '1 unexpected keys (e.g. tail.bias, aux.weight)']
    assert torch.equal(model.net.head.weight, net.head.weight)
    torch.save({'other.weight': torch.zeros(3)}, ckpt)
    with pytest.raises(UserError, match='none of the checkpoint\'s 1 keys'):
        load_entry(EntrySpec(path, ckpt, args=spec_args), 4)


def test_published_span_loads_on_cpu_and_scores(shared_dir, crop_set, one_thread):
    # SPAN as published: .cuda() and a forward pass in __init__, arguments read from the checkpoint
    root = os.path.join(shared_dir, 'ntire2024')
    logs = []
    model = load_entry(EntrySpec(os.path.join(root, 'models', 'team38_SPAN.py'),
                                 os.path.join(root, 'model_zoo', 'team38_span_ch28_slim.pth'), data_range=1),
                       4, log=logs.append)
    assert 'feature_channels=28' in logs[0] and len(logs) == 1
    with no_score_warning():
        res = evaluate(model, crop_set, progress=False, warmup=False, label='SPAN')
    bicubic = [calculate_psnr(bicubic_up(it), it.load_hr(), 4, True) for it in crop_set.items]
    assert np.mean(res['psnr_y']) > np.mean(bicubic) + 0.5


def bicubic_up(item):
    from utils.io.matlab_functions import imresize
    return imresize(item.load_lr(), 4.0)


def test_shipped_entry_list_names_the_published_entries(shared_dir, monkeypatch):
    monkeypatch.setenv('ESR_SHARED', shared_dir)
    repo = os.path.dirname(os.path.abspath(test_demo.__file__))
    specs = read_entry_list(os.path.join(repo, 'options', 'ntire2024_entries.yaml'))
    assert len(specs) == 10 and len({s.name for s in specs}) == 10
    for spec in specs:
        assert os.path.isfile(spec.path) and os.path.isfile(spec.checkpoint), spec.name
        assert spec.data_range in (1.0, 255.0)
        assert spec.class_name == PUBLISHED[os.path.basename(spec.path)]


def test_entry_list_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('ESR_SHARED', str(tmp_path))
    bad = {
        'entries: []\n': 'non-empty list',
        'entries:\n  - entry: a.py\n': '"checkpoint" (a path) is required',
        'entries:\n  - {entry: a.py, checkpoint: a.pth, data_range: 2}\n': 'data_range must be 1 or 255',
        'entries:\n  - {entry: a.py, checkpoint: a.pth, data_range: true}\n': 'data_range must be 1 or 255',
        'entries:\n  - {entry: a.py, checkpoint: a.pth, klass: X}\n': 'unknown field(s) klass',
        'entries:\n  - {entry: a.py, checkpoint: a.pth}\n  - {entry: b/a.py, checkpoint: b.pth}\n':
            'used twice',
        'entries: [\n': 'not valid YAML',
    }
    for text, needle in bad.items():
        (tmp_path / 'l.yaml').write_text(text)
        with pytest.raises(UserError) as err:
            read_entry_list(str(tmp_path / 'l.yaml'))
        assert needle in str(err.value), (text, str(err.value))


# -- the check before a score: look-alike checkpoints on the official RFDN ---------------------

def scored(model, eval_set, **kw):
    return evaluate(model, eval_set, progress=False, warmup=False, **kw)


def test_correct_model_not_flagged_and_scores_unchanged(rfdn_state, crop_set, one_thread):
    model = rfdn_from(rfdn_state)
    with no_score_warning():
        guarded = scored(model, crop_set, label='rfdn')
        assert preflight(model, crop_set, log=pytest.fail) == {'warnings': [], 'note': None}
    unguarded = scored(model, crop_set, guard=False)
    assert guarded['psnr'] == unguarded['psnr'] and guarded['psnr_y'] == unguarded['psnr_y']
    assert guarded['warnings'] == [] and model.input_range == 255.0
    # the same numbers, computed here without the evaluator
    for item, p in zip(crop_set.items, guarded['psnr_y']):
        with torch.no_grad():
            sr = tensor_to_uint8(super_resolve_tensor(model, uint8_to_tensor(item.load_lr()), 4))
        assert p == calculate_psnr(sr, item.load_hr(), border=4, y_channel=True)


def test_zero_one_model_in_rfdn_layout_is_flagged(rfdn_state, crop_set, one_thread):
    base = scored(rfdn_from(rfdn_state), crop_set, guard=False)['psnr_y']
    model = rfdn_from(as_zero_one(rfdn_state))  # recognised as RFDN: fed 0–255
    with pytest.warns(ScoreWarning, match=r'far below bicubic.*looks like a 0–1 model: pass --data_range 1'):
        res = scored(model, crop_set, label='rescaled', range_option='--data_range')
    assert np.mean(res['psnr_y']) < np.mean(base) - 10          # the score stands, flagged
    assert res['warnings'][0].startswith('rescaled on crops/baby with input range 0–255: PSNR-Y ')
    # forced to 0–1 it scores as the model it is (identical function, float rounding aside)
    model.input_range = 1.0
    with no_score_warning():
        right = scored(model, crop_set)['psnr_y']
    assert np.allclose(right, base, atol=0.01)
    # preflight (test_demo, no --data_range) switches the range and says so
    model.input_range = 255.0
    notes = []
    with pytest.warns(ScoreWarning, match='looks like a 0–1 model'):
        checked = preflight(model, crop_set, label='rescaled', range_option='--data_range', log=notes.append)
    assert model.input_range == 1.0 and checked['warnings'] == [] and checked['note'] == notes[0]
    assert notes[0].startswith("rescaled: scoring with input range 0–1 instead of the RFDN family's 0–255")
    # with the range forced, nothing is switched: the warning stands
    model.input_range = 255.0
    with pytest.warns(ScoreWarning):
        checked = preflight(model, crop_set, range_forced=True, log=pytest.fail)
    assert model.input_range == 255.0 and len(checked['warnings']) == 1


def test_architecture_look_alike_is_flagged(rfdn_state, crop_set, one_thread):
    state = with_mean_shift(rfdn_state)
    true_model = MeanShiftRFDN()
    true_model.load_state_dict(state)
    with no_score_warning():  # in the architecture they were made for, the weights beat bicubic
        good = scored(true_model.eval(), crop_set)['psnr_y']
    bicubic = [calculate_psnr(bicubic_up(it), it.load_hr(), 4, True) for it in crop_set.items]
    assert all(g > b for g, b in zip(good, bicubic))  # (not equal to RFDN's: zero padding of x - mean)
    with pytest.warns(ScoreWarning, match='architecture differs from the recognised RFDN') as rec:
        scored(rfdn_from(state), crop_set, label='shifted')  # the registry accepts them as RFDN
    assert 'looks like' not in str(rec[0].message)


def test_nan_weight_is_an_error_naming_model_and_weight(rfdn_state, crop_set, one_thread):
    model = rfdn_from(with_nan(rfdn_state))
    with pytest.raises(BadOutputError,
                       match=r'^nan_rfdn on crops/baby .*NaN/Inf values.*B2\.c1_d\.weight: 1 value'):
        scored(model, crop_set, label='nan_rfdn')
    with pytest.raises(BadOutputError):  # mean_psnr_y (training validation, pruning) goes the same way
        from utils.engine.evaluate import mean_psnr_y
        mean_psnr_y(model, crop_set)


def test_check_without_hr_compares_with_bicubic(rfdn_state, crop_set):
    item = crop_set.items[1]
    lr = item.load_lr()
    for state, suspect in ((rfdn_state, False), (as_zero_one(rfdn_state), True)):
        model = rfdn_from(state)
        with torch.no_grad():
            y = super_resolve_tensor(model, uint8_to_tensor(lr), 4)
        check = check_output(model, y, lr, None, 4, 'm', 'crops/bird')
        assert check.suspect == suspect and check.bicubic_psnr_y is None
        assert check.other_range_right == suspect


# -- whole test_demo runs (in-process) with hand-made tiny models ------------------------------

def test_tiny_model_is_a_working_model(crop_set):
    """The hand-made tiny RFDN is close to bicubic at 0–255; rescaled to take 0–1 it is the same
    model at 0–1 and far below bicubic at 0–255 (its leaky ReLUs then leave their linear part)."""
    tiny = rfdn_from_tiny(tiny_rfdn_state())
    with no_score_warning():
        good = scored(tiny, crop_set)['psnr_y']
    bicubic = np.mean([calculate_psnr(bicubic_up(it), it.load_hr(), 4, True) for it in crop_set.items])
    assert abs(np.mean(good) - bicubic) < 2.0
    rescaled = rfdn_from_tiny(as_zero_one(tiny_rfdn_state()))
    with pytest.warns(ScoreWarning, match='looks like a 0–1 model'):
        assert np.mean(scored(rescaled, crop_set)['psnr_y']) < bicubic - 5
    rescaled.input_range = 1.0
    with no_score_warning():
        assert np.allclose(scored(rescaled, crop_set)['psnr_y'], good, atol=0.01)


def rfdn_from_tiny(state):
    model = RFDN(nf=8, num_modules=1, upscale=4)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture()
def tiny_checkpoints(tmp_path):
    """{name: path}: the tiny RFDN, and look-alikes of it in the RFDN layout."""
    base = tiny_rfdn_state()
    paths = {}
    for name, state in {'good': base, 'zero_one': as_zero_one(base), 'skip': tiny_rfdn_state(skip=True),
                        'nan': with_nan(base, 'B1.c2_r.weight')}.items():
        paths[name] = str(tmp_path / f'{name}.pth')
        save_state_dict(state, paths[name])
    return paths


def test_demo_zero_one_look_alike(tmp_path, crop_dir, tiny_checkpoints, grad_restored, one_thread):
    common = ['--hr_dir', str(crop_dir), '--no_bicubic']
    zero_one = tiny_checkpoints['zero_one']
    # (a) 0–1 weights in a 0–255 family's layout: flagged, scored with 0–1, said so
    with pytest.warns(ScoreWarning, match='looks like a 0–1 model: pass --data_range 1'):
        auto = run_demo(tmp_path, '--checkpoint', zero_one, *common)['zero_one']
    assert auto['input_range'] == 1.0 and 'instead of the RFDN family' in auto['input_range_note']
    assert 'warnings' not in auto  # the score that stands is the right one
    with no_score_warning():  # --data_range 1: forced, right, quiet
        forced = run_demo(tmp_path, '--checkpoint', zero_one, '--data_range', '1', *common)
    forced = forced['zero_one']
    assert forced['crops_psnr_y'] == auto['crops_psnr_y'] and 'input_range_note' not in forced
    with pytest.warns(ScoreWarning):  # --data_range 255 forced: scored as asked, flagged in the results
        wrong = run_demo(tmp_path, '--checkpoint', zero_one, '--data_range', '255', *common)
    wrong = wrong['zero_one']
    assert wrong['crops_ave_psnr_y'] < auto['crops_ave_psnr_y'] - 5 and wrong['input_range'] == 255.0
    assert 'looks like a 0–1' in wrong['warnings'][0]


def test_demo_correct_skip_and_nan(tmp_path, crop_dir, tiny_checkpoints, grad_restored, one_thread):
    common = ['--hr_dir', str(crop_dir), '--no_bicubic']
    # (d) a correct model and (b) an architecture with a layer the registry's RFDN lacks (a global
    # skip), in one run: the first is not flagged, the second is, the scores stand
    flagged = '^skip on crops/baby.*architecture differs from the recognised RFDN'
    with pytest.warns(ScoreWarning, match=flagged) as rec:
        res = run_demo(tmp_path, '--checkpoint', tiny_checkpoints['good'], tiny_checkpoints['skip'], *common)
    assert len(rec) == 1
    good, skip = res['good'], res['skip']
    assert 'warnings' not in good and 'input_range_note' not in good and good['input_range'] == 255.0
    assert skip['input_range'] == 255.0 and len(skip['warnings']) == 1
    assert skip['crops_ave_psnr_y'] < good['crops_ave_psnr_y'] - 10
    # (c) one NaN weight: an error before any result is written
    out = tmp_path / 'nan' / 'r.json'
    with pytest.raises(BadOutputError, match='nan on crops/baby'):
        test_demo.main(['--checkpoint', tiny_checkpoints['good'], tiny_checkpoints['nan'], *common,
                        '--results', str(out), '--no_save'])
    assert not out.parent.exists() or not list(out.parent.glob('r.*'))


@pytest.fixture()
def tiny_entry(tmp_path):
    """(entry file, bilinear checkpoint) of TINY_ENTRY."""
    path = write_entry(tmp_path, 'team97_Tiny.py', TINY_ENTRY)
    ckpt, _ = tiny_entry_checkpoint(tmp_path, import_entry(path), width=8, bilinear=True)
    return path, ckpt


def test_demo_entry(tmp_path, crop_dir, tiny_entry, grad_restored, one_thread):
    path, ckpt = tiny_entry
    with no_score_warning():
        res = run_demo(tmp_path, '--entry', path, '--checkpoint', ckpt, '--data_range', '1',
                       '--hr_dir', str(crop_dir), '--no_bicubic')
    assert list(res) == ['team97_Tiny']
    rec = res['team97_Tiny']
    assert rec['model'] == 'TinySR' and rec['input_range'] == 1.0
    for key in ('num_parameters', 'flops', 'flops_fvcore', 'activations', 'num_conv', 'crops_ave_psnr'):
        assert rec[key] is not None, key
    with cuda_calls_ignored():
        net = import_entry(path).TinySR(3, 3, 8)
    assert rec['num_parameters'] == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)
    # bad combinations: one line each, before any model runs
    for argv, needle in ((['--entry', path], 'exactly one --checkpoint'),
                         (['--entry', path, '--checkpoint', ckpt, ckpt], 'exactly one --checkpoint'),
                         (['--entry_args', '3', '--checkpoint', ckpt], 'give --entry too'),
                         (['--entry', path, '--checkpoint', ckpt, '--model', 'RFDN'], 'own class')):
        with pytest.raises(UserError, match=needle):
            test_demo.main([*argv, '--hr_dir', str(crop_dir), '--results', str(tmp_path / 'x.json')])


def test_demo_entry_list(tmp_path, crop_dir, tiny_entry, grad_restored, one_thread, monkeypatch):
    path, ckpt = tiny_entry
    good = str(tmp_path / 'good.pth')
    save_state_dict(tiny_rfdn_state(), good)
    # paths relative to $ESR_SHARED; the model zoo only when --model_zoo is given
    monkeypatch.setenv('ESR_SHARED', str(tmp_path))
    entry, weights = os.path.basename(path), os.path.basename(ckpt)
    (tmp_path / 'list.yaml').write_text(
        f'entries:\n  - {{label: tiny, entry: {entry}, checkpoint: {weights}, class: TinySR, '
        "args: '3, 3, feature_channels=8', data_range: 1}\n")
    monkeypatch.chdir(os.path.dirname(os.path.abspath(test_demo.__file__)))  # where model_zoo/ is
    listed = ['--entry_list', str(tmp_path / 'list.yaml'), '--hr_dir', str(crop_dir), '--no_bicubic']
    with no_score_warning():
        alone = run_demo(tmp_path, *listed)
        res = run_demo(tmp_path, *listed, '--checkpoint', good)
    assert list(alone) == ['tiny'] and list(res) == ['good', 'tiny']
    assert res['tiny']['crops_psnr_y'] == alone['tiny']['crops_psnr_y']
    # a linear model scores the same at either range: bilinear here, as the tiny RFDN
    assert res['tiny']['crops_psnr_y'] == pytest.approx(res['good']['crops_psnr_y'], abs=0.05)


def test_demo_names_the_options_that_fix_an_entry(tmp_path, crop_dir, tiny_entry, grad_restored, one_thread,
                                                   monkeypatch):
    """The entry loader's errors name no flag; test_demo.py adds the --entry option to check, or
    the field of the entry in --entry_list."""
    path, ckpt = tiny_entry
    two = write_entry(tmp_path, 'team99_Two.py', TWO_MODELS)
    common = ['--hr_dir', str(crop_dir), '--results', str(tmp_path / 'x.json'), '--no_bicubic']
    for argv, ending in (([two], 'defines several model classes (NetB, NetC); pass --entry_class NAME'),
                         ([path, '--entry_args', '3, upscale='], "(write them as in Python, e.g. "
                                                                 "'3, 3, upscale=4'); check --entry_args"),
                         ([path, '--entry_args', '3, 3'], '; pass --entry_class NAME or check --entry_args'),
                         ([path, '--entry_args', '3, 3, feature_channels=8', '--scale', '2'],
                          'not ×2; check --entry_args or check --scale')):
        with pytest.raises(UserError) as caught:
            test_demo.main(['--entry', *argv[:1], '--checkpoint', ckpt, *argv[1:], *common])
        assert str(caught.value).endswith(ending) and '\n' not in str(caught.value), str(caught.value)
    monkeypatch.setenv('ESR_SHARED', str(tmp_path))
    listed = tmp_path / 'list.yaml'
    listed.write_text(f'entries:\n  - {{label: two, entry: team99_Two.py, checkpoint: {os.path.basename(ckpt)}}}\n')
    with pytest.raises(UserError) as caught:
        test_demo.main(['--entry_list', str(listed), *common])
    assert str(caught.value).endswith(f'(NetB, NetC); check "class" of two in {listed}')
    assert '--entry_class' not in str(caught.value)


def test_entry_files_that_cannot_be_imported(tmp_path):
    with pytest.raises(UserError, match='entry file not found'):
        import_entry(str(tmp_path / 'nope.py'))
    # the packaging fault organizers meet: an entry importing a sibling module of its own repository
    path = write_entry(tmp_path, 'team96_Rel.py', 'from .prfdn import ParallelRFDN\n')
    with pytest.raises(UserError, match=r'cannot import entry .*ImportError.*only torch'):
        import_entry(path)
    # a file that ends the process while it is imported (sys.exit, or argparse on import)
    path = write_entry(tmp_path, 'team95_Exit.py', 'import sys\nsys.exit(3)\n')
    with pytest.raises(UserError, match=r'cannot import entry .*SystemExit: 3'):
        import_entry(path)


def test_a_failing_flop_counter_gives_none_not_a_crash(monkeypatch):
    import utils.engine.evaluate as ev

    def fails(model):
        raise RuntimeError('unsupported op aten::exotic')

    monkeypatch.setattr(ev, 'fvcore_flops', fails)
    logs = []
    rec = ev.complexity(RFDN(nf=8, num_modules=1), runtime_input=None, label='m', log=logs.append)
    assert rec['flops_fvcore'] is None and rec['flops'] > 0 and rec['num_conv'] > 0
    assert logs == ['m: FLOPs (fvcore) could not be counted (RuntimeError: unsupported op aten::exotic); '
                    'recorded as None']
    rec.update(valid_ave_psnr=30.0, valid_ave_psnr_y=31.0, valid_ave_runtime=1.0, valid_memory=0.0)
    results = {'m': rec}
    assert 'FLOPs(fvcore): -G' in ev.results_lines(results, ['valid'])[0]
    assert ' - ' in ev.results_table(results, ['valid']) and ' – ' in ev.results_markdown(results, ['valid'])

"""utils.metrics.model_summary: the NTIRE figures of the official checkpoints and small hand-made cases."""
import os
import time

import pytest
import torch
import torch.nn as nn
from refusals import user_error

import utils.metrics.model_summary as ms
from models import load_model

# Published figures on one 3×256×256 input (params in M, FLOPs in G, activations in M).
# 'flops' is the NTIRE 2022/2023 hook counter (every LeakyReLU call counts, conv bias does
# not): RFDN gives 27.1026 G, the published 27.10. 27.04 is sometimes quoted for RFDN: that is
# what fvcore/thop give (27.046 / 27.034: no activations counted), hence 'flops_fvcore'.
EXPECTED = {
    'rfdn_baseline.pth': dict(num_parameters=0.4334, flops=27.10, flops_fvcore=27.05,
                              activations=112.03, num_conv=64),
    'imdn_baseline.pth': dict(num_parameters=0.894, flops=58.53, flops_fvcore=58.43,
                              activations=154.14, num_conv=43),
    'team04_rlfn.pth': dict(num_parameters=0.317, flops=19.70, flops_fvcore=19.67,
                            activations=80.05, num_conv=39),
    'team00_rlfn.pth': dict(num_parameters=0.317, flops=19.70, flops_fvcore=19.67,
                            activations=80.05, num_conv=39),
    'team17_AdvancedSR.pth': dict(num_parameters=0.263, flops=16.22, flops_fvcore=16.20,
                                  activations=80.05, num_conv=39),
}
REL_TOL = 0.002  # ±0.2 %: the published figures are rounded


@pytest.fixture(scope='module')
def official_summary(shared_dir):
    """summarize() once per checkpoint (fvcore/thop traces take a second or more each)."""
    cache = {}

    def get(fname):
        if fname not in cache:
            model = load_model(os.path.join(shared_dir, 'pretrained', fname))
            cache[fname] = ms.summarize(model, (3, 256, 256), with_thop=True)
        return cache[fname]

    return get


@pytest.mark.slow
@pytest.mark.parametrize('fname', sorted(EXPECTED))
def test_official_figures(official_summary, fname):
    got = official_summary(fname)
    for key, want in EXPECTED[fname].items():
        if key == 'num_conv':
            assert got[key] == want, (key, got[key])
        else:
            assert got[key] == pytest.approx(want, rel=REL_TOL), (key, got[key], want)
    # thop is a third opinion: within 1 % of fvcore
    assert got['macs_thop'] == pytest.approx(got['flops_fvcore'], rel=0.01)


# ------------------------------------------------------------------ hand-computed cases
def test_single_conv():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert ms.ntire_flops(conv, (3, 16, 16)) == 3 * 3 * 3 * 8 * 16 * 16
    assert ms.fvcore_flops(conv, (3, 16, 16)) == 3 * 3 * 3 * 8 * 16 * 16
    assert ms.ntire_activations(conv, (3, 16, 16)) == (8 * 16 * 16, 1)
    assert ms.count_params(conv) == 3 * 8 * 9 + 8
    assert ms.count_convs(conv) == 1


def test_grouped_conv():
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
    assert ms.ntire_flops(conv, (4, 16, 16)) == 9 * 4 * (8 // 2) * 256
    assert ms.fvcore_flops(conv, (4, 16, 16)) == 9 * 4 * (8 // 2) * 256


def test_bias_not_counted():
    with_bias = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    without = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert ms.ntire_flops(with_bias, (3, 16, 16)) == ms.ntire_flops(without, (3, 16, 16))


class SharedAct(nn.Module):
    """conv -> act -> conv -> the same act module again."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x))))


def test_shared_activation_counts_every_call():
    model = SharedAct()
    conv1 = 9 * 3 * 8 * 256
    conv2 = 1 * 8 * 8 * 256
    assert ms.ntire_flops(model, (3, 16, 16)) == conv1 + conv2 + 2 * 8 * 256
    assert ms.ntire_activations(model, (3, 16, 16)) == (2 * 8 * 256, 2)


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_activations_count_conv_calls():
    model = SharedConv()
    assert ms.count_convs(model) == 1
    assert ms.ntire_activations(model, (4, 8, 8)) == (2 * 4 * 64, 2)
    assert ms.ntire_flops(model, (4, 8, 8)) == 2 * 9 * 4 * 4 * 64


# ------------------------------------------------------------------ longest conv path
class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))

    def forward(self, x):
        return self.a(x) + self.b(x)


class ReadsValues(nn.Module):
    """A forward that reads a value (as some published entries do): the meta device cannot run it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.act(self.conv(x))
        return y * 2 if float(y.mean()) > -1 else y


def test_a_forward_the_meta_device_cannot_run_is_counted_for_real():
    model = ReadsValues()
    assert ms.ntire_flops(model, (3, 16, 16), shapes_only=True) == 27 * 8 * 256 + 8 * 256
    assert ms.ntire_activations(model, (3, 16, 16), shapes_only=True) == (8 * 256, 1)


def _every_family(repo_root, shared_dir):
    """(label, model): each shipped checkpoint and official baseline, the training and pruning
    forms (branch model, parallel model with and without its concatenations and splits as
    convs, CLB-IMDN) and the ten published NTIRE 2024 entries as test_demo.py loads them."""
    import glob

    from models import RFDN, BranchRFDN
    from models.clb_imdn import CLBIMDN
    from utils.compress.reparam import branch_to_parallel
    from utils.engine.entries import load_entry, read_entry_list
    torch.manual_seed(0)
    cases = [(os.path.basename(p), load_model(p)) for p in
             sorted(glob.glob(os.path.join(repo_root, 'model_zoo', 'team01_*.pth')))
             + [os.path.join(shared_dir, 'pretrained', f) for f in sorted(EXPECTED)]]
    branch = BranchRFDN.from_rfdn(RFDN(nf=16, num_modules=4))
    cases += [('BranchRFDN', branch), ('ParallelRFDN', branch_to_parallel(branch)),
              ('ParallelRFDN, convs', branch_to_parallel(branch, cat_as_conv=True, split_as_conv=True)),
              ('CLBIMDN', CLBIMDN(nc=16, nb=2))]
    for spec in read_entry_list(os.path.join(repo_root, 'options', 'ntire2024_entries.yaml')):
        cases.append((spec.name, load_entry(spec, 4, log=lambda *a: None)))
    return cases


@pytest.mark.slow
def test_shape_only_counts_equal_real_counts(repo_root, shared_dir, monkeypatch, one_thread):
    """FLOPs and activations counted on the meta device equal those of a real forward, to the
    unit, for every model family and published entry; none of them needs the real forward."""
    monkeypatch.setenv('ESR_SHARED', shared_dir)
    for label, model in _every_family(repo_root, shared_dir):
        model.eval()
        real = ms.ntire_flops(model, (3, 64, 64)), ms.ntire_activations(model, (3, 64, 64))
        with monkeypatch.context() as m:
            m.setattr(ms, 'dummy_input', lambda *a, label=label: pytest.fail(f'{label}: counted for real'))
            meta = ms.ntire_flops(model, (3, 64, 64), shapes_only=True), \
                ms.ntire_activations(model, (3, 64, 64), shapes_only=True)
        assert meta == real and real[0] > 0, (label, meta, real)


def test_committed_leaderboard_counts_are_what_the_counters_give(repo_root, shared_dir):
    """docs/leaderboard_x4.json (the README leaderboard) holds, for RFDN and every shipped
    checkpoint, the params, hook FLOPs, activations and #conv the counters give the files as they
    are now: a re-shipped model needs a new leaderboard run."""
    import json
    with open(os.path.join(repo_root, 'docs', 'leaderboard_x4.json')) as f:
        board = json.load(f)
    from models.zoo import MODEL_ZOO
    paths = {'rfdn_baseline': os.path.join(shared_dir, 'pretrained', 'rfdn_baseline.pth')}
    for _, files in MODEL_ZOO.values():
        if files[0].startswith('team01_'):                  # this repository's entries
            paths[files[0][:-4]] = os.path.join(repo_root, 'model_zoo', files[0])
    assert len(paths) == 6, sorted(paths)
    for name, path in paths.items():
        model = load_model(path).eval()
        flops, acts, convs = ms.ntire_counts(model, shapes_only=True)
        rec = board[name]
        assert rec['num_parameters'] == pytest.approx(ms.count_params(model) / 1e6, rel=1e-9), name
        assert rec['flops'] == pytest.approx(flops / 1e9, rel=1e-9), name
        assert rec['activations'] == pytest.approx(acts / 1e6, rel=1e-9), name
        assert rec['num_conv'] == convs, name


def test_longest_conv_path_small():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 3, 1))
    assert ms.longest_conv_path(seq, (3, 16, 16)) == 3
    assert ms.longest_conv_path(TwoBranches(), (3, 16, 16)) == 2


def test_longest_conv_path_rfdn(shared_dir):
    model = load_model(os.path.join(shared_dir, 'pretrained', 'rfdn_baseline.pth'))
    depth = ms.longest_conv_path(model)
    # fea_conv + 4 RFDBs × (c1_r, c2_r, c3_r, c4, c5 + ESA conv1, conv2, conv_max, conv3,
    # conv3_, conv4) + c.0, LR_conv, upsampler = 1 + 4·11 + 3 = 48
    assert 40 < depth < 70
    assert depth == 48


# ------------------------------------------------------------------ runtime and memory
def test_measure_runtime():
    model = nn.Conv2d(3, 8, 3, padding=1).eval()
    result = ms.measure_runtime(model, torch.rand(1, 3, 32, 32), warmup=1, repeats=4)
    assert result['median_ms'] > 0
    assert len(result['times_ms']) == 4
    assert result['min_ms'] <= result['median_ms'] and result['mean_ms'] > 0


def test_timed_call_returns_the_result_and_its_time():
    x = torch.rand(1, 3, 8, 8)
    out, ms_taken = ms.timed_call(torch.flip, x, (2,))
    assert torch.equal(out, torch.flip(x, (2,))) and ms_taken > 0
    ms.sync('cpu')  # nothing queued on a CPU: returns at once


def test_measure_runtime_fp16_refuses_a_cpu_input():
    """fp16 times a float16 copy on CUDA; on a CPU input it refuses rather than timing the slow
    half-precision fallback (a half model on a half input is timed as it is, fp16 False)."""
    model = nn.Conv2d(3, 8, 3, padding=1).eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match='fp16 timing needs a CUDA input'):
        ms.measure_runtime(model, x, warmup=1, repeats=1, fp16=True)
    with pytest.raises(ValueError, match='fp16 timing needs a CUDA input'):
        ms.interleaved_runtime({'m': model}, x, rounds=1, repeats=1, fp16=True)
    assert model.weight.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the fp16 path runs on CUDA')
def test_measure_runtime_fp16_times_a_half_copy_on_cuda():
    seen = []
    model = nn.Conv2d(3, 8, 3, padding=1).cuda().eval()
    model.register_forward_pre_hook(lambda m, inputs: seen.append((inputs[0].dtype, m.weight.dtype)))
    result = ms.measure_runtime(model, torch.rand(1, 3, 16, 16, device='cuda'), warmup=1, repeats=2, fp16=True)
    assert seen == [(torch.float16, torch.float16)] * 3 and len(result['times_ms']) == 2
    assert model.weight.dtype == torch.float32  # the caller's model is not converted


def test_peak_memory_cpu():
    with ms.PeakMemory('cpu') as idle:
        pass
    assert idle.peak_mb >= 0

    with ms.PeakMemory('cpu') as busy:
        t = torch.ones(50 * 1024 * 1024)  # 200 MB, pages touched
        time.sleep(0.05)
        del t  # freed before exit: the sampler must have seen the peak
    assert busy.peak_mb > 150, busy.peak_mb


def test_interleaved_runtime_times_every_model_in_turns(tmp_path):
    from models import RFDN
    from utils.io.checkpoint import save_state_dict
    from utils.io.errors import UserError
    from utils.metrics.model_summary import interleaved_runtime, main
    torch.manual_seed(0)
    small, big = RFDN(nf=8, num_modules=1).eval(), RFDN(nf=16, num_modules=2).eval()
    res = interleaved_runtime({'small': small, 'big': big}, torch.rand(1, 3, 24, 24) * 255,
                              rounds=3, repeats=2)
    assert set(res) == {'small', 'big'}
    assert all(len(r['times_ms']) == 6 and r['min_ms'] <= r['median_ms'] for r in res.values())
    path = tmp_path / 'small.pth'
    save_state_dict(small.state_dict(), str(path))
    assert main([str(path), '--rounds', '1', '--repeats', '1', '--size', '20']) == 0
    with pytest.raises(UserError):
        main([str(path), '--rounds', '0'])


def test_runtime_cli_refuses_bad_sizes_and_devices(tmp_path, monkeypatch):
    """An input smaller than the model takes, a device name torch does not know, CUDA on a machine
    without it: one-line UserError naming the option, before any timing."""
    from models import RFDN
    from utils.io.checkpoint import save_state_dict
    from utils.io.errors import UserError
    from utils.metrics.model_summary import main
    path = tmp_path / 'small.pth'
    save_state_dict(RFDN(nf=8, num_modules=1).state_dict(), str(path))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    cases = [(['--size', '8'], r'--size \(for small\) must be at least 15, got 8'),
             (['--device', 'foo'], '--device foo is not a device'),
             (['--device', 'meta'], '--device meta: this project runs on cpu or cuda only'),
             (['--device', 'cuda'], '--device cuda asked for, but no CUDA device is available'),
             (['--device', 'cuda:1'], '--device cuda:1 asked for, but no CUDA device is available')]
    for options, message in cases:
        user_error(main, [path, '--rounds', '1', '--repeats', '1', *options], message)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    with pytest.raises(UserError, match='--device cuda:1: there are only 1 CUDA devices'):
        main([str(path), '--device', 'cuda:1'])

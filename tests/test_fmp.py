"""FMP-style joint channel + weight pruning (utils/compress/fmp.py): budgets, shares, masks, CLI."""
import json

import pytest
import torch
import torch.nn as nn

from models import RFDN, SRModel, load_model
from utils.compress.fmp import CRITERIA, apply_masks, fmp_prune, masks_from_zeros, sparse_size, table_line
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError
from utils.metrics.model_summary import count_params, ntire_flops

pytestmark = pytest.mark.usefixtures('one_thread')


def small_rfdn():
    torch.manual_seed(0)
    return RFDN(nf=16, num_modules=2).eval()


def calib_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 96, 96, generator=g)


_RESULTS = {}


def pruned(criterion):
    if criterion not in _RESULTS:
        model = small_rfdn()
        original = count_params(model)
        model, masks, report = fmp_prune(model, 'params', 0.6, criterion, calib_batch=calib_batch())
        _RESULTS[criterion] = (original, model, masks, report)
    return _RESULTS[criterion]


@pytest.mark.parametrize('criterion', CRITERIA)
def test_criteria_reach_the_params_budget(criterion):
    original, model, masks, report = pruned(criterion)
    value = sparse_size(model, masks, 'params')
    assert abs(value - 0.6 * original) <= 0.02 * 0.6 * original, (criterion, value / original)
    assert report['within_tolerance']
    assert report['total_ratio'] == pytest.approx(100 * value / original)
    # the shares attribute the whole reduction
    assert report['total_ratio'] + report['channel_prune_ratio'] + report['weight_prune_ratio'] \
        == pytest.approx(100.0, abs=1e-6)
    # masks are applied, and recoverable from the zeros of the weights
    assert sparse_size(model, None, 'params') == pytest.approx(value)
    assert all(torch.equal(masks[n], m) for n, m in masks_from_zeros(model).items())
    print(table_line(report))
    ch, w = report['channel_prune_ratio'], report['weight_prune_ratio']
    if criterion == 'channel':
        assert w == 0 and ch > 0
    elif criterion == 'weight':
        assert ch == 0 and w > 0
        assert count_params(model) == original                # no channel removed
    else:
        assert ch > 0 and w > 0
    with torch.no_grad():
        assert model(torch.rand(1, 3, 20, 20) * 255).shape == (1, 3, 80, 80)


def test_sparse_flops_of_a_half_masked_conv():
    torch.manual_seed(0)

    class One(SRModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.upsampler = nn.Sequential(nn.Conv2d(8, 3, 1))

        def fixed_output_layers(self):
            return [self.upsampler[0]]                                  # never masked

        def forward(self, x):
            return self.upsampler(self.conv(x))

    m = One()
    mask = torch.zeros(m.conv.weight.numel(), dtype=torch.bool)
    mask[torch.randperm(mask.numel())[:mask.numel() // 2]] = True
    masks = {'conv': mask.view_as(m.conv.weight)}
    apply_masks(m, masks)
    h = w = 256
    dense_conv = 3 * 3 * 3 * 8 * h * w
    out_conv = 1 * 1 * 8 * 3 * h * w
    assert ntire_flops(m) == dense_conv + out_conv
    assert sparse_size(m, masks, 'flops') == dense_conv / 2 + out_conv
    assert sparse_size(m, masks, 'params') == count_params(m) - 3 * 3 * 3 * 8 // 2
    assert sparse_size(m, None, 'flops') == dense_conv / 2 + out_conv      # from the zeros


def test_bad_arguments():
    for kwargs, needle in (({'target': 1.0}, '(0, 1)'), ({'target': 0.0}, '(0, 1)'),
                           ({'criterion': 'magic'}, 'criterion'), ({'metric': 'latency'}, 'metric')):
        with pytest.raises(UserError) as err:
            fmp_prune(small_rfdn(), **kwargs)
        assert needle in str(err.value)


def _image_folder(root, n=2, size=96):
    import cv2
    import numpy as np
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(root / f'{i}.png'), img)
    return root


def test_masks_survive_finetuning(tmp_path):
    from utils.engine.training import TrainConfig, Trainer
    data = _image_folder(tmp_path / 'train' / 'HR')
    calls = []

    def finetune(model, post_step):
        cfg = TrainConfig(out_dir=str(tmp_path / 'ft'), data_dirs=[str(data)], scale=4, iters=3,
                          batch_size=2, patch_size=16, workers=0, val_every=0, progress=False,
                          lr=1e-2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        Trainer(model, cfg, post_step=post_step).fit()
        calls.append(any(not torch.equal(before[k], v) for k, v in model.state_dict().items()))

    model, masks, report = fmp_prune(small_rfdn(), 'params', 0.6, 'total_fixed',
                                     finetune=finetune, calib_batch=calib_batch())
    assert calls == [True]                                      # it trained
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        w = modules[name].weight
        assert torch.all(w[~mask] == 0), name                   # masked weights exactly zero
    assert report['within_tolerance']
    # a plain dense checkpoint that load_model reads, zeros included
    path = tmp_path / 'p.pth'
    save_state_dict(model.state_dict(), str(path))
    again = load_model(str(path))
    assert sparse_size(again, None, 'params') == pytest.approx(report['final'])


@pytest.mark.slow
def test_prune_cli_fmp(script_in_process, tmp_path):
    src = tmp_path / 'rfdn.pth'
    save_state_dict(small_rfdn().state_dict(), str(src))
    out = tmp_path / 'run'
    common = ['--mode', 'fmp', '--input', str(src), '--finetune_iters', '0', '--val_hr_dir', 'none']
    r = script_in_process('prune', *common, '--out_dir', str(out), '--fmp_metric', 'params', '--fmp_target', '0.6',
                          '--fmp_criterion', 'total_fixed')
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith('FMP ')]
    assert len(line) == 1 and 'total ratio' in line[0] and 'weight prune ratio' in line[0], r.stdout
    report = json.loads((out / 'fmp_report.json').read_text())
    assert abs(report['total_ratio'] - 60.0) <= 1.2 and report['steps']
    model = load_model(str(out / 'pruned.pth'))
    assert sparse_size(model, None, 'params') == pytest.approx(report['final'])
    import prune  # refusals in-process; tests/test_bad_input.py checks a real run's exit code
    for extra, needle in ((['--fmp_target', '0.6', '--fmp_criterion', 'magic'], '--fmp_criterion'),
                          (['--fmp_target', '1.5'], 'must be in (0, 1)'),
                          (['--fmp_target', '0'], 'must be in (0, 1)'),
                          (['--fmp_target', '0.6', '--fmp_metric', 'latency'], '--fmp_metric')):
        with pytest.raises(UserError) as caught:
            prune.main([*common, '--out_dir', str(tmp_path / 'bad'), *extra])
        assert needle in str(caught.value) and '\n' not in str(caught.value), str(caught.value)
        assert not (tmp_path / 'bad' / 'pruned.pth').exists()

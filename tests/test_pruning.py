"""Channel pruning (Torch-Pruning): exactness, budgets, every family, bad input."""
import json
import subprocess
import sys

import pytest
import torch

from models import IMDN, RFDN, RLFN, BranchRFDN, load_model, model_from_state_dict
from utils.compress.prune_loop import finetune_ramp, iterative_prune, progressive_kernel_prune
from utils.compress.pruning import (
    channel_groups,
    example_input,
    prepare_for_pruning,
    prune_step,
    prune_to_budget,
    schedule_ratios,
    size_of,
    zero_group_channels,
)
from utils.compress.reparam import branch_to_parallel
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def small_models():
    torch.manual_seed(0)
    branch = BranchRFDN.from_rfdn(RFDN(nf=16, num_modules=4))
    return {
        'RFDN': RFDN(nf=16, num_modules=2),
        'IMDN': IMDN(nc=16, nb=2),
        'RLFN': RLFN(feature_channels=16, mid_channels=12, esa_channels=8, num_blocks=2),
        'ParallelRFDN': branch_to_parallel(branch),
        'ParallelRFDN-catconv': branch_to_parallel(branch, cat_as_conv=True, split_as_conv=True),
        'ParallelRFDN-srfdb2': branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=16, num_modules=4), srfdb_steps=2),
                                                  cat_as_conv=True, split_as_conv=True),
    }


@pytest.mark.parametrize('name', list(small_models()))
def test_zeroed_channels_are_pruned_exactly(name):
    """Zero 25% of the channels of every prunable group; L1 pruning at 25% must remove
    exactly those, leaving the output unchanged (1e-4, model range)."""
    model = prepare_for_pruning(small_models()[name]).eval()
    x = example_input(model, 24)
    dg, groups = channel_groups(model)
    g = torch.Generator().manual_seed(1)
    for group in groups:
        n = len(group[0][1])
        k = int(n * 0.25)
        if k == 0:
            continue
        idxs = torch.randperm(n, generator=g)[:k].tolist()
        root = group[0][0].target.module
        sub = dg.get_pruning_group(root, group[0][0].handler, idxs)
        zero_group_channels(sub)
    with torch.no_grad():
        before = model(x)
    n_before = sum(p.numel() for p in model.parameters())
    prune_step(model, 0.25, 'l1')
    with torch.no_grad():
        after = model(x)
    assert sum(p.numel() for p in model.parameters()) < 0.8 * n_before
    assert after.shape == before.shape
    assert (after - before).abs().max() < 1e-4 * model.input_range
    rebuilt = model_from_state_dict(model.state_dict())           # widths from the tensors
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), after, atol=1e-5 * model.input_range)


@pytest.mark.parametrize('name', ['RFDN', 'IMDN', 'RLFN', 'ParallelRFDN'])
@pytest.mark.parametrize('scale', [2, 3])
def test_shape_and_scale_preserved(name, scale):
    model = {'RFDN': lambda: RFDN(nf=12, num_modules=2, upscale=scale),
             'IMDN': lambda: IMDN(nc=12, nb=1, upscale=scale),
             'RLFN': lambda: RLFN(feature_channels=12, mid_channels=8, esa_channels=4,
                                  num_blocks=1, upscale=scale),
             'ParallelRFDN': lambda: branch_to_parallel(
                 BranchRFDN.from_rfdn(RFDN(nf=12, upscale=scale)))}[name]().eval()
    model = prepare_for_pruning(model)
    prune_step(model, 0.5, 'l2')
    out = model(example_input(model, 17))
    # 3 output channels at s× the size: the conv before the pixel shuffle kept its 3·s² channels
    assert out.shape == (1, 3, 17 * scale, 17 * scale)


@pytest.mark.parametrize('metric,fraction', [('params', 0.5), ('flops', 0.3)])
def test_budget_lands_within_two_percent(metric, fraction):
    model = prepare_for_pruning(small_models()['ParallelRFDN']).eval()
    target = fraction * size_of(model, metric)
    pruned, value = prune_to_budget(model, metric, target, 'l1')
    assert abs(value - target) <= 0.02 * target, (value, target)
    assert size_of(pruned, metric) == value


@pytest.mark.slow
def test_budget_schedule_is_geometric_and_lands_on_the_target(tmp_path):
    # prune.py --target_flops: step k aims at start * (target / start) ** (k / steps)
    model = small_models()['ParallelRFDN-catconv'].eval()
    start = size_of(prepare_for_pruning(model), 'flops')
    target = 0.3 * start
    _, rows = iterative_prune(model, out_dir=str(tmp_path), steps=3, budget=('flops', target),
                              importance='l1', progress=lambda *a: None, timing=False)
    assert [r['step'] for r in rows] == [0, 1, 2, 3]
    for r in rows[1:]:
        goal = start * (target / start) ** (r['step'] / 3)
        assert abs(r['flops_G'] * 1e9 - goal) <= 0.02 * goal, (r['step'], r['flops_G'], goal / 1e9)
    assert (tmp_path / 'step_03.pth').exists()
    assert all('cpu_ms_256' not in r for r in rows)      # timing=False: no runtime in the log
    with pytest.raises(UserError, match='latency'):
        iterative_prune(model, out_dir=str(tmp_path / 'latency'), steps=2, budget=('latency_ms', 1.0),
                        progress=lambda *a: None, timing=False)


@pytest.mark.slow
def test_a_step_whose_goal_is_already_passed_only_finetunes(tmp_path, monkeypatch):
    # coarse channel groups can make step k land below step k + 1's goal; that step must not
    # stop the run but fine-tune without pruning
    import utils.compress.prune_loop as prune_loop
    real = prune_loop.prune_to_budget
    calls = []

    def overshooting(model, metric, goal, *args, **kwargs):
        calls.append(goal)
        return real(model, metric, goal * (0.6 if len(calls) == 1 else 1.0), *args, **kwargs)

    monkeypatch.setattr(prune_loop, 'prune_to_budget', overshooting)
    model = small_models()['ParallelRFDN-catconv'].eval()
    start = size_of(prepare_for_pruning(model), 'flops')
    target = 0.3 * start
    tuned = []
    _, rows = iterative_prune(model, out_dir=str(tmp_path), steps=4, budget=('flops', target),
                              importance='l1', finetune=lambda m: tuned.append(1),
                              progress=lambda *a: None, timing=False)
    goals = [start * 0.3 ** (k / 4) for k in (1, 2, 3, 4)]
    assert rows[1]['flops_G'] * 1e9 < goals[1]           # step 1 passed step 2's goal
    assert rows[2]['ratio'] == 0.0 and rows[2]['flops_G'] == rows[1]['flops_G']
    assert len(calls) == 3 and len(tuned) == 4           # steps 1, 3, 4 pruned; all four fine-tuned
    assert abs(rows[-1]['flops_G'] * 1e9 - target) <= 0.02 * target


def test_finetune_ramp_keeps_the_total_and_reaches_the_ends():
    ramp = finetune_ramp(20, 100, 16)
    assert ramp[0] == 20 and ramp[-1] == 100 and sum(ramp) == 16 * 60
    assert all(b >= a for a, b in zip(ramp, ramp[1:]))
    assert finetune_ramp(30, 30, 4) == [30] * 4 and finetune_ramp(10, 50, 1) == [50]


def test_each_pruning_step_gets_its_own_finetuning_length(tmp_path):
    model = small_models()['ParallelRFDN-catconv'].eval()
    asked = []

    def finetune(m, iters=None):
        asked.append(iters)

    _, rows = iterative_prune(model, out_dir=str(tmp_path), steps=3, ratio=0.5, importance='l1',
                              finetune=finetune, progress=lambda *a: None, finetune_iters=[4, 6, 8],
                              timing=False)
    assert asked == [4, 6, 8] and [r['finetune_iters'] for r in rows[1:]] == [4, 6, 8]
    with pytest.raises(ValueError, match='2 fine-tuning lengths for 3 steps'):
        iterative_prune(model, out_dir=str(tmp_path / 'b'), steps=3, ratio=0.5, finetune=finetune,
                        finetune_iters=[4, 6])


def test_schedule_is_the_seeds():
    r = schedule_ratios(0.9, 16)
    kept = 1.0
    for x in r:
        kept *= 1 - x
    assert len(r) == 16 and kept == pytest.approx(0.1)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(UserError):
            schedule_ratios(bad, 4)


@pytest.mark.slow
def test_prune_cli_steps_log_and_bad_input(repo_root, tmp_path):
    torch.manual_seed(0)
    src = tmp_path / 'par.pth'
    save_state_dict(branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=12))).state_dict(), str(src))
    out = tmp_path / 'run'
    import prune
    assert prune.main(['--input', str(src), '--out_dir', str(out), '--steps', '3', '--ratio', '0.6',
                       '--finetune_iters', '0', '--val_hr_dir', 'none']) == 0
    rows = (out / 'prune_log.csv').read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and (out / 'step_03.pth').exists()
    log = json.loads((out / 'prune_log.json').read_text())
    assert all(row['cpu_ms_256'] > 0 for row in log)      # every step timed (no --no_timing)
    # the result rebuilds in a fresh process
    chk = subprocess.run([sys.executable, '-c', 'import sys; from models import load_model; '
                          f'm = load_model(r"{out / "pruned.pth"}"); print(type(m).__name__)'],
                         cwd=repo_root, capture_output=True, text=True)
    assert chk.stdout.strip() == 'ParallelRFDN', chk.stderr
    bad = [(['--ratio', '1.5'], 'must be in (0, 1)'),
           (['--ratio', '0'], 'must be in (0, 1)'),
           (['--target_params', '99999999'], 'not below the current'),
           (['--importance', 'magic'], 'unknown importance'),
           (['--sensitivity'], 'is for --mode kernel or --mode block'),
           (['--target_latency_ms', '50', '--no_timing'], 'drop --no_timing')]
    import prune
    for extra, needle in bad:   # in-process; tests/test_bad_input.py checks a real run's exit code
        with pytest.raises(UserError) as caught:
            prune.main(['--input', str(src), '--out_dir', str(tmp_path / 'bad'), '--finetune_iters', '0',
                        '--val_hr_dir', 'none', *extra])
        assert needle in str(caught.value) and '\n' not in str(caught.value)
        assert not (tmp_path / 'bad' / 'step_01.pth').exists()


@pytest.mark.slow
def test_resume_keeps_completed_steps(script_in_process, tmp_path):
    torch.manual_seed(0)
    src = tmp_path / 'rfdn.pth'
    save_state_dict(RFDN(nf=12, num_modules=2).state_dict(), str(src))
    out = tmp_path / 'run'
    common = ['--input', str(src), '--out_dir', str(out), '--steps', '3', '--ratio', '0.5',
              '--finetune_iters', '0', '--val_hr_dir', 'none', '--no_timing']
    r = script_in_process('prune', *common)
    assert r.returncode == 0, r.stderr
    full = torch.load(out / 'step_03.pth', weights_only=True)
    (out / 'step_03.pth').unlink()                      # as if killed during step 3
    r = script_in_process('prune', *common, '--resume')
    assert r.returncode == 0 and 'resumed after step 2' in r.stdout, r.stderr
    again = torch.load(out / 'step_03.pth', weights_only=True)
    assert all(torch.equal(full[k], again[k]) for k in full)


@pytest.mark.slow
def test_kernel_bias_block_modes_cli(script_in_process, tmp_path):
    """prune.py --mode kernel / bias / block write checkpoints the builder rebuilds."""
    import cv2
    import numpy as np
    val = tmp_path / 'val' / 'HR'
    val.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(val / 'a.png'), cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 2))
    torch.manual_seed(0)
    rlfn = tmp_path / 'rlfn.pth'
    save_state_dict(RLFN(feature_channels=12, mid_channels=10, esa_channels=4, num_blocks=2).state_dict(),
                    str(rlfn))
    common = ['--finetune_iters', '0', '--val_hr_dir', str(val), '--no_timing']
    r = script_in_process('prune', '--mode', 'kernel', '--input', str(rlfn), '--kernel_prune', '2',
                          '--out_dir', str(tmp_path / 'kp'), *common)
    assert r.returncode == 0, r.stderr
    kp = load_model(str(tmp_path / 'kp' / 'pruned.pth'))
    assert sum(m.kernel_size == (1, 1) and 'esa' not in n and n.endswith(('_r', 'conv_2', '0'))
               for n, m in kp.named_modules() if isinstance(m, torch.nn.Conv2d)) >= 2
    log = json.loads((tmp_path / 'kp' / 'prune_log.json').read_text())
    assert len(log) == 3 and all('cpu_ms_256' not in row and 'psnr_y' in row for row in log)
    with pytest.raises(UserError, match='latency target needs the runtime'):
        progressive_kernel_prune(kp, out_dir=str(tmp_path / 'kp_latency'), target_latency_ms=5.0,
                                 val_set=object(), timing=False)
    r = script_in_process('prune', '--mode', 'bias', '--input', str(tmp_path / 'kp' / 'pruned.pth'),
                          '--out_dir', str(tmp_path / 'bp'), *common)
    assert r.returncode == 0, r.stderr
    bp = load_model(str(tmp_path / 'bp' / 'pruned.pth'))
    assert bp.block_1.c1_r.bias is None and bp.conv_1.bias is not None
    assert bp.block_1.esa.conv1.bias is not None
    imdn = tmp_path / 'imdn.pth'
    save_state_dict(IMDN(nc=8, nb=3).state_dict(), str(imdn))
    r = script_in_process('prune', '--mode', 'bias', '--input', str(imdn), '--out_dir', str(tmp_path / 'ibp'),
                          *common)
    assert r.returncode == 0, r.stderr      # the model's first conv keeps its bias, whatever its name
    ibp = load_model(str(tmp_path / 'ibp' / 'pruned.pth'))
    assert ibp.model[0].bias is not None and ibp.model[-2].bias is None
    r = script_in_process('prune', '--mode', 'block', '--input', str(imdn), '--drop_blocks', '3',
                          '--out_dir', str(tmp_path / 'blk'), *common)
    assert r.returncode == 0, r.stderr
    assert load_model(str(tmp_path / 'blk' / 'pruned.pth')).num_blocks == 2
    import prune
    with pytest.raises(UserError):          # IMDN(nb=3) has no block 9
        prune.main(['--mode', 'block', '--input', str(imdn), '--drop_blocks', '9',
                    '--out_dir', str(tmp_path / 'blk2'), *common])
    assert not (tmp_path / 'blk2' / 'pruned.pth').exists()


@pytest.mark.parametrize('importance', ['l2', 'taylor', 'group_norm'])
def test_importances_and_round_to(importance):
    torch.manual_seed(0)
    model = RFDN(nf=16, num_modules=2).eval()
    batch = (torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64))
    prune_step(model, 0.5, importance, round_to=4, grad_batch=batch)
    widths = [m.out_channels for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d) and not n.startswith('upsampler')]
    assert all(w % 4 == 0 for w in widths), widths
    assert model(example_input(model, 16)).shape == (1, 3, 64, 64)
    assert all(p.grad is None for p in model.parameters())   # Taylor's gradients cleaned up


@pytest.mark.slow
def test_taylor_without_finetuning_cli(script_in_process, tmp_path):
    """Taylor importance needs training batches even when no fine-tuning runs."""
    import cv2
    import numpy as np
    data = tmp_path / 'data'
    data.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(data / 'a.png'), cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), (5, 5), 2))
    torch.manual_seed(0)
    src = tmp_path / 'rfdn.pth'
    save_state_dict(RFDN(nf=12, num_modules=2).state_dict(), str(src))
    r = script_in_process('prune', '--input', src, '--out_dir', tmp_path / 'run', '--steps', '1', '--ratio', '0.5',
                          '--importance', 'taylor', '--finetune_iters', '0', '--data_dir', data,
                          '--patch_size', '16', '--batch_size', '2', '--val_hr_dir', 'none')
    assert r.returncode == 0, r.stderr
    assert load_model(str(tmp_path / 'run' / 'pruned.pth')).B1.c1_d.out_channels == 3

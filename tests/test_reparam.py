"""Exactness of the branch merge (Eq. 1), cat/split as 1×1 convs, and fold."""
import itertools

import pytest
import torch
import torch.nn as nn

from models import RFDN, BranchRFDN, ParallelRFDN, model_from_state_dict
from utils.compress.reparam import branch_to_parallel, fold_parallel, merge_block_diagonal
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError


def random_branch(nf, scale, n=4, seed=0):
    torch.manual_seed(seed)
    model = BranchRFDN.from_rfdn(RFDN(nf=nf, num_modules=n, upscale=scale))
    with torch.no_grad():  # every tensor different, so a wrong block placement shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_block_diagonal_equals_separate_convs():
    torch.manual_seed(0)
    convs = [nn.Conv2d(ci, co, 3, padding=1) for ci, co in ((3, 5), (4, 2), (7, 7))]
    w, b = merge_block_diagonal(convs)
    xs = [torch.randn(1, c.in_channels, 9, 11) for c in convs]
    merged = torch.nn.functional.conv2d(torch.cat(xs, 1), w, b, padding=1)
    separate = torch.cat([c(x) for c, x in zip(convs, xs)], 1)
    assert torch.allclose(merged, separate, atol=1e-5)
    assert torch.count_nonzero(w[:5, 3:]) == 0  # explicit zero blocks off the diagonal


@pytest.mark.parametrize('nf,scale', [(10, 2), (13, 3), (8, 4)])
@pytest.mark.parametrize('grouped,cat_as_conv,split_as_conv',
                         [c for c in itertools.product([False, True], repeat=3)])
def test_merge_is_exact(nf, scale, grouped, cat_as_conv, split_as_conv):
    branch = random_branch(nf, scale)
    par = branch_to_parallel(branch, grouped, cat_as_conv, split_as_conv)
    x = torch.rand(1, 3, 19, 23) * 255
    with torch.no_grad():
        ref = branch(x)
        assert (par(x) - ref).abs().max() < 1e-3
        rebuilt = model_from_state_dict(par.state_dict())        # widths from the tensors
        assert isinstance(rebuilt, ParallelRFDN)
        assert (rebuilt(x) - ref).abs().max() < 1e-3
        if not grouped:
            folded = fold_parallel(par)
            names = [n for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)]
            assert not any('cat_conv' in n or 'split' in n for n in names)
            assert (folded(x) - ref).abs().max() < 1e-3


def test_grouped_has_n_times_fewer_block_flops():
    from utils.metrics.model_summary import ntire_flops
    branch = random_branch(8, 4)
    dense, grouped = branch_to_parallel(branch), branch_to_parallel(branch, grouped=True)
    f_branch = ntire_flops(branch, (3, 32, 32))
    assert ntire_flops(grouped, (3, 32, 32)) == pytest.approx(f_branch, rel=1e-6)
    assert ntire_flops(dense, (3, 32, 32)) > 2.5 * f_branch


def test_fold_after_pruning_like_edit():
    """Fold is exact for any 1×1 linear map, e.g. after channels were pruned away."""
    par = branch_to_parallel(random_branch(8, 4), cat_as_conv=True, split_as_conv=True)
    x = torch.rand(1, 3, 20, 20) * 255
    with torch.no_grad():
        par.split_s.weight.mul_(torch.rand_like(par.split_s.weight) + 0.5)
        par.B.cat_conv.weight.add_(0.01 * torch.randn_like(par.B.cat_conv.weight))
        assert (fold_parallel(par)(x) - par(x)).abs().max() < 1e-3


@pytest.mark.slow
def test_reparam_cli_and_refusals(script_in_process, tmp_path):
    branch = random_branch(8, 4)
    src = tmp_path / 'branch.pth'
    save_state_dict(branch.state_dict(), str(src))
    out = tmp_path / 'par.pth'
    r = script_in_process('reparam', '--input', str(src), '--output', str(out), '--cat-as-conv', '--no_runtime')
    assert r.returncode == 0, r.stderr
    assert 'max |Δ|' in r.stdout and 'serial convs' in r.stdout
    assert 'butterflyx4.png' in r.stdout.splitlines()[-2]      # a real image checked, by default
    folded = tmp_path / 'folded.pth'
    r = script_in_process('reparam', '--mode', 'fold', '--input', str(out), '--output', str(folded), '--no_runtime')
    assert r.returncode == 0, r.stderr
    assert 'cat_conv' not in ''.join(torch.load(folded, weights_only=True))
    # not mergeable: a plain RFDN, and branches of different widths
    rfdn = tmp_path / 'rfdn.pth'
    save_state_dict(RFDN(nf=8).state_dict(), str(rfdn))
    bad_out = tmp_path / 'never.pth'
    # in-process (tests/test_bad_input.py checks a real run's exit code and one-line message)
    import reparam
    with pytest.raises(UserError, match='not a BranchRFDN'):
        reparam.main(['--input', str(rfdn), '--output', str(bad_out)])
    from models.blocks import apply_conv_overrides
    odd = random_branch(8, 4)
    apply_conv_overrides(odd, {'S2.c1_d': (8, 3, 1, True), 'S2.c5': (7, 8, 1, True)})
    odd_path = tmp_path / 'odd.pth'
    save_state_dict(odd.state_dict(), str(odd_path))
    with pytest.raises(UserError, match='not mergeable') as caught:
        reparam.main(['--input', str(odd_path), '--output', str(bad_out)])
    assert 'differ in width' in str(caught.value) and '\n' not in str(caught.value)
    with pytest.raises(UserError, match='--fold: for --mode merge only, not --mode fold'):
        reparam.main(['--mode', 'fold', '--fold', '--input', str(out), '--output', str(bad_out)])
    with pytest.raises(UserError, match='--image .*: no such file'):
        reparam.main(['--input', str(src), '--output', str(bad_out), '--image', str(tmp_path / 'no.png')])
    assert not bad_out.exists()


@pytest.mark.slow
def test_collapse_cli(script_in_process, tmp_path):
    from models import CLBIMDN, IMDN
    torch.manual_seed(0)
    clb = CLBIMDN(nc=12, nb=2, upscale=3)
    with torch.no_grad():
        for n, p in clb.named_parameters():
            if 'conv1x1' in n:
                p.add_(torch.randn_like(p) * 0.1)   # non-zero 1×1 branches
    src, out = tmp_path / 'clb.pth', tmp_path / 'imdn.pth'
    save_state_dict(clb.state_dict(), str(src))
    r = script_in_process('reparam', '--mode', 'collapse', '--input', str(src), '--output', str(out), '--no_runtime')
    assert r.returncode == 0, r.stderr
    plain = IMDN(nc=12, nb=2, upscale=3)
    plain.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (plain(x) - clb.eval()(x)).abs().max() < 1e-4
    import reparam
    with pytest.raises(UserError):          # a plain IMDN has nothing to collapse
        reparam.main(['--mode', 'collapse', '--input', str(out), '--output', str(tmp_path / 'x.pth')])
    assert not (tmp_path / 'x.pth').exists()

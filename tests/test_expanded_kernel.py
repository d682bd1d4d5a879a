"""Over-parametrized kernels for training (models/expanded_kernel.py) and train.py --expand_kernels:
the expanded model starts as the model it was built from, its kernel is the linear chain it
claims to be, and what a run writes for inference is the plain model computing its function."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from synthetic_images import write_smooth_images

import train
from models import RFDN, ParallelRFDN, load_model
from models.expanded_kernel import ExpandedKernel, expand_conv_kernels, plain_state_dict
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def randomise_reduce(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Give every B of `model` (zero at the start) random weights, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ExpandedKernel):
                m.reduce.copy_(torch.randn(m.reduce.shape, generator=g) * std)


@pytest.mark.parametrize('stride,padding,k', [(1, 1, 3), (2, 0, 3), (1, 0, 1), (1, 2, 5)])
def test_the_kernel_is_the_linear_chain_it_stands_for(stride, padding, k):
    """conv2d(x, W + B·M·A) == conv(x, W) + B(M(A(x))), with A and B 1×1 convs, M k×k: the
    three-conv chain of the expanded training form, for any stride and zero padding."""
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, k, stride=stride, padding=padding)
    x = torch.randn(2, 5, 13, 11)
    with torch.no_grad():
        plain = conv(x)
    expand_conv_kernels(conv, 3)
    kernel = conv.parametrizations.weight[0]
    randomise_reduce(conv)
    a, m, b = kernel.expand, kernel.spatial, kernel.reduce
    assert (a.shape, m.shape, b.shape) == ((15, 5), (21, 15, k, k), (7, 21))
    with torch.no_grad():
        chain = F.conv2d(F.conv2d(F.conv2d(x, a[:, :, None, None]), m, stride=stride, padding=padding),
                         b[:, :, None, None])
        expanded = conv(x)
    assert max_diff(expanded, plain + chain) < 1e-5
    assert max_diff(expanded, plain) > 1e-2  # the chain is not a no-op once B moved


def test_expanded_rfdn_starts_as_rfdn_and_collapses_to_its_keys():
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=2).eval()
    reference = RFDN(nf=8, num_modules=2).eval()
    reference.load_state_dict(model.state_dict())
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert expand_conv_kernels(model, 2) == n_convs  # ESA's strided and pooled convs too
    assert expand_conv_kernels(model, 2) == 0         # expanding twice changes nothing
    x = torch.rand(1, 3, 24, 20) * 255
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))   # B = 0: exactly the model it was built from
    randomise_reduce(model)
    state = plain_state_dict(model)
    assert list(state) == list(reference.state_dict())
    plain = RFDN(nf=8, num_modules=2).eval()
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(x)
        assert max_diff(plain(x), out) < 1e-3             # 0–255 outputs
        assert max_diff(out, reference(x)) > 1.0           # and not the start's function
    # collapsing reads the model, never changes it
    assert any('parametrizations' in key for key in model.state_dict())


def test_grouped_convs_are_left_as_they_are():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 6, 1))
    assert expand_conv_kernels(model, 2) == 1
    assert list(plain_state_dict(model)) == ['0.weight', '0.bias', '1.weight', '1.bias']  # plain order


def test_pruned_parallel_rfdn_expands_and_collapses(repo_root):
    shipped = load_model(os.path.join(repo_root, 'model_zoo', 'team01_PRFDN.pth'), 'ParallelRFDN').eval()
    expanded = load_model(os.path.join(repo_root, 'model_zoo', 'team01_PRFDN.pth'), 'ParallelRFDN').eval()
    torch.manual_seed(0)
    expand_conv_kernels(expanded, 2)
    randomise_reduce(expanded, std=0.002)
    again = load_model(os.path.join(repo_root, 'model_zoo', 'team01_PRFDN.pth'), 'ParallelRFDN').eval()
    again.load_state_dict(plain_state_dict(expanded), strict=True)
    x = torch.rand(1, 3, 20, 20) * 255
    with torch.no_grad():
        out = expanded(x)
        assert max_diff(again(x), out) < 1e-3
        assert max_diff(out, shipped(x)) > 1e-2
    assert isinstance(again, ParallelRFDN)


def test_train_with_expanded_kernels_writes_plain_checkpoints(tmp_path):
    data = write_smooth_images(tmp_path / 'data', [(64, 64), (64, 80)])
    val = write_smooth_images(tmp_path / 'val', [(48, 48)], seed=1)
    torch.manual_seed(0)
    start = RFDN(nf=8, num_modules=1).state_dict()
    save_state_dict(start, str(tmp_path / 'tiny.pth'))
    out = tmp_path / 'run'
    common = ['--model', 'RFDN', '--pretrained', str(tmp_path / 'tiny.pth'), '--data_dir', str(data),
              '--val_hr_dir', str(val), '--batch_size', '2', '--patch_size', '16', '--val_every', '2',
              '--save_every', '2', '--workers', '0', '--no_progress', '--lr', '1e-3',
              '--out_dir', str(out), '--expand_kernels', '2']
    assert train.main([*common, '--iters', '2']) == 0
    state = torch.load(out / 'state.pth', map_location='cpu', weights_only=True)
    assert any(key.endswith('.parametrizations.weight.0.reduce') for key in state['model'])
    assert all(not torch.equal(v, torch.zeros_like(v)) for k, v in state['model'].items()
               if k.endswith('.0.reduce'))                         # B left zero in its first steps
    for name in ('model_last.pth', 'model_best.pth'):
        plain = load_model(str(out / name), 'RFDN')                # strict, RFDN's own keys
        assert list(plain.state_dict()) == list(start) == list(torch.load(out / name, weights_only=True))
    # the written weights are the expanded run's function: W + B·M·A of its training state
    expanded = RFDN(nf=8, num_modules=1)
    expand_conv_kernels(expanded, 2)
    expanded.load_state_dict(state['model'], strict=True)
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        assert max_diff(load_model(str(out / 'model_last.pth'), 'RFDN').eval()(x), expanded.eval()(x)) < 1e-3
    assert train.main([*common, '--iters', '4', '--resume']) == 0   # resumes with its factors
    assert torch.load(out / 'state.pth', map_location='cpu', weights_only=True)['step'] == 4
    with pytest.raises(UserError, match='was --model or --expand_kernels changed'):
        train.main([*common[:-2], '--iters', '6', '--resume'])
    with pytest.raises(UserError, match='--expand_kernels'):
        train.main([*common[:-4], '--expand_kernels', '-1', '--out_dir', str(tmp_path / 'bad'),
                    '--iters', '2'])

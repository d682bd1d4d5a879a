"""Collapsible linear blocks (Wang et al., CVPRW 2022): CollapsibleConv, CLBIMDN and collapse_model.

Fast CPU tests; the official IMDN checkpoint is read (never copied) from <shared>/pretrained.
"""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import CLBIMDN, IMDN, load_model
from models.clb_imdn import CLBIMDB, CollapsibleConv, collapse_modules
from models.imdn import IMDB
from utils.compress.collapse import collapse_model
from utils.io.checkpoint import read_state_dict, save_state_dict


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def randomise_pointwise(model: nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Give every 1×1 branch of every CollapsibleConv random non-zero weights and biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CollapsibleConv):
                m.conv1x1.weight.copy_(torch.randn(m.conv1x1.weight.shape, generator=g) * std)
                if m.conv1x1.bias is not None:
                    m.conv1x1.bias.copy_(torch.randn(m.conv1x1.bias.shape, generator=g) * std)


def pointwise_branches(model: nn.Module) -> list:
    return [m.conv1x1 for m in model.modules() if isinstance(m, CollapsibleConv)]


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def official(shared_dir):
    path = os.path.join(shared_dir, 'pretrained', 'imdn_baseline.pth')
    assert os.path.isfile(path), f'missing {path}'
    model = load_model(path)
    assert type(model) is IMDN
    return model


# ------------------------------------------------------------------ CollapsibleConv
@pytest.mark.parametrize('cin,cout,k,identity', [
    (3, 5, 3, False), (3, 5, 5, False), (7, 7, 3, False), (7, 7, 3, True),
    (7, 7, 5, True), (16, 8, 3, False), (1, 1, 1, True),
])
def test_collapsible_conv_collapses_exactly(cin, cout, k, identity):
    torch.manual_seed(cin * 100 + cout * 10 + k)
    block = CollapsibleConv(cin, cout, k, identity=identity)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)  # both branches random, biases too
    x = torch.rand(2, cin, 11, 9) * 2 - 1
    y = block(x)
    assert y.shape == (2, cout, 11, 9)

    conv = block.collapse()
    assert type(conv) is nn.Conv2d
    assert conv.kernel_size == (k, k) and conv.padding == (k // 2, k // 2)
    assert (conv.in_channels, conv.out_channels) == (cin, cout) and conv.bias is not None
    d = max_diff(conv(x), y)
    print(f'CollapsibleConv {cin}->{cout} k{k} identity={identity}: max|d|={d:.2e}')
    assert d < 1e-5

    # the branches by hand: the collapse is the documented sum
    ref = (F.conv2d(x, block.conv.weight, block.conv.bias, padding=k // 2)
           + F.conv2d(x, block.conv1x1.weight, block.conv1x1.bias)
           + (x if identity else 0))
    assert max_diff(ref, y) < 1e-5
    # collapse_modules on the module itself returns its collapsed conv
    assert max_diff(collapse_modules(block)(x), y) < 1e-5


def test_collapsible_conv_rejects_bad_shapes():
    with pytest.raises(ValueError):
        CollapsibleConv(3, 5, 3, identity=True)
    with pytest.raises(ValueError):
        CollapsibleConv(4, 4, 2)


# ------------------------------------------------------------------ CLBIMDB / CLBIMDN
def test_clbimdb_collapses_to_imdb_keys():
    torch.manual_seed(0)
    block = CLBIMDB(12)
    randomise_pointwise(block)
    x = torch.rand(1, 12, 10, 10)
    y = block(x)
    folded = collapse_modules(block)
    plain = IMDB(12)
    assert list(folded.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(folded.state_dict(), strict=True)
    assert max_diff(plain(x), y) < 1e-5


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_random_clbimdn_collapses_to_imdn(scale, tmp_path):
    torch.manual_seed(scale)
    clb = CLBIMDN(nc=12, nb=2, upscale=scale).eval()
    randomise_pointwise(clb, seed=scale)
    x = torch.rand(1, 3, 13, 17)
    with torch.no_grad():
        y = clb(x)
        plain = collapse_model(clb)
        y_plain = plain(x)
    assert type(plain) is IMDN and y.shape == (1, 3, 13 * scale, 17 * scale)
    d = max_diff(y_plain, y)
    print(f'CLBIMDN nc=12 nb=2 x{scale}: max|d|={d:.2e}')
    assert d < 1e-4

    # the plain IMDN layout, strictly
    ref = IMDN(nc=12, nb=2, upscale=scale)
    result = ref.load_state_dict(plain.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(plain.state_dict()) == set(ref.state_dict())
    # the CLB model itself was left alone
    assert all(isinstance(m, CollapsibleConv) for m in (clb.model[1].sub[0].conv1[0],
                                                        clb.model[1].sub[1].conv4))

    # both forms round-trip through checkpoints and are recognised
    save_state_dict(clb.state_dict(), str(tmp_path / 'clb.pth'))
    save_state_dict(plain.state_dict(), str(tmp_path / 'plain.pth'))
    assert models.recognise(read_state_dict(str(tmp_path / 'clb.pth'))) is CLBIMDN
    assert not IMDN.recognises(clb.state_dict())
    assert models.recognise(read_state_dict(str(tmp_path / 'plain.pth'))) is IMDN
    back = load_model(str(tmp_path / 'clb.pth'))
    assert type(back) is CLBIMDN and back.scale == scale and back.num_blocks == 2
    with torch.no_grad():
        assert torch.equal(back(x), y)


def test_pruned_kernel_clbimdn_collapses():
    """A conv override (conv4's k×k branch pruned to 1×1) survives save/load and collapse."""
    torch.manual_seed(1)
    clb = CLBIMDN(nc=12, nb=2, upscale=2,
                  conv_overrides={'model.1.sub.1.conv4.conv': (9, 3, 1, True)}).eval()
    randomise_pointwise(clb)
    rebuilt = CLBIMDN.from_state_dict(clb.state_dict())
    rebuilt.load_state_dict(clb.state_dict(), strict=True)
    plain = collapse_model(rebuilt)
    assert plain.model[1].sub[1].conv4.kernel_size == (1, 1)
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        assert max_diff(plain(x), clb(x)) < 1e-4
    IMDN.from_state_dict(plain.state_dict()).load_state_dict(plain.state_dict(), strict=True)


# ------------------------------------------------------------------ official checkpoint
def test_from_official_imdn_finetune_and_collapse(official, tmp_path):
    clb = CLBIMDN.from_imdn(official).eval()
    assert type(clb) is CLBIMDN and clb.num_blocks == 8 and clb.scale == 4
    branches = pointwise_branches(clb)
    assert len(branches) == 8 * 4
    assert all(b.weight.abs().sum() == 0 and b.bias.abs().sum() == 0 for b in branches)

    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_official = official(x)
        d0 = max_diff(clb(x), y_official)
    print(f'from_imdn (official) vs official: max|d|={d0:.2e}')
    assert d0 < 1e-5

    # fine-tune briefly against the teacher. The student starts as the teacher's exact
    # function, so a pure L1 to the teacher output is 0 with a zero (sign(0)) gradient;
    # a little noise on the target stands in for ground truth that differs from it.
    teacher_sd = {k: v.clone() for k, v in official.state_dict().items()}
    torch.manual_seed(0)
    clb.train()
    opt = torch.optim.Adam(clb.parameters(), lr=1e-3)
    for _ in range(5):
        lr_patch = torch.rand(1, 3, 12, 12)
        with torch.no_grad():
            target = official(lr_patch) + 0.01 * torch.randn(1, 3, 48, 48)
        loss = F.l1_loss(clb(lr_patch), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clb.eval()
    assert all(b.weight.abs().sum() > 0 for b in branches)
    assert all(torch.equal(v, teacher_sd[k]) for k, v in official.state_dict().items())

    with torch.no_grad():
        y_clb = clb(x)
        plain = collapse_model(clb)
        d1 = max_diff(plain(x), y_clb)
    print(f'fine-tuned CLBIMDN (nc=64, nb=8) collapsed: max|d|={d1:.2e}')
    assert d1 < 1e-4
    assert type(plain) is IMDN
    IMDN().load_state_dict(plain.state_dict(), strict=True)

    save_state_dict(plain.state_dict(), str(tmp_path / 'collapsed.pth'))
    save_state_dict(clb.state_dict(), str(tmp_path / 'clb.pth'))
    loaded_plain = load_model(str(tmp_path / 'collapsed.pth'))
    loaded_clb = load_model(str(tmp_path / 'clb.pth'))
    assert type(loaded_plain) is IMDN and loaded_plain.num_blocks == 8
    assert type(loaded_clb) is CLBIMDN and loaded_clb.num_blocks == 8
    with torch.no_grad():
        assert torch.equal(loaded_plain(x), plain(x))
        assert torch.equal(loaded_clb(x), y_clb)


def test_block_pruned_imdn_nb7(official):
    """The CLB paper's pruned baseline: the official IMDN with its last IMDB dropped."""
    sd = official.state_dict()
    pruned_sd = {}
    for k, v in sd.items():
        if k.startswith('model.1.sub.7.'):
            continue
        pruned_sd[k.replace('model.1.sub.8.', 'model.1.sub.7.')] = v
    pruned = IMDN(nb=7)
    pruned.load_state_dict(pruned_sd, strict=True)
    pruned.eval()

    clb = CLBIMDN.from_imdn(pruned).eval()
    assert clb.num_blocks == 7 and len(pointwise_branches(clb)) == 7 * 4
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert max_diff(clb(x), pruned(x)) < 1e-5
        randomise_pointwise(clb, std=0.01)
        y = clb(x)
        plain = collapse_model(clb)
        d = max_diff(plain(x), y)
    print(f'CLBIMDN nb=7 collapsed: max|d|={d:.2e}')
    assert d < 1e-4
    assert type(plain) is IMDN and plain.num_blocks == 7
    IMDN(nb=7).load_state_dict(plain.state_dict(), strict=True)
    assert CLBIMDN.config_from_state_dict(clb.state_dict())['nb'] == 7
    assert IMDN.config_from_state_dict(plain.state_dict())['nb'] == 7

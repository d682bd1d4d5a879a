"""The shipped PRFDN: NTIRE loading pattern, folded, and its size against RFDN."""
import os

import pytest
import torch

from models import load_model
from models.team01_PRFDN import PRFDN
from utils.model_summary import count_params, ntire_flops


def test_ntire_pattern_and_builder_agree(repo_root, shared_dir):
    path = os.path.join(repo_root, 'model_zoo', 'team01_PRFDN.pth')
    model = PRFDN()
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    built = load_model(path)
    x = torch.rand(1, 3, 24, 20) * 255
    with torch.no_grad():
        assert torch.equal(model.eval()(x), built(x))
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any('cat_conv' in n or 'split' in n for n in names)   # folded
    rfdn = load_model(os.path.join(shared_dir, 'pretrained', 'rfdn_baseline.pth'))
    assert count_params(model) <= 0.5 * count_params(rfdn)
    assert ntire_flops(model) <= 0.5 * ntire_flops(rfdn)


@pytest.mark.parametrize('model_id', [1, 2, 3, 4])
def test_every_shipped_checkpoint_loads_with_ntire_pattern(repo_root, model_id):
    """model_zoo/team01_NAME.pth + models/team01_NAME.py (class NAME, no arguments), strict;
    the same model as the tensor-driven builder and as `--model_id` finds it."""
    import importlib
    from models.zoo import MODEL_ZOO
    filename = MODEL_ZOO[model_id][1][0]
    stem = os.path.splitext(filename)[0]
    path = os.path.join(repo_root, 'model_zoo', filename)
    assert os.path.isfile(path), f'{filename} is not shipped'
    cls = getattr(importlib.import_module(f'models.{stem}'), stem.split('_', 1)[1])
    model = cls()
    model.load_state_dict(torch.load(path, map_location='cpu', weights_only=True), strict=True)
    built = load_model(path)
    x = torch.rand(1, 3, 24, 20) * built.input_range
    with torch.no_grad():
        assert torch.equal(model.eval()(x), built(x))
    assert not any(k.endswith('.conv.weight') for k in model.state_dict())   # CLB branches collapsed


def test_committed_branch_checkpoint_merges_exactly(repo_root):
    """model_zoo/branch/BranchRFDN_x4.pth (the trained branch model of the README, stage 7) is a
    strict BranchRFDN, and its merge into one wide model is exact on its real weights."""
    from models import BranchRFDN
    from utils.reparam import branch_to_parallel
    branch = load_model(os.path.join(repo_root, 'model_zoo', 'branch', 'BranchRFDN_x4.pth'))
    assert isinstance(branch, BranchRFDN)
    parallel = branch_to_parallel(branch, cat_as_conv=True, split_as_conv=True).eval()
    x = torch.rand(1, 3, 20, 18) * 255
    with torch.no_grad():
        assert (branch(x) - parallel(x)).abs().max() < 1e-3

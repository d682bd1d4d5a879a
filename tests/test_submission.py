"""The shipped PRFDN: NTIRE loading pattern, folded, and its size against RFDN."""
import os

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

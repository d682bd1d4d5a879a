"""ONNX export matches PyTorch; the widths literal rebuilds the same model."""
import os

import numpy as np
import pytest
import torch

from models import RFDN, BranchRFDN
from utils.export import conv_specs, export_onnx, onnx_max_difference, OnnxSR
from utils.errors import UserError
from utils.reparam import branch_to_parallel


def test_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = branch_to_parallel(BranchRFDN.from_rfdn(RFDN(nf=8)))
    path = str(tmp_path / 'm.onnx')
    export_onnx(model, path)
    lr = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    assert onnx_max_difference(model, path, lr) < 1e-3       # dynamic H, W: not the export size
    sr = OnnxSR(path, model.scale)(torch.rand(1, 3, 20, 20) * 255)
    assert sr.shape == (1, 3, 80, 80)


def test_conv_specs_rebuild():
    from models.blocks import apply_conv_overrides
    torch.manual_seed(0)
    model = RFDN(nf=8)
    apply_conv_overrides(model, {'B1.c1_d': (8, 3, 1, True), 'B1.c5': (15, 8, 1, True)})
    rebuilt = RFDN(nf=8, conv_overrides=conv_specs(model))
    assert conv_specs(rebuilt) == conv_specs(model)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_ntire_score():
    from utils.score import ntire_score
    base = {'runtime_256': 100.0, 'flops': 20.0, 'num_parameters': 0.4}
    assert abs(ntire_score(base, base)['total'] - np.exp(2)) < 1e-9
    half = {'runtime_256': 50.0, 'flops': 10.0, 'num_parameters': 0.2}
    assert abs(ntire_score(half, base)['total'] - np.exp(1)) < 1e-9


def _import_entry(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'models.{os.path.splitext(os.path.basename(path))[0]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # 'models.' prefix: the entry's relative import resolves
    return module


@pytest.mark.parametrize('family', ['IMDN', 'RLFN'])
def test_entry_for_other_families_loads_with_ntire_pattern(family, tmp_path):
    from models import IMDN, RLFN
    from utils.checkpoint import save_state_dict
    from utils.export import write_entry
    from utils.kernel_pruning import bias_prune, replace_with_1x1
    torch.manual_seed(0)
    if family == 'IMDN':
        model = IMDN(nc=12, nb=2, upscale=2).eval()
    else:   # kernel- and bias-pruned, as AdvancedSR ships it
        model = RLFN(feature_channels=12, mid_channels=10, esa_channels=4, num_blocks=2, upscale=2).eval()
        replace_with_1x1(model, ['block_2.c2_r', 'conv_2'])
        bias_prune(model)
    ckpt = tmp_path / 'x.pth'
    save_state_dict(model.state_dict(), str(ckpt))
    entry = tmp_path / 'team99_SHIPPED.py'
    write_entry(model, str(ckpt), str(entry))
    shipped = _import_entry(str(entry)).SHIPPED()          # no arguments
    shipped.load_state_dict(torch.load(ckpt, weights_only=True), strict=True)
    x = torch.rand(1, 3, 24, 20) * model.input_range
    with torch.no_grad():
        assert torch.equal(shipped.eval()(x), model(x))
    with pytest.raises(UserError):
        write_entry(model, str(ckpt), str(tmp_path / f'team99_{family}.py'))   # would shadow


def test_score_cli_scores_several_models(tmp_path, capsys):
    import json
    from utils.score import main
    rec = lambda ms, g, p: {'runtime_256': ms, 'flops': g, 'num_parameters': p}
    path = tmp_path / 'r.json'
    path.write_text(json.dumps({'base': rec(100, 20, 0.4), 'half': rec(50, 10, 0.2), 'same': rec(100, 20, 0.4)}))
    assert main([str(path), 'half', 'same', 'base']) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith('half vs base') and lines[1].startswith('same vs base')
    assert 'total 2.718' in lines[0] and 'total 7.389' in lines[1]       # e^1 and e^2
    assert main([str(path), 'nope', 'base']) == 2

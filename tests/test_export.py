"""ONNX export matches PyTorch; the widths literal rebuilds the same model."""
import numpy as np
import torch

from models import RFDN, BranchRFDN
from utils.export import conv_specs, export_onnx, onnx_max_difference, OnnxSR
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

"""Deployment helpers: the shipped model's widths as Python source, and ONNX export.

    python -m utils.export widths model_zoo/team01_PRFDN.pth        # dict literal for models/
    python -m utils.export onnx model_zoo/team01_PRFDN.pth out.onnx # + onnxruntime check
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch


def conv_specs(model: torch.nn.Module) -> dict:
    """{conv name: (in per group, out, kernel, bias)} of every conv, in module order."""
    from models.blocks import conv_spec
    return {n: conv_spec(m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def export_onnx(model: torch.nn.Module, path: str, opset: int = 17) -> None:
    """ONNX graph with dynamic height/width; input (1, 3, H, W) in the model's range."""
    model = model.eval().cpu()
    x = torch.rand(1, 3, 64, 64) * getattr(model, 'input_range', 255.0)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + '.tmp'
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), tmp, input_names=['lr'], output_names=['sr'],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={'lr': {2: 'h', 3: 'w'}, 'sr': {2: 'sh', 3: 'sw'}})
    os.replace(tmp, path)


def onnx_max_difference(model: torch.nn.Module, path: str, lr_uint8: np.ndarray) -> float:
    """Largest |PyTorch - onnxruntime| (0–255 units) on one real LR image."""
    import onnxruntime as ort
    from .image_io import uint8_to_tensor
    rng = getattr(model, 'input_range', 255.0)
    x = uint8_to_tensor(lr_uint8, rng)
    with torch.no_grad():
        ref = model.eval().cpu()(x).numpy()
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = sess.run(None, {'lr': x.numpy()})[0]
    return float(np.abs(out - ref).max() * 255.0 / rng)


class OnnxSR:
    """An ONNX model behind the interface `utils.evaluate.evaluate` expects."""

    def __init__(self, path: str, scale: int, input_range: float = 255.0, min_input_size: int = 15):
        import onnxruntime as ort
        self.session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
        self.scale, self.input_range, self.min_input_size = scale, input_range, min_input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {'lr': x.detach().cpu().float().numpy()})[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('what', choices=['widths', 'onnx'])
    p.add_argument('checkpoint')
    p.add_argument('output', nargs='?')
    p.add_argument('--image', default=os.path.join(os.environ.get('ESR_SHARED', '../shared'),
                                                   'benchmark', 'Set5', 'LR_bicubic', 'X4', 'butterflyx4.png'))
    args = p.parse_args(argv)
    from models import load_model
    from .errors import UserError
    try:
        model = load_model(args.checkpoint)
        if args.what == 'widths':
            print('{')
            for name, spec in conv_specs(model).items():
                print(f"    '{name}': {spec},")
            print('}')
            return 0
        if not args.output:
            raise UserError('onnx export needs an output path')
        export_onnx(model, args.output)
        from .image_io import imread_rgb
        diff = onnx_max_difference(model, args.output, imread_rgb(args.image))
        print(f'wrote {args.output}; max |PyTorch - onnxruntime| on {os.path.basename(args.image)}: '
              f'{diff:.2e} (0–255)')
        if diff > 1e-3:
            os.remove(args.output)
            raise UserError(f'ONNX output differs by {diff:.2e} > 1e-3; removed {args.output}')
        return 0
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())

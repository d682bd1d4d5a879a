"""Tiling and small-image padding of utils.engine.inference."""
import numpy as np
import pytest
import torch

from models import RFDN, load_model
from utils.data.eval_sets import folder_set
from utils.engine.evaluate import evaluate
from utils.engine.inference import forward_padded, forward_tiled


class PointwiseSR(torch.nn.Module):
    """A model without spatial context: tiling must reproduce it exactly."""

    def __init__(self, scale):
        super().__init__()
        self.scale, self.min_input_size = scale, 1
        self.conv = torch.nn.Conv2d(3, 3 * scale * scale, 1)
        self.shuffle = torch.nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.conv(x))


@pytest.mark.parametrize('size,tile,overlap', [((37, 53), 16, 4), ((64, 64), 32, 8),
                                               ((20, 70), 24, 12), ((17, 17), 16, 0)])
def test_tiling_covers_every_pixel_exactly(size, tile, overlap):
    torch.manual_seed(0)
    model = PointwiseSR(3)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert torch.allclose(forward_tiled(model, x, 3, tile, overlap), model(x), atol=1e-6)


def test_small_input_padded_and_cropped():
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=1, upscale=2).eval()
    with torch.no_grad():
        out = forward_padded(model, torch.rand(1, 3, 5, 9) * 255, 2)
        one = forward_padded(model, torch.rand(1, 3, 1, 1) * 255, 2)  # too small to reflect
    assert out.shape == (1, 3, 10, 18) and one.shape == (1, 3, 2, 2)


@pytest.mark.slow
def test_tiled_psnr_matches_untiled_on_set14(shared_dir, repo_root):
    """Tiled and untiled PSNR agree within 0.01 dB on Set14 (×4; the shipped RFDN-CP: RFDN's
    receptive field at 0.38× its FLOPs)."""
    model = load_model(f'{repo_root}/model_zoo/team01_RFDNCP.pth')
    set14 = folder_set(f'{shared_dir}/benchmark/Set14/HR', None, 4)
    with torch.no_grad():
        full = evaluate(model, set14, progress=False, warmup=False)
        tiled = evaluate(model, set14, tile=96, tile_overlap=32, progress=False, warmup=False)
    diff = np.mean(tiled['psnr']) - np.mean(full['psnr'])
    diff_y = np.mean(tiled['psnr_y']) - np.mean(full['psnr_y'])
    print(f'Set14 RFDN-CP untiled {np.mean(full["psnr"]):.4f} dB, tiled(96/32) diff {diff:+.4f} dB '
          f'(Y {diff_y:+.4f})')
    assert abs(diff) <= 0.01 and abs(diff_y) <= 0.01


@pytest.mark.slow
def test_tiling_bounds_memory(repo_root):
    """A 384×384 LR (1536² output) with the shipped RFDN-CP: tiles of 96 keep the peak far below
    untiled."""
    import cv2

    from utils.engine.inference import super_resolve
    from utils.metrics.model_summary import PeakMemory
    model = load_model(f'{repo_root}/model_zoo/team01_RFDNCP.pth')
    rng = np.random.default_rng(0)
    lr = cv2.GaussianBlur(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8), (5, 5), 2)
    with torch.no_grad():
        with PeakMemory('cpu') as tiled:
            a = super_resolve(model, lr, tile=96, overlap=32)
        with PeakMemory('cpu') as full:
            b = super_resolve(model, lr)
    print(f'384² LR, RFDN-CP: peak memory tiled(96/32) {tiled.peak_mb:.0f} MB, untiled {full.peak_mb:.0f} MB; '
          f'max |Δ| {np.abs(a.astype(int) - b.astype(int)).max()} grey levels')
    assert a.shape == b.shape == (1536, 1536, 3)
    assert tiled.peak_mb < 0.5 * full.peak_mb


def test_fp16_path_matches_fp32(repo_root, shared_dir, tmp_path):
    """The `--fp16` path (half model, half input, float output; counting and timing a half
    model) on the shipped PRFDN. Run on the CPU, whose half-precision convolution is correct
    but slow, on small Set5 crops (96² HR) and a 32² counting input; on CUDA the same code runs,
    timed with CUDA events."""
    import cv2

    from utils.metrics.model_summary import measure_runtime, summarize
    hr_dir = tmp_path / 'crops' / 'HR'
    hr_dir.mkdir(parents=True)
    for name in ('butterfly', 'head'):
        hr = cv2.imread(f'{shared_dir}/benchmark/Set5/HR/{name}.png')
        h, w = hr.shape[:2]
        cv2.imwrite(str(hr_dir / f'{name}.png'), hr[h // 2 - 48:h // 2 + 48, w // 2 - 48:w // 2 + 48])
    crops = folder_set(str(hr_dir), None, 4)
    model = load_model(f'{repo_root}/model_zoo/team01_PRFDN.pth')
    with torch.no_grad():
        full = evaluate(model, crops, progress=False, warmup=False)
        counts = summarize(model, (3, 32, 32), with_thop=False)
        half = model.half()
        assert next(half.parameters()).dtype == torch.float16
        low = evaluate(half, crops, fp16=True, progress=False, warmup=False)
        half_counts = summarize(half, (3, 32, 32), with_thop=False)
        timing = measure_runtime(half, torch.rand(1, 3, 16, 16, dtype=torch.float16) * 255, 1, 2)
    diffs = np.abs(np.array(low['psnr_y']) - np.array(full['psnr_y']))
    print(f'PRFDN fp32 vs fp16 PSNR-Y on 96² Set5 crops: {full["psnr_y"]} vs {low["psnr_y"]}')
    assert min(full['psnr_y']) > 20 and diffs.max() <= 0.05
    assert half_counts == counts
    assert timing['median_ms'] > 0

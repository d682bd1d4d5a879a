"""The project's bicubic imresize against the MATLAB-made Set5 LR images."""

import math
import os

import numpy as np
import pytest

from utils.io.image_io import imread_rgb, list_images
from utils.io.matlab_functions import imresize, modcrop, rgb2ycbcr, shave


def _psnr_from_mse(mse):
    return math.inf if mse == 0 else 20 * math.log10(255 / math.sqrt(mse))


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_set5_downscale_matches_matlab(shared_dir, scale):
    set5 = os.path.join(shared_dir, 'benchmark', 'Set5')
    hr_paths = list_images(os.path.join(set5, 'HR'))
    assert len(hr_paths) == 5

    total_sq_err = 0.0
    total_count = 0
    worst_abs_diff = 0
    per_image_psnr = {}
    for hr_path in hr_paths:
        name = os.path.splitext(os.path.basename(hr_path))[0]
        hr = modcrop(imread_rgb(hr_path), scale)
        reference = imread_rgb(os.path.join(set5, 'LR_bicubic', f'X{scale}', f'{name}x{scale}.png'))
        lr = imresize(hr, 1 / scale)
        assert lr.dtype == np.uint8
        assert lr.shape == reference.shape, name

        diff = lr.astype(np.float64) - reference.astype(np.float64)
        sq_err = float(np.sum(diff ** 2))
        total_sq_err += sq_err
        total_count += diff.size
        worst_abs_diff = max(worst_abs_diff, int(np.abs(diff).max()))
        per_image_psnr[name] = _psnr_from_mse(sq_err / diff.size)

    overall_psnr = _psnr_from_mse(total_sq_err / total_count)
    print(f"\nSet5 x{scale}: PSNR(ours, MATLAB) = {overall_psnr:.2f} dB, "
          f"max |diff| = {worst_abs_diff}, per image: "
          + ', '.join(f'{k} {v:.2f}' for k, v in per_image_psnr.items()))
    assert worst_abs_diff <= 2
    assert overall_psnr >= 55
    assert all(p >= 50 for p in per_image_psnr.values()), per_image_psnr


def test_uint8_and_float_inputs_agree():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    out_uint8 = imresize(img, 1 / 3)
    out_float = imresize(img.astype(np.float64) / 255, 1 / 3)
    assert out_float.dtype == np.float64
    assert out_uint8.shape == out_float.shape == (13, 17, 3)
    # The uint8 path rounds between the two 1-D passes (as MATLAB does), so
    # the two can differ by at most a grey level or so, never more.
    diff = np.abs(out_uint8.astype(np.float64) - np.clip(out_float * 255, 0, 255))
    assert diff.max() <= 1.5
    assert imresize(img.astype(np.float32) / 255, 1 / 3).dtype == np.float32


def test_upscale_shape_and_grayscale():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(10, 7), dtype=np.uint8)
    out = imresize(img, 4)
    assert out.shape == (40, 28)
    assert out.dtype == np.uint8
    # The a=-0.5 cubic reproduces linear ramps exactly, so away from the
    # (mirror-padded) borders output pixel x (1-based) equals its sample
    # position u = x/4 + 0.5*(1 - 1/4) on the ramp f(i) = i.
    ramp = np.tile(np.arange(1, 11, dtype=np.float64), (3, 1))
    up = imresize(ramp, 4)
    assert up.shape == (12, 40)
    positions = np.arange(1, 41) / 4 + 0.375
    np.testing.assert_allclose(up[1, 8:-8], positions[8:-8], atol=1e-12)


def test_output_shape_overrides_scale():
    img = np.zeros((20, 30, 3), dtype=np.float32)
    assert imresize(img, scale=2, output_shape=(7, 45)).shape == (7, 45, 3)
    assert imresize(img, output_shape=(10, 60)).shape == (10, 60, 3)
    with pytest.raises(ValueError):
        imresize(img)


def test_constant_image_stays_constant():
    down = imresize(np.full((9, 12), 173, dtype=np.uint8), 1 / 2)
    assert down.shape == (5, 6)
    assert np.all(down == 173)
    up = imresize(np.full((3, 4, 3), 0.25), 3)
    assert up.shape == (9, 12, 3)
    np.testing.assert_allclose(up, 0.25, atol=1e-12)


def test_hand_computed_downscale_by_two():
    # Scale 1/2: the antialiased kernel is 0.5*cubic(d/2), non-zero for
    # |d| < 4, so taps at |d| = 0.5, 1.5, 2.5, 3.5 weigh
    # 0.5*cubic(0.25), 0.5*cubic(0.75), 0.5*cubic(1.25), 0.5*cubic(1.75):
    w05, w15, w25, w35 = 0.43359375, 0.11328125, -0.03515625, -0.01171875
    assert 2 * (w05 + w15 + w25 + w35) == pytest.approx(1.0)  # no renormalisation
    # 1-based input pixels 1-4 are 0, 5-8 are 1.
    row = np.array([[0., 0., 0., 0., 1., 1., 1., 1.]])
    out = imresize(row, output_shape=(1, 4))
    # Output 1 samples u = 1/0.5 + 0.5*(1 - 2) = 1.5: taps at 1-based indices
    # -2..5 (mirrored -2,-1,0 -> 3,2,1, all zero); only index 5 (d = -3.5) is 1.
    assert out[0, 0] == pytest.approx(w35, abs=1e-12)
    # Output 2 samples u = 3.5: indices 5, 6, 7 (d = -1.5, -2.5, -3.5) are 1.
    assert out[0, 1] == pytest.approx(w15 + w25 + w35, abs=1e-12)
    # The input is antisymmetric about 0.5, so is the output.
    np.testing.assert_allclose(out[0] + out[0, ::-1], 1.0, atol=1e-12)


def test_modcrop_and_shave():
    img = np.arange(11 * 14).reshape(11, 14)
    assert modcrop(img, 4).shape == (8, 12)
    np.testing.assert_array_equal(modcrop(img, 4), img[:8, :12])
    assert shave(img, 2).shape == (7, 10)
    np.testing.assert_array_equal(shave(img, 2), img[2:-2, 2:-2])
    assert shave(img, 0) is img


def test_rgb2ycbcr_matlab_values():
    white = np.full((1, 1, 3), 255, dtype=np.uint8)
    black = np.zeros((1, 1, 3), dtype=np.uint8)
    assert rgb2ycbcr(white)[0, 0] == pytest.approx(235.0)
    assert rgb2ycbcr(black)[0, 0] == pytest.approx(16.0)
    assert rgb2ycbcr(white.astype(np.float64) / 255)[0, 0] == pytest.approx(235 / 255)
    ycbcr = rgb2ycbcr(np.array([[[255, 0, 0]]], dtype=np.uint8), only_y=False)
    np.testing.assert_allclose(ycbcr[0, 0], [16 + 65.481, 128 - 37.797, 128 + 112.0])
    # Not rounded: a mid grey gives a fractional luma.
    grey = rgb2ycbcr(np.full((1, 1, 3), 100, dtype=np.uint8))[0, 0]
    assert grey == pytest.approx(16 + 219 * 100 / 255)

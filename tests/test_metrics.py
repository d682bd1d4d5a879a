"""PSNR/SSIM against hand-computable cases."""

import math

import numpy as np
import pytest

from utils.metrics.psnr_ssim import calculate_psnr, calculate_ssim


def _random_image(seed, shape=(48, 40, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_psnr_identical_is_inf():
    img = _random_image(0)
    assert calculate_psnr(img, img) == math.inf
    assert calculate_psnr(img, img, border=4, y_channel=True) == math.inf


def test_psnr_known_mse():
    a = np.full((16, 16, 3), 100, dtype=np.uint8)
    b = a + 1  # MSE exactly 1 over every pixel and channel
    assert calculate_psnr(a, b) == pytest.approx(20 * math.log10(255), abs=1e-9)
    assert calculate_psnr(a, b) == pytest.approx(48.1308, abs=1e-4)
    # MSE averages over channels: one channel off by 3 gives MSE 3.
    c = a.copy()
    c[:, :, 1] += 3
    assert calculate_psnr(a, c) == pytest.approx(10 * math.log10(255 ** 2 / 3), abs=1e-9)


def test_psnr_y_channel_on_grey_images():
    # For R = G = B = v, MATLAB luma is 16 + 219 v / 255, so a grey-level
    # difference d becomes a luma difference 219 d / 255.
    a = np.full((20, 20, 3), 90, dtype=np.uint8)
    b = np.full((20, 20, 3), 92, dtype=np.uint8)
    luma_diff = 2 * 219 / 255
    expected = 20 * math.log10(255 / luma_diff)
    assert calculate_psnr(a, b, y_channel=True) == pytest.approx(expected, abs=1e-9)
    assert calculate_psnr(a, b, y_channel=True) > calculate_psnr(a, b)


def test_ssim_identical_is_one_and_drops_with_noise():
    img = _random_image(1, (64, 64, 3))
    assert calculate_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim(img, img, y_channel=True) == pytest.approx(1.0, abs=1e-12)

    rng = np.random.default_rng(2)
    smooth = np.clip(np.add.outer(np.arange(64), np.arange(64)) * 2, 0, 255).astype(np.uint8)
    smooth = np.repeat(smooth[:, :, None], 3, axis=2)
    previous = 1.0
    for sigma in (2, 8, 32):
        noisy = np.clip(smooth + rng.normal(0, sigma, smooth.shape), 0, 255).astype(np.uint8)
        ssim = calculate_ssim(smooth, noisy)
        assert ssim < previous
        previous = ssim
    assert previous < 0.5


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        calculate_psnr(_random_image(0, (16, 16, 3)), _random_image(0, (16, 15, 3)))
    with pytest.raises(ValueError):
        calculate_ssim(_random_image(0, (16, 16, 3)), _random_image(0, (15, 16, 3)))


def test_float_input_rejected():
    img = _random_image(0)
    with pytest.raises(ValueError):
        calculate_psnr(img.astype(np.float32) / 255, img.astype(np.float32) / 255)


def test_border_shave_ignores_edges():
    a = _random_image(3, (30, 30, 3))
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert calculate_psnr(a, b, border=4) == math.inf
    assert calculate_psnr(a, b, border=3) < math.inf
    assert calculate_ssim(a, b, border=4) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        calculate_psnr(a, b, border=15)

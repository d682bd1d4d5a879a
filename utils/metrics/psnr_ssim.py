"""PSNR and SSIM as computed by the NTIRE challenge scripts.

This is the project's only metric implementation: training validation,
evaluation scripts and tests all call these functions, so reported numbers
cannot drift apart. Inputs are numpy uint8 images in 0-255; convert model
outputs with utils.io.image_io.tensor_to_uint8 first (the rounding to uint8 is
part of the protocol: saved SR images are uint8).
"""

import cv2
import numpy as np

from utils.io.matlab_functions import rgb2ycbcr, shave


def _prepare(img1, img2, border, y_channel):
    """Validate a pair of images and return them as float64 arrays, 0-255 scale.

    Returns:
        two np.ndarray float64, HxW (y_channel or grayscale input) or HxWx3,
        shaved by ``border`` pixels on each side.
    """
    img1 = np.asarray(img1)
    img2 = np.asarray(img2)
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    for img in (img1, img2):
        if img.dtype != np.uint8:
            # A 0-1 float image would silently give a PSNR ~48 dB too high.
            raise ValueError(f"expected uint8 images in 0-255, got {img.dtype}")
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"expected HxWx3 (or HxW) images, got shape {img.shape}")
    if y_channel:
        if img1.ndim != 3:
            raise ValueError("y_channel=True needs HxWx3 RGB images")
        img1 = rgb2ycbcr(img1, only_y=True)  # float64, 16-235, unrounded
        img2 = rgb2ycbcr(img2, only_y=True)
    img1 = shave(img1, border).astype(np.float64)
    img2 = shave(img2, border).astype(np.float64)
    if img1.size == 0:
        raise ValueError(f"border {border} leaves no pixels of a {img1.shape} image")
    return img1, img2


def calculate_psnr(img1, img2, border=0, y_channel=False):
    """Peak signal-to-noise ratio in dB, peak 255.

    Args:
        img1, img2: np.ndarray, HxWx3 uint8 RGB (0-255), same shape
            (HxW uint8 grayscale is accepted when y_channel is False).
        border: pixels shaved from each side before comparing (usually the
            SR scale).
        y_channel: compare MATLAB rgb2ycbcr luma (unrounded float, 16-235)
            instead of RGB.

    Returns:
        float: 20*log10(255/sqrt(MSE)), the MSE taken over all pixels and
        channels in float64; inf for identical images.

    Raises:
        ValueError: shapes differ, wrong dtype, or nothing left after shaving.
    """
    img1, img2 = _prepare(img1, img2, border, y_channel)
    mse = np.mean((img1 - img2) ** 2)
    if mse == 0:
        return float('inf')
    return float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def _ssim_single_channel(img1, img2):
    """MATLAB-style SSIM (Wang et al. 2004) of two HxW float64 images in 0-255.

    Local statistics use an 11x11 Gaussian window (sigma 1.5) and only the
    'valid' region (5 px cropped on each side after filtering), as in the
    reference MATLAB ssim_index; the result is the mean of the SSIM map.
    """
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    gauss = cv2.getGaussianKernel(11, 1.5)
    window = gauss @ gauss.T

    def filt(x):
        # The border mode is irrelevant: the crop keeps only pixels whose
        # window lies entirely inside the image.
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu1 = filt(img1)
    mu2 = filt(img2)
    mu1_sq = mu1 ** 2
    mu2_sq = mu2 ** 2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = filt(img1 ** 2) - mu1_sq
    sigma2_sq = filt(img2 ** 2) - mu2_sq
    sigma12 = filt(img1 * img2) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(img1, img2, border=0, y_channel=False):
    """Structural similarity, MATLAB style, data range 255.

    Args:
        img1, img2: np.ndarray, HxWx3 uint8 RGB (0-255), same shape
            (HxW uint8 grayscale is accepted when y_channel is False).
        border: pixels shaved from each side before comparing.
        y_channel: compare MATLAB rgb2ycbcr luma (unrounded float, 16-235).

    Returns:
        float in [-1, 1], 1 for identical images; on RGB, the mean of the
        three per-channel SSIMs.

    Raises:
        ValueError: shapes differ, wrong dtype, or the shaved image is smaller
            than the 11x11 window.
    """
    img1, img2 = _prepare(img1, img2, border, y_channel)
    if min(img1.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after shaving, got {img1.shape[:2]}")
    if img1.ndim == 2:
        return _ssim_single_channel(img1, img2)
    return float(np.mean([_ssim_single_channel(img1[:, :, c], img2[:, :, c])
                          for c in range(img1.shape[2])]))

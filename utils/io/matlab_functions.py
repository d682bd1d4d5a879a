"""numpy re-implementations of the MATLAB functions the SR benchmarks depend on.

The benchmark LR images were made with MATLAB's ``imresize`` (bicubic) and
PSNR/SSIM are conventionally reported on MATLAB's ``rgb2ycbcr`` luma, so both
must match MATLAB; OpenCV's bicubic (a=-0.75, no antialiasing) and PIL's
(fixed-point) give different pixels.
"""

import numpy as np


def _cubic(x):
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic').

    Args:
        x: np.ndarray of float64 distances.
    Returns:
        np.ndarray, same shape, float64 weights.
    """
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (absx <= 1).astype(np.float64)
    far = ((absx > 1) & (absx <= 2)).astype(np.float64)
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * near
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * far)


def resize_contributions(in_length, out_length, scale, antialiasing):
    """Per-output-pixel taps of one 1-D resize, like MATLAB's ``contributions``.

    Output pixel x (1-based) samples the input at u = x/scale + 0.5*(1 - 1/scale).
    When downscaling with antialiasing the kernel is stretched by 1/scale so it
    acts as a low-pass filter. Weights are normalised to sum to 1, and taps
    outside the image are folded back with symmetric padding (edge pixel
    repeated, like padarray 'symmetric').

    Returns:
        weights: np.ndarray, (out_length, taps), float64; each row sums to 1.
        indices: np.ndarray, (out_length, taps), int64, 0-based input indices.
    """
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        kernel_width = kernel_width / scale

        def kernel(x):
            return scale * _cubic(scale * x)
    else:
        kernel = _cubic

    out_pos = np.arange(1, out_length + 1, dtype=np.float64)
    in_pos = out_pos / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(in_pos - kernel_width / 2)
    taps = int(np.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    weights = kernel(in_pos[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)

    # Symmetric padding: index sequence 0..n-1, n-1..0 repeated.
    period = 2 * in_length
    folded = np.mod((indices - 1).astype(np.int64), period)
    folded = np.where(folded < in_length, folded, period - 1 - folded)

    # The margin taps are zero for every output pixel; dropping them, as
    # MATLAB does, saves work.
    used = np.any(weights != 0, axis=0)
    return weights[:, used], folded[:, used]


def apply_contributions(moved: np.ndarray, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Σ_tap moved[indices[:, tap]] · weights[:, tap] along axis 0 (float64), tap by tap in
    this order: what every resize pass computes, so a caller using the same arrays gets the
    same bits. `weights`, `indices`: (out, taps) from `resize_contributions`."""
    out_length = weights.shape[0]
    weight_shape = (out_length,) + (1,) * (moved.ndim - 1)
    # Accumulating tap by tap (a gather, not a dense out x in matrix) keeps
    # the cost proportional to the kernel size, which matters for upscaling.
    resized = np.zeros((out_length,) + moved.shape[1:], dtype=np.float64)
    gathered = np.empty_like(resized)  # reused: large fresh allocations are slow
    for tap in range(weights.shape[1]):
        np.take(moved, indices[:, tap], axis=0, out=gathered)
        gathered *= weights[:, tap].reshape(weight_shape)
        resized += gathered
    return resized


def _resize_along_axis(img, axis, out_length, scale, antialiasing):
    """Resize float64 ``img`` along ``axis`` (0 = H, 1 = W) to ``out_length``."""
    weights, indices = resize_contributions(img.shape[axis], out_length, scale, antialiasing)
    # Contiguous rows make the fancy-index gathers several times faster.
    moved = np.ascontiguousarray(np.moveaxis(img, axis, 0))
    return np.moveaxis(apply_contributions(moved, weights, indices), 0, axis)


def imresize(img, scale=None, output_shape=None, antialiasing=True):
    """MATLAB-compatible bicubic ``imresize``.

    Args:
        img: np.ndarray, HxW or HxWxC; uint8 (0-255) or float (any range,
            typically 0-1).
        scale: resize factor applied to both H and W, e.g. 1/4 or 4. The output
            size is ceil(H*scale) x ceil(W*scale), as in MATLAB.
        output_shape: (H_out, W_out); overrides ``scale`` for the output size
            (the per-axis scale is then H_out/H and W_out/W, as in MATLAB).
        antialiasing: widen the kernel when downscaling (MATLAB default: on).

    Returns:
        np.ndarray with the same number of dimensions as ``img``.
        uint8 input -> uint8 output, clipped to 0-255 and rounded half away
        from zero after each of the two 1-D passes (MATLAB's behaviour; this
        reproduces the Set5 LR_bicubic images bit-exactly).
        Float input -> same float dtype, unrounded and unclipped (bicubic
        overshoots slightly around edges).
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC image, got shape {img.shape}")
    in_h, in_w = img.shape[:2]
    if output_shape is not None:
        out_h, out_w = int(output_shape[0]), int(output_shape[1])
        scales = (out_h / in_h, out_w / in_w)
    elif scale is not None:
        scales = (float(scale), float(scale))
        # The small tolerance keeps e.g. 510 * (1/3) = 170.00000000000003 from
        # becoming 171.
        out_h = int(np.ceil(in_h * scale - 1e-9))
        out_w = int(np.ceil(in_w * scale - 1e-9))
    else:
        raise ValueError("give scale or output_shape")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size {out_h}x{out_w} is empty")

    is_uint8 = img.dtype == np.uint8
    if not (is_uint8 or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"unsupported dtype {img.dtype}; use uint8 or float")
    out = img.astype(np.float64)

    # MATLAB resizes along the dimension with the smaller scale first (least
    # work, and the order changes rounding-level results).
    out_lengths = (out_h, out_w)
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        out = _resize_along_axis(out, axis, out_lengths[axis], scales[axis], antialiasing)
        if is_uint8:
            # MATLAB keeps the input class between the two 1-D passes, so a
            # uint8 image is rounded after EACH pass; skipping the intermediate
            # rounding leaves ~10-15% of the benchmark LR pixels off by 1-2.
            out = round_to_uint8_range(out)

    return out.astype(np.uint8) if is_uint8 else out.astype(img.dtype)


def round_to_uint8_range(values):
    """Clip float64 values to 0-255 and round half away from zero (MATLAB uint8 cast).

    np.round is half-to-even; after clipping to >= 0, floor(x + 0.5) is
    MATLAB's rounding. The result stays float64 (integer-valued).
    """
    rounded = np.clip(values, 0, 255)
    rounded += 0.5
    return np.floor(rounded, out=rounded)


def modcrop(img, scale):
    """Crop H and W down to multiples of ``scale``, keeping the top-left corner.

    Args:
        img: np.ndarray, HxW or HxWxC, any dtype.
        scale: int.
    Returns:
        view of ``img``, (H - H % scale) x (W - W % scale) [x C].
    """
    scale = int(scale)
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def shave(img, border):
    """Crop ``border`` pixels from each side of H and W (no-op for border 0).

    Args:
        img: np.ndarray, HxW or HxWxC, any dtype.
    Returns:
        view of ``img``, (H - 2*border) x (W - 2*border) [x C].
    """
    border = int(border)
    if border <= 0:
        return img
    return img[border:-border, border:-border, ...]


# MATLAB rgb2ycbcr: rows give Y, Cb, Cr from R, G, B in 0-1 (scaled by 255
# for the 0-255 output range).
_YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966],
                          [-37.797, -74.203, 112.0],
                          [112.0, -93.786, -18.214]], dtype=np.float64)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)


def rgb2ycbcr(img, only_y=True):
    """MATLAB ``rgb2ycbcr`` (ITU-R BT.601, studio swing), without rounding.

    Args:
        img: np.ndarray, HxWx3 RGB; uint8 in 0-255 or float in 0-1.
        only_y: return only the luma channel.

    Returns:
        np.ndarray float64.
        uint8 input: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with
            R, G, B in 0-255, so Y in 16-235 (Cb/Cr in 16-240). Unlike MATLAB,
            which returns uint8, the values are NOT rounded: the metrics use
            the exact luma.
        float input: the same formula divided by 255, i.e. Y in 16/255-235/255.
        Shape HxW if only_y, else HxWx3 (Y, Cb, Cr).
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB image, got shape {img.shape}")
    is_uint8 = img.dtype == np.uint8
    rgb01 = img.astype(np.float64) / 255.0 if is_uint8 else img.astype(np.float64)
    if only_y:
        out = rgb01 @ _YCBCR_MATRIX[0] + _YCBCR_OFFSET[0]
    else:
        out = rgb01 @ _YCBCR_MATRIX.T + _YCBCR_OFFSET
    return out if is_uint8 else out / 255.0

"""Exact MATLAB-bicubic LR crops of an HR image, without resizing the whole image.

`imresize(hr, 1/s)` is separable: every LR pixel is a fixed weighted sum of at most
4·s + 2 HR pixels per axis, with symmetric padding at the borders. `bicubic_crop` takes
the weights and tap indices of the whole image (`matlab_functions.resize_contributions`, the
very arrays `imresize` uses), keeps the rows of the wanted LR crop, and applies them with
`imresize`'s own `apply_contributions` and the same uint8 rounding between the two passes. Every floating-point
operation is the one `imresize` performs for those pixels, so the crop is bit-identical to
`imresize(hr, 1/s)[top:top+h, left:left+w]` (tests/test_data.py checks it for ×2, ×3, ×4),
at the cost of a (h·s + margin)² region instead of the whole image.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from utils.io.matlab_functions import apply_contributions, resize_contributions, round_to_uint8_range


@lru_cache(maxsize=64)
def _taps(in_length: int, scale: int):
    """(weights (out, taps) float64, indices (out, taps) int64) of one ÷scale axis."""
    weights, indices = resize_contributions(in_length, in_length // scale, 1.0 / scale, True)
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


def bicubic_crop(hr: np.ndarray, scale: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    """LR pixels [top:top+height, left:left+width] of `imresize(hr, 1/scale)`.

    Args:
        hr: HxWx3 uint8 (0–255), H and W multiples of `scale` (modcropped).
        scale: integer downscaling factor.
        top, left, height, width: the LR crop, inside the (H/scale)x(W/scale) LR image.
    Returns:
        height x width x 3 uint8 (0–255), equal to the same crop of the full-image resize.
    """
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'HR {h}x{w} is not a multiple of the scale {scale} (modcrop it first)')
    if not (0 <= top and top + height <= h // scale and 0 <= left and left + width <= w // scale):
        raise ValueError(f'LR crop {top},{left} {height}x{width} outside {h // scale}x{w // scale}')
    row_w, row_i = _taps(h, scale)
    col_w, col_i = _taps(w, scale)
    row_w, row_i = row_w[top:top + height], row_i[top:top + height]
    col_w, col_i = col_w[left:left + width], col_i[left:left + width]
    # only the HR pixels the taps read are converted and gathered
    row0, row1 = int(row_i.min()), int(row_i.max()) + 1
    col0, col1 = int(col_i.min()), int(col_i.max()) + 1
    region = hr[row0:row1, col0:col1].astype(np.float64)
    # imresize: equal scales -> axis 0 (rows) first, rounded to uint8 values after each pass
    rows = round_to_uint8_range(apply_contributions(region, row_w, row_i - row0))
    cols = apply_contributions(np.ascontiguousarray(np.moveaxis(rows, 1, 0)), col_w, col_i - col0)
    return np.moveaxis(round_to_uint8_range(cols), 0, 1).astype(np.uint8)

"""Running an SR model on one image: range conversion, small-image padding, tiling.

`super_resolve(model, lr)` takes an HxWx3 uint8 RGB LR image (0–255) and returns the
(sH)x(sW)x3 uint8 SR image, whatever range the model works in (`model.input_range`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from utils.io.image_io import tensor_to_uint8, uint8_to_tensor


def pad_to_min_size(x: torch.Tensor, min_size: int) -> tuple[torch.Tensor, int, int]:
    """Pad (N, C, H, W) on the bottom/right up to `min_size`; returns (x, pad_h, pad_w).

    Reflection keeps image statistics (what the network expects); replication is the
    fallback for images too small to reflect (a reflection pad must be < the size).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, min_size - h), max(0, min_size - w)
    if pad_h == 0 and pad_w == 0:
        return x, 0, 0
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), pad_h, pad_w


def forward_padded(model, x: torch.Tensor, scale: int) -> torch.Tensor:
    """model(x) for any input size: pads to `model.min_input_size`, crops the output back."""
    min_size = getattr(model, 'min_input_size', 1)
    h, w = x.shape[-2:]
    xp, pad_h, pad_w = pad_to_min_size(x, min_size)
    out = model(xp)
    if pad_h or pad_w:
        out = out[..., :h * scale, :w * scale]
    return out


def _tile_starts(length: int, tile: int, stride: int) -> list:
    if length <= tile:
        return [0]
    k = math.ceil((length - tile) / stride)
    return sorted({min(i * stride, length - tile) for i in range(k + 1)})


def forward_tiled(model, x: torch.Tensor, scale: int, tile: int, overlap: int = 32) -> torch.Tensor:
    """model(x) computed tile by tile: memory bounded by the tile, not the image.

    Tiles of `tile`×`tile` LR pixels overlap by `overlap`. Each output pixel is taken from
    the one tile in which it lies farthest from a cut edge (tile edges that are image
    edges are fine): a cut edge changes the zero padding of the convolutions and ESA's
    pooled statistics, so its neighbourhood is the least faithful part of a tile.
    Output: (N, 3, sH, sW) on x's device, in the model's range.
    Raises ValueError for tile < 1 or overlap < 0 (a negative overlap leaves gaps between
    the tiles that no tile writes); an overlap above tile // 2 is capped to it.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f'tile must be >= 1 and overlap >= 0, got tile {tile}, overlap {overlap}')
    n, _, h, w = x.shape
    if tile >= h and tile >= w:
        return forward_padded(model, x, scale)
    overlap = min(overlap, tile // 2)
    stride = tile - overlap
    rows, cols = _tile_starts(h, tile, stride), _tile_starts(w, tile, stride)

    def keep(starts, length, i):
        """LR interval [a, b) of tile i that is kept: split the overlaps half-way."""
        a, b = starts[i], min(starts[i] + tile, length)
        lo = a if i == 0 else (starts[i - 1] + tile + a) // 2 if starts[i - 1] + tile > a else a
        hi = b if i == len(starts) - 1 else (b + starts[i + 1]) // 2 if b > starts[i + 1] else b
        return lo, hi

    out = None
    for i, top in enumerate(rows):
        r0, r1 = keep(rows, h, i)
        for j, left in enumerate(cols):
            c0, c1 = keep(cols, w, j)
            patch = x[..., top:top + tile, left:left + tile]
            sr = forward_padded(model, patch, scale)
            if out is None:
                out = torch.zeros(n, sr.shape[1], h * scale, w * scale, device=x.device, dtype=sr.dtype)
            out[..., r0 * scale:r1 * scale, c0 * scale:c1 * scale] = \
                sr[..., (r0 - top) * scale:(r1 - top) * scale, (c0 - left) * scale:(c1 - left) * scale]
    return out


@torch.inference_mode()
def super_resolve_tensor(model, x: torch.Tensor, scale: int, tile: int | None = None,
                         overlap: int = 32) -> torch.Tensor:
    """(1, 3, H, W) in the model's range -> (1, 3, sH, sW), padded/tiled as needed
    (tile None: the whole image at once)."""
    if tile is not None:
        return forward_tiled(model, x, scale, tile, overlap)
    return forward_padded(model, x, scale)


def super_resolve(model, lr: np.ndarray, device='cpu', tile: int | None = None,
                  overlap: int = 32, fp16: bool = False) -> np.ndarray:
    """HxWx3 uint8 LR (0–255) -> (sH)x(sW)x3 uint8 SR (0–255)."""
    value_range = getattr(model, 'input_range', 255.0)
    x = uint8_to_tensor(lr, value_range).to(device)
    if fp16:
        x = x.half()
    out = super_resolve_tensor(model, x, model.scale, tile, overlap)
    return tensor_to_uint8(out.float(), value_range)

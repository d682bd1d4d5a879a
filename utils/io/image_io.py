"""Image reading/writing and numpy <-> torch conversion.

Convention used throughout the project: images on disk and in numpy are
HxWx3 uint8 RGB in 0-255; tensors fed to models are float32 1x3xHxW whose
range depends on the model (0-255 for RFDN/RLFN, 0-1 for IMDN), hence the
``value_range`` argument of the conversion helpers.
"""

import os
import warnings

import cv2
import numpy as np
import torch

from utils.io.atomic import atomic_write_bytes
from utils.io.errors import UserError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def imread_rgb(path):
    """Read an image file as RGB.

    Args:
        path: file path (str or os.PathLike); non-ASCII paths are supported.

    Returns:
        np.ndarray, HxWx3, uint8, RGB, values 0-255.
        A JPEG's EXIF orientation is applied (the image as viewers show it).
        Grayscale images are replicated to 3 channels. An alpha channel is
        dropped (with a warning). 16-bit images are converted to 8 bits as
        round(value / 257), which maps 0 -> 0 and 65535 -> 255 exactly
        (with a warning, since precision is lost).

    Raises:
        UserError: the file is missing, unreadable, corrupt or of an
            unsupported sample type (one-line message).
    """
    path = os.fspath(path)
    try:
        # cv2.imread cannot open non-ASCII paths on Windows; reading the bytes
        # ourselves and decoding them works everywhere.
        encoded = np.fromfile(path, dtype=np.uint8)
    except (OSError, ValueError):
        raise UserError(f"cannot read image: {path}") from None
    return imdecode_rgb(encoded, path)


def imdecode_rgb(encoded, path):
    """Decode an encoded image (np.ndarray of uint8 file bytes) as imread_rgb does;
    `path` names it in warnings and errors (e.g. an LMDB key)."""
    # A camera stores a rotated photo as its sensor read it plus an EXIF orientation tag;
    # viewers (and whoever made the matching LR or HR) show it turned upright. IMREAD_COLOR
    # applies the tag, IMREAD_UNCHANGED ignores it: JPEGs (3 channels or grey, never alpha,
    # 8 bits) are decoded the first way, everything else the second, which keeps alpha and
    # 16-bit samples visible to the checks below.
    is_jpeg = encoded.size >= 3 and bytes(encoded[:3]) == b'\xff\xd8\xff'
    flags = cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(encoded, flags) if encoded.size else None
    except (ValueError, cv2.error):
        img = None
    if img is None:
        raise UserError(f"cannot read image: {path}")

    if img.dtype == np.uint16:
        warnings.warn(f"{path}: 16-bit image converted to 8 bits (round(value / 257))",
                      stacklevel=2)
        img = np.floor(img.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise UserError(f"cannot read image: {path} (unsupported sample type {img.dtype})")

    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels in (2, 4):
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
        img = img[:, :, :channels - 1]
        channels -= 1
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 3:
        return np.ascontiguousarray(img[:, :, ::-1])  # OpenCV decodes to BGR
    raise UserError(f"cannot read image: {path} (unsupported channel count {channels})")


def imwrite_rgb(path, img, png_compression=None):
    """Write an RGB image as PNG, atomically.

    The PNG is encoded in memory, written to a temporary file in the target
    directory and renamed into place (utils.io.atomic), so an interrupted run never
    leaves a truncated image that a later run would read as valid data.
    Parent directories are created.

    Args:
        path: destination; must end in .png (the data is always PNG-encoded).
        img: np.ndarray, HxWx3 RGB or HxW grayscale, uint8 (0-255) or uint16 (0-65535,
            a 16-bit PNG).
        png_compression: zlib level 0-9 (None: OpenCV's default).
    """
    path = os.fspath(path)
    if not path.lower().endswith('.png'):
        raise ValueError(f"imwrite_rgb writes PNG only, got path {path}")
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16) or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected HxWx3 or HxW uint8/uint16 image, got {img.shape} {img.dtype}")
    bgr = img if img.ndim == 2 else np.ascontiguousarray(img[:, :, ::-1])
    params = [] if png_compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    ok, encoded = cv2.imencode('.png', bgr, params)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")

    atomic_write_bytes(path, encoded.tobytes())


def list_images(folder):
    """List the image files directly inside ``folder`` (not recursive).

    Returns:
        list of str paths, sorted by name, with extensions
        png/jpg/jpeg/bmp/tif/tiff/webp (case-insensitive).

    Raises:
        UserError: the folder does not exist or holds no images.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError(f"data folder not found: {folder}")
    paths = sorted(
        os.path.join(folder, name) for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, name)))
    if not paths:
        raise UserError(f"no images in {folder}")
    return paths


def uint8_to_tensor(img, value_range=255.):
    """Convert an image to a model input tensor.

    Args:
        img: np.ndarray, HxWx3 uint8 RGB, 0-255.
        value_range: what 255 maps to (255. for models trained on 0-255
            input, 1. for models trained on 0-1 input).

    Returns:
        torch.Tensor, 1x3xHxW, float32, values 0-value_range.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8 image, got {img.shape} {img.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    if value_range != 255.:
        tensor = tensor * (value_range / 255.)
    return tensor.unsqueeze(0)


def tensor_to_uint8(tensor, value_range=255.):
    """Convert a model output tensor back to an image (inverse of uint8_to_tensor).

    Args:
        tensor: torch.Tensor, 1x3xHxW or 3xHxW, float, nominally 0-value_range
            (out-of-range values are clamped).
        value_range: the value that maps to 255.

    Returns:
        np.ndarray, HxWx3, uint8 RGB, 0-255. Values are rounded with
        torch.round (half to even) after scaling to 0-255.
    """
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected 1x3xHxW or 3xHxW tensor, got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().to('cpu', torch.float32).clamp(0, value_range)
    if value_range != 255.:
        tensor = tensor * (255. / value_range)
    return torch.round(tensor).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()

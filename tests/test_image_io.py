"""imread_rgb / imwrite_rgb / list_images edge cases, on files made with cv2."""

import os

import cv2
import numpy as np
import pytest
import torch

from utils.io.errors import UserError
from utils.io.image_io import imread_rgb, imwrite_rgb, list_images, tensor_to_uint8, uint8_to_tensor


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return str(path)


def test_grayscale_is_replicated(tmp_path):
    gray = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9)
    img = imread_rgb(_write(tmp_path / 'gray.png', gray))
    assert img.shape == (12, 9, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)


def test_bgr_file_is_returned_as_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), dtype=np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    img = imread_rgb(_write(tmp_path / 'red.png', bgr))
    assert np.all(img[:, :, 0] == 200) and np.all(img[:, :, 1:] == 0)


def test_rgba_drops_alpha_with_warning(tmp_path):
    bgra = np.zeros((6, 7, 4), dtype=np.uint8)
    bgra[:, :, 0] = 10   # B
    bgra[:, :, 1] = 20   # G
    bgra[:, :, 2] = 30   # R
    bgra[:, :, 3] = 128  # alpha
    path = _write(tmp_path / 'rgba.png', bgra)
    with pytest.warns(UserWarning, match='rgba.png'):
        img = imread_rgb(path)
    assert img.shape == (6, 7, 3)
    np.testing.assert_array_equal(img[0, 0], [30, 20, 10])


def test_16bit_is_converted_with_warning(tmp_path):
    values = np.array([[0, 128, 129, 257, 385, 386, 65535, 65279]], dtype=np.uint16)
    path = _write(tmp_path / 'deep.png', values)
    with pytest.warns(UserWarning, match='16-bit'):
        img = imread_rgb(path)
    assert img.dtype == np.uint8
    # round(v / 257): 128/257 = 0.498 -> 0, 129/257 = 0.502 -> 1, 385/257 = 1.498 -> 1
    np.testing.assert_array_equal(img[0, :, 0], [0, 0, 1, 1, 1, 2, 255, 254])


def test_corrupt_file_raises_one_line_user_error(tmp_path):
    path = tmp_path / 'broken.png'
    path.write_bytes(b'\x89PNG\r\n\x1a\n this is not really a png')
    with pytest.raises(UserError) as excinfo:
        imread_rgb(path)
    message = str(excinfo.value)
    assert message == f"cannot read image: {path}"
    assert '\n' not in message


def test_missing_and_empty_files_raise_user_error(tmp_path):
    with pytest.raises(UserError, match='cannot read image'):
        imread_rgb(tmp_path / 'nope.png')
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(UserError, match='cannot read image'):
        imread_rgb(tmp_path / 'empty.png')


def test_round_trip_and_atomic_write(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    path = tmp_path / 'sub' / 'dir' / 'bild_é.png'  # parent dirs created, non-ASCII name
    imwrite_rgb(path, img)
    np.testing.assert_array_equal(imread_rgb(path), img)
    assert os.listdir(path.parent) == [path.name]  # no temp file left behind
    imwrite_rgb(path, img[::-1])  # overwriting an existing file works
    np.testing.assert_array_equal(imread_rgb(path), img[::-1])
    with pytest.raises(ValueError):
        imwrite_rgb(tmp_path / 'x.png', img.astype(np.float32))


def test_list_images(tmp_path):
    with pytest.raises(UserError, match='data folder not found'):
        list_images(tmp_path / 'missing')
    (tmp_path / 'notes.txt').write_text('not an image')
    with pytest.raises(UserError, match='no images in'):
        list_images(tmp_path)
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    for name in ('b.PNG', 'a.jpg', 'c.webp', 'd.TIFF'):
        _write(tmp_path / name, img)
    names = [os.path.basename(p) for p in list_images(tmp_path)]
    assert names == ['a.jpg', 'b.PNG', 'c.webp', 'd.TIFF']


@pytest.mark.parametrize('value_range', [255., 1.])
def test_tensor_round_trip(value_range):
    img = np.random.default_rng(1).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    tensor = uint8_to_tensor(img, value_range)
    assert tensor.shape == (1, 3, 5, 6) and tensor.dtype == torch.float32
    assert float(tensor.max()) <= value_range
    np.testing.assert_array_equal(tensor_to_uint8(tensor, value_range), img)
    # Out-of-range model outputs are clamped, not wrapped around.
    clamped = tensor_to_uint8(torch.full((1, 3, 2, 2), 2 * value_range), value_range)
    assert np.all(clamped == 255)
    assert np.all(tensor_to_uint8(torch.full((3, 2, 2), -value_range), value_range) == 0)

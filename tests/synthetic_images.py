"""Smooth random images for tests that need an image folder (training data, validation)."""
import cv2
import numpy as np


def write_smooth_images(folder, sizes, seed=0):
    """Writes img0.png, img1.png, ... of the given (h, w) sizes into `folder` (created):
    uniform noise blurred by a 7×7 Gaussian, so that SR models have structure to learn.
    Returns `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 3)
        cv2.imwrite(str(folder / f'img{i}.png'), img)
    return folder

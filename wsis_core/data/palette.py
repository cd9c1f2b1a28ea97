"""PASCAL VOC label PNGs: palette ("P" mode) images whose pixel values are class or instance indices.

VOC stores SegmentationClass and SegmentationObject as palette PNGs so that the files show colours in an
image viewer while the stored values stay plain indices (0 background, 255 void). Reading takes the
indices, never the colours, so any palette works on input; writing uses the standard VOC colormap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsis_core.data.images import open_image
from wsis_core.errors import WsisInputError


def _build_voc_palette() -> tuple[int, ...]:
    """VOC's colormap: the bits of index i are dealt round-robin to R, G, B, from each channel's top bit down."""
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(7, -1, -1):
            r |= (code & 1) << bit
            g |= ((code >> 1) & 1) << bit
            b |= ((code >> 2) & 1) << bit
            code >>= 3
        palette.extend((r, g, b))
    return tuple(palette)


_VOC_PALETTE = _build_voc_palette()


def voc_palette() -> list[int]:
    """The 256-entry VOC colormap as 768 ints (R, G, B per index); index 255 (void) is (224, 224, 192)."""
    return list(_VOC_PALETTE)


def save_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write a [H, W] uint8 index map as a palette PNG with the VOC colormap (like VOC's label files)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be a [H, W] uint8 array, got {labels.dtype} {labels.shape}")
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    image.putpalette(_VOC_PALETTE)
    image.save(path, format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """The [H, W] uint8 indices of a palette PNG; an unreadable or non-palette file raises WsisInputError."""
    with open_image(Path(path), missing="file not found") as image:
        image.load()
        labels = np.array(image) if image.mode == "P" else None
    if labels is None:
        raise WsisInputError(f"{path}: not a palette PNG")
    return labels

"""Binary masks as COCO run-length encodings (pycocotools), the one mask format of the project."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict:
    """Encode a [H, W] boolean mask as a COCO RLE whose ``counts`` is a str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (``counts`` str or bytes) into a [H, W] boolean mask."""
    return mask_utils.decode(_as_bytes(rle)).astype(bool)


def area(rle: dict) -> int:
    """Number of foreground pixels of an RLE."""
    return int(mask_utils.area(_as_bytes(rle)))


def to_bbox(rle: dict) -> list[float]:
    """Tight [x, y, w, h] box of an RLE (COCO convention: w = x_max - x_min + 1)."""
    return [float(v) for v in mask_utils.toBbox(_as_bytes(rle))]


def _as_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE, as COCO crowd annotations store it
        return mask_utils.frPyObjects(rle, *rle["size"])
    if isinstance(counts, str):
        return {"size": rle["size"], "counts": counts.encode("ascii")}
    return rle

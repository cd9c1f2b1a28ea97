"""Image file access with one-line errors naming the file.

An image whose header claims more than PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million) pixels is
refused before its pixels are decoded (a decompression bomb would take gigabytes).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsis_core.errors import WsisInputError


@contextmanager
def open_image(path: Path, missing: str = "image not found") -> Iterator[Image.Image]:
    """``Image.open(path)`` with its size checked, every reading error a WsisInputError (``missing``: the
    message for a file that does not exist)."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{image.width} x {image.height}")
            yield image
    except FileNotFoundError:
        raise WsisInputError(f"{path}: {missing}") from None
    except Image.DecompressionBombError:
        raise WsisInputError(f"{path}: image too large (more than {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise WsisInputError(f"{path}: corrupt or unreadable image ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    with open_image(path) as image:
        return image.size


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image as a uint8 [H, W, 3] RGB array."""
    with open_image(path) as image:
        return np.asarray(image.convert("RGB"))

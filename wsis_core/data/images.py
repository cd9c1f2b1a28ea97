"""Image file access with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsis_core.errors import WsisInputError


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise WsisInputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise WsisInputError(f"{path}: corrupt or unreadable image ({exc})") from None


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image as a uint8 [H, W, 3] RGB array."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise WsisInputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise WsisInputError(f"{path}: corrupt or unreadable image ({exc})") from None

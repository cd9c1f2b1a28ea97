"""Images with their instance masks drawn on them, for people to look at pseudo labels and predictions.

Each instance is filled with its class's colour (the VOC colormap, so a class keeps its colour across
rounds, images and the dataset's own label PNGs), outlined, boxed, and named with its score. Drawing is
OpenCV on the RGB pixels; the result is an RGB array or a PNG (``encode_png``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from wsis_core import masks
from wsis_core.data.palette import voc_palette

FILL_ALPHA = 0.45  # weight of the class colour in a filled mask
OUTLINE_PX, BOX_PX = 2, 1
FONT, FONT_SCALE, FONT_PX = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def class_colour(category_id: int) -> tuple[int, int, int]:
    """RGB colour of class ``category_id`` (1-based): its entry of the VOC colormap."""
    return tuple(int(v) for v in _PALETTE[category_id % 255])


def instance_caption(annotation: dict, class_names: Sequence[str]) -> str:
    """``"cat 0.87"``: the class name (or ``#k`` for an index outside ``class_names``) and the score if any."""
    category = annotation["category_id"]
    name = class_names[category - 1] if 1 <= category <= len(class_names) else f"#{category}"
    score = annotation.get("score")
    return name if score is None else f"{name} {score:.2f}"


def render_overlay(image: np.ndarray, annotations: Sequence[dict], class_names: Sequence[str]) -> np.ndarray:
    """uint8 [H, W, 3] RGB copy of ``image`` with every annotation (COCO RLE ``segmentation``, ``bbox``
    [x, y, w, h], ``category_id``, optional ``score``) drawn on it; lowest scores are drawn first, so the
    most confident instance is on top."""
    canvas = np.ascontiguousarray(image[..., :3], dtype=np.uint8).copy()
    ordered = sorted(annotations, key=lambda ann: ann.get("score", 1.0))
    for ann in ordered:
        mask = masks.decode(ann["segmentation"])
        colour = np.asarray(class_colour(ann["category_id"]), dtype=np.float32)
        canvas[mask] = (canvas[mask] * (1 - FILL_ALPHA) + colour * FILL_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, class_colour(ann["category_id"]), OUTLINE_PX)
    for ann in ordered:
        _draw_box_and_caption(canvas, ann, instance_caption(ann, class_names))
    return canvas


def _draw_box_and_caption(canvas: np.ndarray, ann: dict, caption: str) -> None:
    colour = class_colour(ann["category_id"])
    x, y, w, h = (int(round(v)) for v in ann["bbox"])
    cv2.rectangle(canvas, (x, y), (x + max(w - 1, 0), y + max(h - 1, 0)), colour, BOX_PX)
    (text_w, text_h), baseline = cv2.getTextSize(caption, FONT, FONT_SCALE, FONT_PX)
    top = max(y - text_h - baseline - 2, 0)  # above the box, or inside it at the image's top edge
    cv2.rectangle(canvas, (x, top), (x + text_w + 4, top + text_h + baseline + 2), colour, cv2.FILLED)
    ink = (0, 0, 0) if sum(colour) > 384 else (255, 255, 255)
    cv2.putText(canvas, caption, (x + 2, top + text_h + 1), FONT, FONT_SCALE, ink, FONT_PX, cv2.LINE_AA)


def thumbnail(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so that its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] RGB array."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the overlay could not be encoded as PNG")
    return data.tobytes()

"""A synthetic PASCAL VOC 2012-layout dataset for the demo, the tests and the benchmarks.

Design goals, so that the weakly supervised task stays meaningful:

* **Class = part.** The five classes pair up bodies and parts: ``cat`` (ellipse + pointed ears), ``bear``
  (ellipse + round ears), ``fish`` (ellipse + tail fin), ``house`` (rectangle + roof), ``cart``
  (rectangle + wheels). Each body shape is shared by several classes, so a model must find the
  discriminative part, as class activation maps do on real images.
* **Three difficulties.** ``hard``: colour says nothing; every object and the background clutter take
  colours from one shared palette, so only the part tells the class (what a pretrained backbone or
  thousands of images need). ``easy`` (the default): each class paints its objects from its own two
  colours and the clutter from a muted palette of its own, so a network trained from random
  initialisation on a few hundred images learns the classes, and the weakly supervised pipeline
  can be measured end to end on a CPU. Both give every object a random texture (stripes, smooth
  noise or grain); in ``easy`` touching instances of one class share colours, so only shape and
  texture edges separate them. ``parts`` is the case of the paper's Fig. 1: every class shares one body
  appearance (body shape, ellipse or rectangle, drawn at random for any class; body textures from one
  palette), and the class lives only in a small part (pointed ears, round ears, tail fin, a single hat,
  wheels) painted in the class's own colour; the background adds clutter and part-less bodies; an image
  holds 1-9 instances (3.2 on average) of 1-3 classes, so several touch and share a class. A classifier
  fires on the part, while the instance mask is the whole object (body and part).
* **Instances meet.** An image holds 1-3 classes with 1-3 instances each (at most 5 in all); many
  instances are placed next to or over an earlier one, so instance separation is not just connected
  components. Objects are drawn back to front; an instance's mask is its visible pixels. A candidate
  that would leave itself or an earlier instance less than 40 % visible or with fewer than 30 labelled
  pixels is redrawn (and dropped after a few tries), so every annotated instance is substantial.
* **VOC conventions.** A 1-pixel void band (255) lines the visible boundary of every instance in both
  label PNGs; void pixels belong to no instance. Boxes are the 1-based inclusive extent of the labelled
  pixels of the instance.

Image ``i`` (1-based over train then val) is drawn from its own generator seeded with ``(seed, i)``, and
the PNG/JPEG encoders are deterministic, so a seed gives byte-identical files.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsis_core.data.palette import save_label_png
from wsis_core.data.types import VOID
from wsis_core.errors import WsisInputError
from wsis_core.progress import Progress

SYNTH_CLASSES: tuple[str, ...] = ("cat", "bear", "fish", "house", "cart")

# Colours of objects and clutter alike (RGB): the class can never be read from colour.
_COLORS = np.array(
    [
        (200, 60, 50), (230, 150, 40), (220, 210, 70), (90, 170, 70), (40, 120, 90),
        (60, 160, 200), (50, 80, 170), (130, 80, 170), (200, 90, 160), (140, 100, 60),
        (90, 90, 90), (200, 200, 190),
    ],
    dtype=np.float32,
)
# ``easy``: each class's own two colours (RGB), and the clutter's muted palette, disjoint from them.
_CLASS_COLORS = {
    "cat": np.array([(230, 150, 40), (200, 90, 30)], np.float32),
    "bear": np.array([(130, 80, 170), (90, 50, 140)], np.float32),
    "fish": np.array([(60, 160, 200), (40, 110, 190)], np.float32),
    "house": np.array([(200, 60, 50), (230, 110, 110)], np.float32),
    "cart": np.array([(90, 170, 70), (40, 120, 60)], np.float32),
}
_CLUTTER_COLORS = np.array(
    [(90, 90, 90), (200, 200, 190), (150, 140, 120), (120, 115, 100), (170, 170, 160), (60, 60, 55)],
    dtype=np.float32,
)
# ``parts``: the body palette every class shares, the class colour of each part, and the clutter's palette.
_BODY_COLORS = np.array(
    [(150, 120, 90), (120, 100, 80), (175, 150, 115), (100, 110, 120), (140, 140, 130), (90, 80, 70)],
    dtype=np.float32,
)
_PART_COLORS = {
    "cat": (235, 140, 30), "bear": (150, 60, 200), "fish": (40, 170, 230), "house": (220, 40, 50), "cart": (60, 190, 60),
}
_PARTS_CLUTTER_COLORS = np.array(
    [(70, 90, 70), (160, 170, 150), (110, 130, 110), (190, 190, 170), (80, 80, 95), (130, 120, 140)],
    dtype=np.float32,
)
DIFFICULTIES = ("easy", "hard", "parts")

MIN_SIZE = 64
_MIN_VISIBLE_FRACTION = 0.4
_MIN_LABELLED_PIXELS = 30
_MAX_INSTANCES = 5
_TRIES_PER_INSTANCE = 12
_SUBPIXEL_BITS = 4  # cv2.fillPoly's ``shift``: polygon vertices at 1/16 pixel
# ``parts``: 1 + Binomial(8, 0.28) instances (1-9, mean 3.24), bodies 0.17-0.32 of the image long, an
# instance's part at least half visible.
_PARTS_EXTRA_INSTANCES = (8, 0.28)
_PARTS_LENGTH = (0.17, 0.32)
_MIN_PART_VISIBLE_FRACTION = 0.5

_DATA_DIRS = ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject")
_LIST_DIRS = ("ImageSets/Segmentation", "ImageSets/Main")
_OWN_DIRS = frozenset(_DATA_DIRS + _LIST_DIRS + ("ImageSets",))
_OWN_FILE = re.compile(
    r"classes\.txt"
    r"|(JPEGImages|Annotations|SegmentationClass|SegmentationObject)/synth_\d{6,}\.(jpg|xml|png)"
    r"|ImageSets/(Segmentation|Main)/(train|val)\.txt"
)


# ---------------------------------------------------------------------------------------------- shapes
def _ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 40) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _rectangle(a: float, b: float) -> np.ndarray:
    return np.array([(-a, -b), (a, -b), (a, b), (-a, b)])


def _cat(a: float, b: float) -> list[np.ndarray]:
    ears = [np.array([(s * 0.45 * a - 0.4 * b, -0.7 * b), (s * 0.45 * a + 0.4 * b, -0.7 * b),
                      (s * (0.45 * a + 0.15 * b), -1.75 * b)]) for s in (-1, 1)]
    return [_ellipse(0, 0, a, b), *ears]


def _bear(a: float, b: float) -> list[np.ndarray]:
    ears = [_ellipse(s * 0.45 * a, -0.9 * b, 0.42 * b, 0.42 * b, 24) for s in (-1, 1)]
    return [_ellipse(0, 0, a, b), *ears]


def _fish(a: float, b: float) -> list[np.ndarray]:
    tail = np.array([(0.75 * a, 0.0), (a + 0.9 * b, -0.8 * b), (a + 0.9 * b, 0.8 * b)])
    return [_ellipse(0, 0, a, b), tail]


def _house(a: float, b: float) -> list[np.ndarray]:
    roof = np.array([(-1.15 * a, -0.95 * b), (1.15 * a, -0.95 * b), (0.0, -2.0 * b)])
    return [_rectangle(a, b), roof]


def _cart(a: float, b: float) -> list[np.ndarray]:
    wheels = [_ellipse(s * 0.55 * a, b, 0.45 * b, 0.45 * b, 24) for s in (-1, 1)]
    return [_rectangle(a, b), *wheels]


# Polygons of each class around the body centre, body half-axes (a, b); y grows downwards.
_SHAPES: dict[str, Callable[[float, float], list[np.ndarray]]] = {
    "cat": _cat, "bear": _bear, "fish": _fish, "house": _house, "cart": _cart,
}


def _draw_object(rng: np.random.Generator, name: str, size: int, center: np.ndarray, length: float) -> np.ndarray:
    """The full [size, size] bool mask of one object: class polygons, random aspect, flip and tilt."""
    a = length / 2.0
    b = a * rng.uniform(0.5, 0.85)
    angle = np.deg2rad(rng.uniform(-20.0, 20.0))
    flip = rng.choice((-1.0, 1.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * [flip, 1.0]
    return _fill(_SHAPES[name](a, b), rotation, center, size)


def _fill(polygons: list[np.ndarray], rotation: np.ndarray, center: np.ndarray, size: int) -> np.ndarray:
    """The [size, size] bool mask of ``polygons`` (around 0) rotated by ``rotation`` and moved to ``center``."""
    mask = np.zeros((size, size), np.uint8)
    for polygon in polygons:
        points = (polygon @ rotation.T + center) * (1 << _SUBPIXEL_BITS)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


# -------------------------------------------------------------------------------------------- textures
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A [size, size] field in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _two_colors(rng: np.random.Generator, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, second = rng.choice(len(palette), size=2, replace=False)
    return palette[first], palette[second]


def _color(rng: np.random.Generator, palette: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(c) for c in palette[rng.integers(len(palette))])


def _texture(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """A [size, size, 3] float image mixing two ``palette`` colours by stripes, smooth noise or grain."""
    color_a, color_b = _two_colors(rng, palette)
    kind = rng.integers(3)
    if kind == 0:
        theta = rng.uniform(0.0, np.pi)
        period = rng.uniform(4.0, 12.0)
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        phase = (xs * np.cos(theta) + ys * np.sin(theta)) * (2.0 * np.pi / period)
        weight = 0.5 + 0.5 * np.sin(phase + rng.uniform(0.0, 2.0 * np.pi))
    elif kind == 1:
        weight = _smooth_noise(rng, size, max(3, size // 12))
    else:
        weight = rng.uniform(0.0, 0.6) + rng.random((size, size)).astype(np.float32) * 0.4
    weight = weight[..., None]
    return color_a * (1.0 - weight) + color_b * weight


def _background(rng: np.random.Generator, size: int, palette: np.ndarray) -> np.ndarray:
    """Clutter in ``palette`` colours: smooth two-colour noise under a brightness gradient, plus random
    lines and small blobs.

    Blobs are single ellipses or squares at most 0.14 of the image across, smaller than any object
    (bodies are at least 0.2 across) and without the parts that make a class.
    """
    color_a, color_b = _two_colors(rng, palette)
    weight = _smooth_noise(rng, size, int(rng.integers(3, 7)))[..., None]
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    gradient = 1.0 + rng.uniform(0.1, 0.3) * (np.cos(theta) * ramp[None, :] + np.sin(theta) * ramp[:, None])
    image = np.ascontiguousarray((color_a * (1.0 - weight) + color_b * weight) * gradient[..., None])
    for _ in range(int(rng.integers(2, 7))):
        start, end = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        cv2.line(image, start, end, _color(rng, palette), int(rng.integers(1, 3)), cv2.LINE_8)
    for _ in range(int(rng.integers(3, 9))):
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        radius = int(max(2, size * rng.uniform(0.02, 0.07)))
        if rng.random() < 0.6:
            axes = (radius, int(max(1, radius * rng.uniform(0.4, 1.0))))
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, _color(rng, palette), -1, cv2.LINE_8)
        else:
            corner = (center[0] + radius, center[1] + radius)
            cv2.rectangle(image, center, corner, _color(rng, palette), -1)
    return image


# -------------------------------------------------------------------------------------------- layout
def _label_maps(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Instance map (1..K, later masks on top) and the void band: labelled pixels with a 4-neighbour
    of another label (the image border counts as no neighbour)."""
    instances = np.zeros(masks[0].shape, np.uint8)
    for index, mask in enumerate(masks, start=1):
        instances[mask] = index
    padded = np.pad(instances, 1, mode="edge")
    center = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != center) | (padded[2:, 1:-1] != center)
        | (padded[1:-1, :-2] != center) | (padded[1:-1, 2:] != center)
    )
    return instances, differs & (instances > 0)


def _acceptable(masks: list[np.ndarray]) -> bool:
    """Every instance keeps >= 40 % of its drawn pixels visible and >= 30 labelled (non-void) pixels."""
    instances, void = _label_maps(masks)
    bins = len(masks) + 1
    visible = np.bincount(instances.ravel(), minlength=bins)[1:]
    labelled = np.bincount(instances[~void], minlength=bins)[1:]
    drawn = np.array([mask.sum() for mask in masks])
    return bool(np.all(visible >= _MIN_VISIBLE_FRACTION * drawn) and np.all(labelled >= _MIN_LABELLED_PIXELS))


def _plan_classes(rng: np.random.Generator) -> list[str]:
    """Draw order of the instances' classes: 1-3 classes, 1-3 instances each, at most 5 in all."""
    present = rng.choice(len(SYNTH_CLASSES), size=int(rng.integers(1, 4)), replace=False)
    counts = rng.integers(1, 4, size=len(present))
    while counts.sum() > _MAX_INSTANCES:
        counts[np.argmax(counts)] -= 1
    names = [SYNTH_CLASSES[c] for c, n in zip(present, counts) for _ in range(n)]
    return [names[i] for i in rng.permutation(len(names))]


def _layout(rng: np.random.Generator, size: int) -> tuple[list[str], list[np.ndarray]]:
    """``easy`` / ``hard``: the planned instances of :func:`_plan_classes` placed by :func:`_place`."""
    return _place(rng, size, _plan_classes(rng), (0.2, 0.45), _draw_object, _acceptable)


def _place(rng, size, plan, length_range, draw, acceptable) -> tuple[list[str], list]:
    """Place the planned instances back to front; returns the kept classes and what ``draw`` gave for each.

    ``draw(rng, name, size, center, length)`` draws one instance; ``acceptable(drawn)`` checks the list.
    The first instance is redrawn until it fits; a later one is dropped after a few failed tries.
    Two thirds of the later instances are placed next to a random earlier one (centre distance
    0.45-0.95 of the sum of their half-lengths) so that objects touch or overlap; the rest anywhere.
    """
    names, drawn, placed = [], [], []
    for name in plan:
        attempt = 0
        while attempt < _TRIES_PER_INSTANCE or not drawn:  # the first instance is always placed
            attempt += 1
            length = size * rng.uniform(*length_range)
            margin = 0.5 * length  # keeps the (untilted) body inside the image
            if placed and rng.random() < 2.0 / 3.0:
                other_center, other_length = placed[rng.integers(len(placed))]
                direction = rng.uniform(0.0, 2.0 * np.pi)
                distance = (other_length + length) / 2.0 * rng.uniform(0.45, 0.95)
                center = other_center + distance * np.array([np.cos(direction), np.sin(direction)])
            else:
                center = rng.uniform(0.0, size, 2)
            center = np.clip(center, margin, size - margin)
            instance = draw(rng, name, size, center, length)
            if acceptable(drawn + [instance]):
                names.append(name)
                drawn.append(instance)
                placed.append((center, length))
                break
    return names, drawn


# ---------------------------------------------------------------------------------------- ``parts``
def _part_polygons(name: str, a: float, b: float, body: str) -> list[np.ndarray]:
    """The class's small part around a body of half-axes (a, b) centred at 0; y grows downwards."""
    top = -b if body == "rectangle" else -0.92 * b  # where the part meets the body's upper edge
    if name == "cat":  # two pointed ears
        return [np.array([(s * 0.45 * a - 0.22 * b, top + 0.15 * b), (s * 0.45 * a + 0.22 * b, top + 0.15 * b),
                          (s * 0.45 * a, top - 0.55 * b)]) for s in (-1, 1)]
    if name == "bear":  # two round ears
        return [_ellipse(s * 0.45 * a, top - 0.1 * b, 0.26 * b, 0.26 * b, 20) for s in (-1, 1)]
    if name == "fish":  # a tail fin at one end
        return [np.array([(a - 0.15 * b, 0.0), (a + 0.6 * b, -0.45 * b), (a + 0.6 * b, 0.45 * b)])]
    if name == "house":  # a single central hat
        return [np.array([(-0.4 * b, top + 0.15 * b), (0.4 * b, top + 0.15 * b), (0.0, top - 0.6 * b)])]
    return [_ellipse(s * 0.5 * a, b * (1.0 if body == "rectangle" else 0.85), 0.26 * b, 0.26 * b, 20)
            for s in (-1, 1)]  # cart: two wheels


def _draw_part_object(rng: np.random.Generator, name: str, size: int, center: np.ndarray, length: float):
    """(whole object mask, part mask) of one ``parts`` instance: a shared body (ellipse or rectangle, random
    aspect, flip and tilt) with the class's part; the part is drawn over the body."""
    a = length / 2.0
    b = a * rng.uniform(0.55, 0.85)
    body = "ellipse" if rng.random() < 0.5 else "rectangle"
    angle = np.deg2rad(rng.uniform(-20.0, 20.0))
    flip = rng.choice((-1.0, 1.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * [flip, 1.0]
    outline = [_ellipse(0, 0, a, b)] if body == "ellipse" else [_rectangle(a, b)]
    part = _fill(_part_polygons(name, a, b, body), rotation, center, size)
    return _fill(outline, rotation, center, size) | part, part


def _acceptable_parts(drawn: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """:func:`_acceptable` on the whole objects, and every part at least half visible."""
    objects = [mask for mask, _ in drawn]
    if not _acceptable(objects):
        return False
    instances, _ = _label_maps(objects)
    return all(
        (instances[part] == index).sum() >= _MIN_PART_VISIBLE_FRACTION * part.sum()
        for index, (_, part) in enumerate(drawn, start=1)
    )


def _plan_parts(rng: np.random.Generator) -> list[str]:
    """``parts``: 1-9 instances (1 + Binomial(8, 0.28)) of 1-3 classes, each present class at least once."""
    count = 1 + int(rng.binomial(*_PARTS_EXTRA_INSTANCES))
    present = rng.choice(len(SYNTH_CLASSES), size=int(rng.integers(1, min(3, count) + 1)), replace=False)
    classes = list(present) + list(rng.choice(present, size=count - len(present)))
    return [SYNTH_CLASSES[classes[i]] for i in rng.permutation(count)]


def _distractors(rng: np.random.Generator, image: np.ndarray, size: int) -> None:
    """0-3 part-less bodies in the body textures, smaller than the objects: clutter that looks like a body."""
    for _ in range(int(rng.integers(0, 4))):
        length = size * rng.uniform(0.1, 0.18)
        center = rng.uniform(0.0, size, 2)
        a, b = length / 2.0, length / 2.0 * rng.uniform(0.55, 0.85)
        angle = np.deg2rad(rng.uniform(0.0, 180.0))
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        outline = _ellipse(0, 0, a, b) if rng.random() < 0.5 else _rectangle(a, b)
        mask = _fill([outline], rotation, center, size)
        image[mask] = _texture(rng, size, _BODY_COLORS)[mask]


def _render_parts(rng: np.random.Generator, size: int):
    """One ``parts`` image: shared body textures, class-coloured parts, clutter and part-less bodies."""
    image = _background(rng, size, _PARTS_CLUTTER_COLORS)
    _distractors(rng, image, size)
    names, drawn = _place(rng, size, _plan_parts(rng), _PARTS_LENGTH, _draw_part_object, _acceptable_parts)
    for name, (mask, part) in zip(names, drawn):
        image[mask] = _texture(rng, size, _BODY_COLORS)[mask]
        shade = np.float32(rng.uniform(0.85, 1.1))
        image[part] = np.clip(np.array(_PART_COLORS[name], np.float32) * shade, 0, 255)
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    instances, void = _label_maps([mask for mask, _ in drawn])
    return np.clip(image, 0, 255).astype(np.uint8), names, instances, void


def _render(rng: np.random.Generator, size: int, difficulty: str):
    """One image: RGB uint8, class names in draw order, instance map and void band."""
    if difficulty == "parts":
        return _render_parts(rng, size)
    easy = difficulty == "easy"
    image = _background(rng, size, _CLUTTER_COLORS if easy else _COLORS)
    names, masks = _layout(rng, size)
    for name, mask in zip(names, masks):
        image[mask] = _texture(rng, size, _CLASS_COLORS[name] if easy else _COLORS)[mask]
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    instances, void = _label_maps(masks)
    return np.clip(image, 0, 255).astype(np.uint8), names, instances, void


# ---------------------------------------------------------------------------------------------- files
def _annotation_xml(image_id: str, size: int, names: list[str], instances: np.ndarray) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synth"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size_element = ET.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_element, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for index, name in enumerate(names, start=1):
        ys, xs = np.nonzero(instances == index)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xs.min()), ("ymin", ys.min()), ("xmax", xs.max()), ("ymax", ys.max())):
            ET.SubElement(box, tag).text = str(int(value) + 1)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _write_example(out: Path, image_id: str, size: int, difficulty: str, rng: np.random.Generator) -> None:
    image, names, instances, void = _render(rng, size, difficulty)
    class_of_instance = np.array([0] + [SYNTH_CLASSES.index(n) + 1 for n in names], np.uint8)
    objects = np.where(void, VOID, instances).astype(np.uint8)
    semantic = np.where(void, VOID, class_of_instance[instances]).astype(np.uint8)
    Image.fromarray(image).save(out / "JPEGImages" / f"{image_id}.jpg", format="JPEG", quality=95)
    (out / "Annotations" / f"{image_id}.xml").write_bytes(_annotation_xml(image_id, size, names, objects))
    save_label_png(out / "SegmentationClass" / f"{image_id}.png", semantic)
    save_label_png(out / "SegmentationObject" / f"{image_id}.png", objects)


def _write_indexed_example(job: tuple[Path, str, int, str, int, int]) -> None:
    """Image ``index`` (1-based) from its own ``(seed, index)`` generator, whichever process draws it."""
    out, image_id, size, difficulty, seed, index = job
    _write_example(out, image_id, size, difficulty, np.random.default_rng([seed, index]))


def _prepare_output(out: Path) -> None:
    """Create ``out``, or clear it if it holds only files this generator writes; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise WsisInputError(f"{out}: exists and is not a folder")
    if out.is_dir():
        entries = sorted(out.rglob("*"))
        foreign = [
            p for p in entries
            if not (p.is_dir() and not p.is_symlink() and p.relative_to(out).as_posix() in _OWN_DIRS)
            and not (p.is_file() and _OWN_FILE.fullmatch(p.relative_to(out).as_posix()))
        ]
        if foreign:
            raise WsisInputError(
                f"{out}: folder is not empty and is not an earlier synthetic dataset "
                f"(e.g. {foreign[0].relative_to(out)}); choose a new or empty folder"
            )
        for path in entries:
            if path.is_file():
                path.unlink()
    for sub in _DATA_DIRS + _LIST_DIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)


def generate_dataset(
    out: Path,
    n_train: int,
    n_val: int,
    size: int,
    seed: int,
    on_progress: Progress = None,
    difficulty: str = "easy",
    workers: int = 1,
) -> None:
    """Write a synthetic VOC-layout dataset of ``n_train`` + ``n_val`` square images of ``size`` pixels.

    ``difficulty`` is ``easy`` (class colours), ``hard`` (colour says nothing) or ``parts`` (the class lives in a
    small part of a body shared by all classes; 1-9 instances); see the module text.

    ``out`` must be new, empty or an earlier output of this function (which is replaced).
    ``classes.txt`` is written last, so its presence marks a complete dataset.
    ``on_progress(done, total)`` is called after each image. ``workers`` > 1 draws the images in that
    many processes; the files are the same.
    """
    out = Path(out)
    for name, value in (("n_train", n_train), ("n_val", n_val), ("size", size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WsisInputError(f"{name} must be an integer, got {value!r}")
    if size < MIN_SIZE:
        raise WsisInputError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if n_train < 1:
        raise WsisInputError(f"n_train must be at least 1, got {n_train}")
    if n_val < 0:
        raise WsisInputError(f"n_val must be 0 or more, got {n_val}")
    if seed < 0:
        raise WsisInputError(f"seed must be 0 or more, got {seed}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WsisInputError(f"workers must be a positive integer, got {workers!r}")
    if difficulty not in DIFFICULTIES:
        raise WsisInputError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    _prepare_output(out)

    total = n_train + n_val
    ids = [f"synth_{i:06d}" for i in range(1, total + 1)]
    jobs = [(out, image_id, size, difficulty, seed, index) for index, image_id in enumerate(ids, start=1)]
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(Pool(workers))
            written = pool.imap(_write_indexed_example, jobs, chunksize=8)
        else:
            written = map(_write_indexed_example, jobs)
        for done, _ in enumerate(written, start=1):
            if on_progress is not None:
                on_progress(done, total)
    for sub in _LIST_DIRS:
        for split, split_ids in (("train", ids[:n_train]), ("val", ids[n_train:])):
            (out / sub / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in SYNTH_CLASSES))

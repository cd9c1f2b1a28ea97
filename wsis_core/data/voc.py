"""PASCAL VOC layout reader (works on VOC 2012, SBD-augmented lists and the synthetic generator).

Layout: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml``, ``ImageSets/Segmentation/<split>.txt``
(falls back to ``ImageSets/Main``), ``SegmentationObject/<id>.png`` and ``SegmentationClass/<id>.png``
(palette PNGs, 255 = void). Classes: ``classes.txt`` if present, else the 20 VOC classes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from wsis_core.data.confine import inside, read_text_inside
from wsis_core.data.images import image_size
from wsis_core.data.palette import read_label_png
from wsis_core.data.types import VOID, ImageGroundTruth, ImageInfo, InstanceMask
from wsis_core.errors import WsisInputError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def is_voc_layout(root: Path) -> bool:
    return (root / "JPEGImages").is_dir()


def read_classes(root: Path) -> list[str]:
    """Class names from ``classes.txt`` (index = line number from 1), else the VOC classes."""
    path = root / "classes.txt"
    if not (path.exists() or path.is_symlink()):
        return list(VOC_CLASSES)
    names = [line.strip() for line in read_text_inside(root, "classes.txt", "class list").splitlines() if line.strip()]
    if not names:
        raise WsisInputError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise WsisInputError(f"{path}: duplicate class names")
    return names


def split_names(root: Path) -> list[str]:
    """The splits that have a list file (ImageSets/Segmentation, then ImageSets/Main)."""
    return sorted({p.stem for sub in ("Segmentation", "Main") for p in (root / "ImageSets" / sub).glob("*.txt")})


def read_split(root: Path, split: str) -> list[str]:
    """Image ids of a split, in list-file order (their positions give the image ids 1..N)."""
    candidates = [f"ImageSets/{sub}/{split}.txt" for sub in ("Segmentation", "Main")]
    name = next((c for c in candidates if (root / c).exists() or (root / c).is_symlink()), None)
    if name is None:
        raise WsisInputError(f"{root / candidates[0]}: split list not found (also looked in ImageSets/Main)")
    path = root / name
    ids = [line.split()[0] for line in read_text_inside(root, name, "split list").splitlines() if line.strip()]
    if not ids:
        raise WsisInputError(f"{path}: split '{split}' is empty")
    return ids


def read_image_labels(xml_path: Path, classes: list[str]) -> tuple[int, ...]:
    """Image-level labels: the set of ``<object><name>`` of a VOC XML, as sorted class indices.

    Only the names are read; boxes in the same file are never looked at.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise WsisInputError(f"{xml_path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise WsisInputError(f"{xml_path}: not valid XML ({exc})") from None
    except OSError as exc:
        raise WsisInputError(f"{xml_path}: annotation file cannot be read ({type(exc).__name__})") from None
    index = {name: i + 1 for i, name in enumerate(classes)}
    labels = set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise WsisInputError(f"{xml_path}: unknown class name '{name}'")
        labels.add(index[name])
    return tuple(sorted(labels))


def read_images(root: Path, split: str, classes: list[str]) -> list[ImageInfo]:
    """The weak view of a split: image files, sizes and image-level labels."""
    images = []
    for image_id, name in enumerate(read_split(root, split), start=1):
        path = inside(root, Path("JPEGImages") / f"{name}.jpg", "image")  # an absolute name stays absolute
        width, height = image_size(path)
        labels = read_image_labels(inside(root, Path("Annotations") / f"{name}.xml", "annotation"), classes)
        images.append(ImageInfo(image_id, Path(f"{name}.jpg").name, path, width, height, labels))
    return images


def has_ground_truth(root: Path, info: ImageInfo) -> bool:
    """Whether both label PNGs of the image exist (VOC 2012's SBD-only images have none)."""
    stem = Path(info.file_name).stem
    return all((root / folder / f"{stem}.png").is_file() for folder in ("SegmentationObject", "SegmentationClass"))


def read_ground_truth(root: Path, info: ImageInfo) -> ImageGroundTruth:
    """Instances and void pixels of one image from its SegmentationObject/SegmentationClass PNGs."""
    stem = Path(info.file_name).stem
    objects = read_label_png(inside(root, Path("SegmentationObject") / f"{stem}.png", "instance mask"))
    semantic = read_label_png(inside(root, Path("SegmentationClass") / f"{stem}.png", "class mask"))
    if objects.shape != semantic.shape or objects.shape != (info.height, info.width):
        raise WsisInputError(
            f"{root / 'SegmentationObject' / (stem + '.png')}: size {objects.shape[::-1]} "
            f"does not match the image ({info.width}, {info.height}) or SegmentationClass"
        )
    void = (objects == VOID) | (semantic == VOID)
    instances = []
    for instance_id in np.unique(objects[~void]):
        if instance_id == 0:
            continue
        mask = (objects == instance_id) & ~void
        classes, counts = np.unique(semantic[mask], return_counts=True)
        category = int(classes[np.argmax(counts)])
        if category in (0, VOID):
            raise WsisInputError(
                f"{root / 'SegmentationClass' / (stem + '.png')}: instance {instance_id} has no class"
            )
        instances.append(InstanceMask(category, mask))
    return ImageGroundTruth(instances, void)

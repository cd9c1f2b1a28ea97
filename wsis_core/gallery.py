"""The review index of a round's pseudo labels: one row per train image (instances, scores, classes, change
from the previous round), sorted for review and paged, for galleries of thousands of images.

Review order puts first what most needs a look: images without any instance, then those whose weakest
instance scores lowest, then those that changed most from the previous round. The index of a label file
is computed once and kept (:func:`cached_index`) until the file, or the previous round's, changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from wsis_core.file_cache import LruCache, file_stamp
from wsis_core.io import read_json
from wsis_core.quality import by_image, match_instances

SORTS = ("review", "id")
CACHED_INDEXES = 8  # indexes kept in memory (rounds being reviewed at once)


@dataclass(frozen=True)
class GalleryItem:
    image_id: int
    file_name: str
    width: int
    height: int
    instances: int
    category_ids: tuple[int, ...]  # classes of the image's instances, sorted, each once
    min_score: float | None  # None: no instance, or instances without scores
    mean_score: float | None
    change: float | None  # see quality.Matching.change; None in round 1

    def review_key(self) -> tuple:
        return (self.instances > 0, math.inf if self.min_score is None else self.min_score,
                -(self.change or 0.0), self.image_id)


@dataclass(frozen=True)
class GalleryIndex:
    items: list[GalleryItem]  # in image id order
    categories: dict[int, str]  # category id -> class name
    class_counts: dict[int, tuple[int, int]]  # category id -> (instances, images)

    def page(self, limit: int, offset: int, category_id: int | None = None, sort: str = "review") -> tuple[int, list[GalleryItem]]:
        """(number of matching items, the ``limit`` items from ``offset``) of the images having an instance of
        ``category_id`` (None: all), in ``sort`` order (``review`` or ``id``)."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
        items = self.items if category_id is None else [i for i in self.items if category_id in i.category_ids]
        if sort == "review":
            items = sorted(items, key=GalleryItem.review_key)
        return len(items), items[offset : offset + limit]


def build_index(labels: dict, previous: dict | None = None) -> GalleryIndex:
    """The index of a COCO pseudo-label dict; ``previous``: the previous round's, for ``change``."""
    current, old = by_image(labels["annotations"]), by_image(previous["annotations"]) if previous else None
    items = []
    counts: dict[int, list[int]] = {category["id"]: [0, 0] for category in labels["categories"]}
    for image in sorted(labels["images"], key=lambda record: record["id"]):
        anns = current.get(image["id"], [])
        scores = [ann["score"] for ann in anns if ann.get("score") is not None]
        categories = tuple(sorted({ann["category_id"] for ann in anns}))
        for category in categories:
            entry = counts.setdefault(category, [0, 0])
            entry[0] += sum(ann["category_id"] == category for ann in anns)
            entry[1] += 1
        change = match_instances(old.get(image["id"], []), anns).change if old is not None else None
        items.append(GalleryItem(image["id"], image["file_name"], image["width"], image["height"], len(anns),
                                 categories, min(scores) if scores else None,
                                 sum(scores) / len(scores) if scores else None, change))
    names = {category["id"]: category["name"] for category in labels["categories"]}
    return GalleryIndex(items, names, {k: (v[0], v[1]) for k, v in counts.items()})


_indexes: LruCache[GalleryIndex] = LruCache(CACHED_INDEXES)


def cached_index(labels_path: Path, previous_path: Path | None = None) -> GalleryIndex:
    """:func:`build_index` of the label files, computed again only when either file's size or modification
    time changed (the last :data:`CACHED_INDEXES` indexes are kept)."""
    return _indexes.get(
        (file_stamp(labels_path), file_stamp(previous_path)),
        lambda: build_index(read_json(labels_path), read_json(previous_path) if previous_path is not None else None),
    )

"""The boxes of a round as COCO annotations, shared by the mil and ccgr stages and by the benches: the
annotation of one box, the ``box_source="seg"`` boxes around the SS score maps' components, CCGR (Eq. 3) of a
round's boxes, the pseudo masks cut from a round's boxes, and the COCO file over the train split that holds them.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import scipy.ndimage
import torch

from wsis_core.ccgr import ccgr_refine
from wsis_core.exports import with_coco_metadata
from wsis_core.progress import Progress
from wsis_core.pseudo_labels import make_instance_labels, to_coco_annotations
from wsis_core.round_context import RoundContext
from wsis_core.run_layout import CUE_INSTANCES, PEAKS, SCORE_MAPS, image_stem


def coco_file(ctx: RoundContext, annotations: list[dict]) -> dict:
    """A COCO annotation file over the train split (ids per the dataset id contract), with the ``info`` and
    ``licenses`` other tools' importers expect."""
    images = [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in ctx.train_set.images]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(ctx.config.classes)]
    return with_coco_metadata({"images": images, "categories": categories, "annotations": annotations})


def xyxy(bbox) -> list[float]:
    """A COCO ``[x, y, w, h]`` box as ``[x1, y1, x2, y2]``."""
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def box_annotation(ann_id: int, image_id: int, category: int, box, score: float, peak) -> dict:
    """The COCO annotation of an ``[x1, y1, x2, y2]`` box of a round, with its ``score`` and the ``peak`` (x, y)
    it came from (the stages and the benches write boxes in this form)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"id": ann_id, "image_id": image_id, "category_id": int(category), "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "score": float(score), "peak": [float(p) for p in peak]}


def segment_boxes(ctx: RoundContext) -> list[dict]:
    """The ``box_source="seg"`` boxes of the round (Table 3's "Seg only"): one box per connected component of
    each image-level class's argmax mask of the SS score maps S, at least ``pseudo.min_instance_pixels`` large."""
    annotations = []
    for info in ctx.train_set.images:
        scores = ctx.work.read_scores(SCORE_MAPS, image_stem(info))
        argmax = scores.argmax(axis=0)
        for category in info.labels:
            components, _ = scipy.ndimage.label(argmax == category)
            for index, found in enumerate(scipy.ndimage.find_objects(components), start=1):
                ys, xs = found
                area = int((components[found] == index).sum())
                if area < ctx.profile.pseudo.min_instance_pixels:
                    continue
                center = ((xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2)
                annotations.append(box_annotation(
                    len(annotations) + 1, info.id, category, (xs.start, ys.start, xs.stop, ys.stop),
                    float(scores[category][components == index].mean()), center,
                ))
    return annotations


def instance_boxes(ctx: RoundContext) -> list[dict]:
    """The ``mil.later_boxes="is"`` boxes of a later round: the boxes of its cue instances (the previous IS
    branch's confident train predictions, already class-wise non-maximum suppressed by Mask R-CNN, or the
    fallback labels of the cues stage), each with its score and its centre as peak."""
    cues, annotations = ctx.work.read_json(CUE_INSTANCES), []
    for info in ctx.train_set.images:
        for cue in cues[str(info.id)]:
            x1, y1, x2, y2 = xyxy(cue["bbox"])
            annotations.append(box_annotation(len(annotations) + 1, info.id, cue["category_id"], (x1, y1, x2, y2),
                                              cue["score"], ((x1 + x2) / 2, (y1 + y2) / 2)))
    return annotations


def annotations_by_image(annotations: list[dict]) -> defaultdict[int, list[dict]]:
    """Image id -> its ``annotations``, in their order (an image without any maps to an empty list)."""
    by_image = defaultdict(list)
    for ann in annotations:
        by_image[ann["image_id"]].append(ann)
    return by_image


def refine_boxes(ctx: RoundContext, annotations: list[dict], on_progress: Progress) -> list[dict]:
    """CCGR (Eq. 3) of the round's box ``annotations`` on their classes' SS score maps, with the peaks of the
    round folder; returns them with refined ``bbox`` and ``area``. Images go in chunks of ``ccgr.chunk_images``,
    all boxes of a chunk in one batched ``ccgr_refine``."""
    by_image = annotations_by_image(annotations)
    peaks = ctx.work.read_json(PEAKS)
    by_size = defaultdict(list)  # one batched call needs maps of one size
    for info in ctx.train_set.images:
        if by_image[info.id]:
            by_size[(info.height, info.width)].append(info)
    size = ctx.profile.ccgr.chunk_images
    chunks = [group[i : i + size] for group in by_size.values() for i in range(0, len(group), size)]
    refined = {}
    for done, chunk in enumerate(chunks, start=1):
        refined.update(_refine_chunk(ctx, chunk, by_image, peaks))
        if on_progress:
            on_progress(done, len(chunks))
    return [{**ann, **refined[ann["id"]]} for ann in annotations]


def _refine_chunk(ctx: RoundContext, infos, by_image, peaks) -> dict[int, dict]:
    maps, map_of, boxes, box_map, ids, peak_xy, peak_map = [], {}, [], [], [], [], []
    for info in infos:
        scores = ctx.work.read_scores(SCORE_MAPS, image_stem(info))
        for ann in by_image[info.id]:
            key = (info.id, ann["category_id"])
            if key not in map_of:
                map_of[key] = len(maps)
                maps.append(torch.from_numpy(scores[ann["category_id"]]))
                peak_xy += [(p["x"] + 0.5, p["y"] + 0.5) for p in peaks[str(info.id)] if p["class"] == key[1]]
                peak_map += [map_of[key]] * (len(peak_xy) - len(peak_map))
            boxes.append(xyxy(ann["bbox"]))
            box_map.append(map_of[key])
            ids.append(ann["id"])
    device, cfg = ctx.device, ctx.profile.ccgr
    result = ccgr_refine(
        torch.stack(maps).to(device), torch.tensor(boxes, dtype=torch.float32, device=device),
        torch.tensor(box_map, device=device),
        peaks=torch.tensor(peak_xy, dtype=torch.float32, device=device).view(-1, 2),
        peak_map_idx=torch.tensor(peak_map, dtype=torch.long, device=device),
        iters=cfg.iters, lr=cfg.lr, context_scale=cfg.context_scale, gap=cfg.gap, moves=cfg.moves,
    ).cpu()
    return {ann_id: {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            for ann_id, (x1, y1, x2, y2) in zip(ids, result.tolist())}


def box_masks_as_labels(ctx: RoundContext, position: int, anns: list[dict], mode: str, threshold: float) -> list[dict]:
    """COCO annotations of the pseudo instances of the train image at ``position``: its boxes ``anns``
    cropping the SS score map with ``mode`` and ``threshold`` (or cutting the image: ``grabcut``), the
    pseudo_labels stage's masks, with the boxes ``pseudo.box`` says."""
    if not anns:
        return []
    info, cfg = ctx.train_set.images[position], ctx.profile.pseudo
    instances = make_instance_labels(
        torch.from_numpy(ctx.work.read_scores(SCORE_MAPS, image_stem(info))),
        torch.tensor([xyxy(a["bbox"]) for a in anns], dtype=torch.float32),
        torch.tensor([a["category_id"] for a in anns]),
        torch.tensor([a["score"] for a in anns], dtype=torch.float32),
        mode=mode, threshold=threshold, min_pixels=cfg.min_instance_pixels,
        image=ctx.train_set.load_image(position) if mode == "grabcut" else None,
        grabcut_iters=cfg.grabcut_iters, grabcut_min_fill=cfg.grabcut_min_fill,
    )
    return to_coco_annotations(info.id, instances, box=cfg.box)


def masks_by_image(ctx: RoundContext, annotations: list[dict], mode: str, threshold: float,
                   on_progress: Progress = None) -> dict[int, list[dict]]:
    """Image id -> the pseudo instances :func:`box_masks_as_labels` cuts from that train image's box
    ``annotations``, for every train image (in the split's order), cut in ``pseudo.workers`` threads (OpenCV
    and torch release the GIL while they cut and crop)."""
    by_image = annotations_by_image(annotations)
    images, labels = ctx.train_set.images, {}
    with ThreadPoolExecutor(ctx.profile.pseudo.workers) as pool:
        cut = pool.map(lambda position: box_masks_as_labels(ctx, position, by_image.get(images[position].id, []),
                                                            mode, threshold), range(len(images)))
        for done, (info, instances) in enumerate(zip(images, cut), start=1):
            labels[info.id] = instances
            if on_progress:
                on_progress(done, len(images))
    return labels

"""Stage bodies of a round: each reads the artifacts of earlier stages from the round folder, calls
the pure ``wsis_core`` functions of its paper box, and writes its own artifacts (see
:mod:`wsis_core.workdir` for the layout). Training stages run inside ``weak_supervision()`` unless the
run is the fully supervised baseline, so they cannot reach training-split masks or boxes.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from wsis_core import masks
from wsis_core.affinity import make_semantic_labels
from wsis_core.backbone import to_input
from wsis_core.bags import build_bags, build_bags_from_boxes
from wsis_core.box_sources import (
    annotations_by_image,
    box_annotation,
    coco_file,
    instance_boxes,
    masks_by_image,
    refine_boxes,
    segment_boxes,
    xyxy,
)
from wsis_core.checkpoint import load_checkpoint, save_checkpoint
from wsis_core.classifier import build_classifier, train_classifier
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth
from wsis_core.data.guard import weak_supervision
from wsis_core.device import resolve_precision
from wsis_core.errors import WsisInputError
from wsis_core.evaluation import evaluate
from wsis_core.instance_seg.distributed import train_distributed
from wsis_core.instance_seg.engine import predict_instances
from wsis_core.instance_seg.model import load_mask_rcnn, mask_rcnn_for
from wsis_core.io import read_json, write_json
from wsis_core.mil import WSDDNHead, distinct_boxes, select_boxes, train_mil
from wsis_core.peaks import find_peaks
from wsis_core.progress import Phase, Progress, phases
from wsis_core.proposals import (
    PrecomputedProposals,
    ProposalStore,
    SelectiveSearchOptions,
    StraddlingProposals,
    compute_proposals,
)
from wsis_core.pseudo_labels import semantic_label_from_instances
from wsis_core.round_context import RoundContext
from wsis_core.run_layout import (
    AFFINITY,
    CCGR_BOXES,
    CLASSIFIER,
    CUE_INSTANCES,
    EVALUATION,
    METRICS,
    MIL,
    MIL_BOXES,
    MODEL,
    PEAKS,
    PROPAGATED,
    PROPOSALS,
    PSEUDO_LABELS,
    SCORE_MAPS,
    SEGMENTATION,
    SEMANTIC_LABELS,
    TRAIN_PREDICTIONS,
    VAL_PREDICTIONS,
    ground_truth_name,
    image_stem,
)
from wsis_core.segmentation import build_segmentation_model, predict_score_maps, train_segmentation


def _guard(ctx: RoundContext):
    """Training-split ground truth is off limits except for the fully supervised baseline."""
    return weak_supervision() if ctx.config.supervision == "weak" else nullcontext()


def round_classifier(ctx: RoundContext):
    """Round 1's trained classifier: its backbone initialises the other branches (shared layers)."""
    checkpoint = load_checkpoint(ctx.first().require(CLASSIFIER))
    model = build_classifier(len(ctx.config.classes), cfg=ctx.profile.cls, backbone=ctx.profile.backbone.without_weights())
    model.load_state_dict(checkpoint.state_dict)
    return model


def _confident(ctx: RoundContext, predictions: list[dict]) -> dict[int, list[dict]]:
    """The IS predictions on the train split that feed the next round, per image id: those of the
    image's labelled classes scoring at least ``instance.label_score``, or, for a labelled class with none
    that confident, its best prediction (image-level labels say the class is there)."""
    labels = {info.id: set(info.labels) for info in ctx.train_set.images}
    best: dict[tuple[int, int], dict] = {}
    kept = defaultdict(list)
    for p in predictions:
        key = (p["image_id"], p["category_id"])
        if p["category_id"] not in labels[p["image_id"]]:
            continue
        if p["score"] >= ctx.profile.instance.label_score:
            kept[p["image_id"]].append(p)
        elif key not in best or p["score"] > best[key]["score"]:
            best[key] = p
    for (image_id, category), p in best.items():
        if not any(q["category_id"] == category for q in kept[image_id]):
            kept[image_id].append(p)
    return kept


# ---------------------------------------------------------------------------------------- cues
def stage_cues(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """Round 1: classifier, PRM peaks, PSA semantic labels and propagated maps O.
    Round k > 1: the previous IS model's train-split predictions and the union of their masks per class."""
    return _first_round_cues(ctx, on_progress) if ctx.number == 1 else _later_round_cues(ctx, on_progress)


def _first_round_cues(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    ds, profile, work = ctx.train_set, ctx.profile, ctx.work
    train_p, peaks_p, labels_p = phases(on_progress, Phase("classifier training", "it", 100), Phase("peaks", "batch", 10),
                                          Phase("semantic labels (affinity training + propagation)", "step", 100))
    training = {"seed": profile.seed, "epoch_images": profile.epoch_images}
    inference = {"input_size": profile.input_size, "batch_size": profile.infer_batch_size}
    with _guard(ctx):
        classifier = build_classifier(len(ctx.config.classes), cfg=profile.cls, backbone=profile.backbone)
        classifier = train_classifier(ds, classifier, ctx.device, cfg=profile.cls, input_size=profile.input_size,
                                      **training, on_progress=train_p)
        save_checkpoint(work.path(CLASSIFIER), classifier, profile.to_dict(), ctx.config.classes)
        peaks = find_peaks(classifier, ds, ctx.device, cfg=profile.cls, **inference, on_progress=peaks_p)
        work.write_json(PEAKS, {str(info.id): p for info, p in zip(ds.images, peaks)})
        semantic = make_semantic_labels(classifier, ds, ctx.device, cfg=profile.aff, **inference, **training,
                                        on_progress=labels_p)
    save_checkpoint(work.path(AFFINITY), semantic.affinity_net, profile.to_dict(), ctx.config.classes)
    for info, label in zip(ds.images, semantic.labels):
        work.write_label(SEMANTIC_LABELS, image_stem(info), label.labels)
        full = np.stack([label.score_map(c) for c in range(len(ctx.config.classes) + 1)])
        work.write_scores(PROPAGATED, image_stem(info), full)
    return {"classifier": work.path(CLASSIFIER), "peaks": work.path(PEAKS), "semantic_labels": work.path(SEMANTIC_LABELS)}


def _later_round_cues(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    ds, profile, work = ctx.train_set, ctx.profile, ctx.work
    model = _load_mask_rcnn(ctx, ctx.previous().require(MODEL))
    with _guard(ctx):
        predictions = predict_instances(
            model, ds, device=ctx.device, score_threshold=profile.instance.score_threshold,
            batch_size=profile.infer_batch_size, on_progress=on_progress,
        )
    work.write_json(TRAIN_PREDICTIONS, predictions)
    work.write_json(PEAKS, ctx.first().read_json(PEAKS))
    confident = _confident(ctx, predictions)
    label_score, score_threshold = profile.instance.label_score, profile.instance.score_threshold
    unsure = sum(bool(kept) and all(p["score"] < label_score for p in kept) for kept in confident.values())
    if unsure:
        ctx.note(f"{unsure} of {len(ds)} images kept only IS predictions below instance.label_score "
                 f"({label_score:g}): the best one per labelled class")
    confident = _with_previous_labels(ctx, confident, f"had no IS prediction of their labelled classes "
                                                      f"(score >= instance.score_threshold {score_threshold:g})")
    work.write_json(CUE_INSTANCES, {str(i): kept for i, kept in confident.items()})
    for info in ds.images:
        instances = [(p["category_id"], masks.decode(p["segmentation"])) for p in confident[info.id]]
        work.write_label(SEMANTIC_LABELS, image_stem(info), semantic_label_from_instances(instances, info.height, info.width))
    return {"train_predictions": work.path(TRAIN_PREDICTIONS), "cue_instances": work.path(CUE_INSTANCES),
            "semantic_labels": work.path(SEMANTIC_LABELS)}


def _with_previous_labels(ctx: RoundContext, by_image: dict[int, list[dict]], why: str) -> dict[int, list[dict]]:
    """Rounds never die on weak evidence: an image of the train split without instances in ``by_image`` takes
    the previous round's pseudo labels of that image (which already fell back in turn); noted with ``why``."""
    previous = annotations_by_image(ctx.previous().read_json(PSEUDO_LABELS)["annotations"])
    empty = [info.id for info in ctx.train_set.images if not by_image.get(info.id)]
    filled = [i for i in empty if previous[i]]
    if empty:
        ctx.note(f"{len(empty)} of {len(ctx.train_set)} images {why}; {len(filled)} of them take round "
                 f"{ctx.number - 1}'s pseudo labels instead")
    return {info.id: by_image.get(info.id) or previous[info.id] for info in ctx.train_set.images}


# ------------------------------------------------------------------------------------------ ss
def stage_ss(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """SS branch (FCN + pyramid pooling) on the round's semantic labels; writes score maps S."""
    ds, profile, work = ctx.train_set, ctx.profile, ctx.work
    labels = [work.read_label(SEMANTIC_LABELS, image_stem(info)) for info in ds.images]
    model = build_segmentation_model(len(ctx.config.classes), copy.deepcopy(round_classifier(ctx).backbone),
                                     cfg=profile.seg)
    if ctx.number > 1:  # warm start from the previous round's SS branch
        model.load_state_dict(load_checkpoint(ctx.previous().require(SEGMENTATION)).state_dict)
    train_p, predict_p = phases(on_progress, Phase("training", "it", 100), Phase("score maps", "batch", 20))
    with _guard(ctx):
        model = train_segmentation(ds, labels, model, ctx.device, cfg=profile.seg, input_size=profile.input_size,
                                   seed=profile.seed, epoch_images=profile.epoch_images, on_progress=train_p)
        maps = predict_score_maps(model, ds, ctx.device, cfg=profile.seg, input_size=profile.input_size,
                                  batch_size=profile.infer_batch_size, on_progress=predict_p)
        for info, scores in zip(ds.images, maps):
            work.write_scores(SCORE_MAPS, image_stem(info), scores)
    save_checkpoint(work.path(SEGMENTATION), model, profile.to_dict(), ctx.config.classes)
    return {"model": work.path(SEGMENTATION), "score_maps": work.path(SCORE_MAPS)}


# ----------------------------------------------------------------------------------- proposals
def proposal_source(ctx: RoundContext):
    """The run's proposals: the selective-search cache of ``RUN/proposals`` or the user's precomputed folder."""
    if ctx.config.proposals == "selective-search":
        return ProposalStore(ctx.run_dir / PROPOSALS)
    return PrecomputedProposals.for_dataset(ctx.config.proposals, ctx.train_set)


def stage_proposals(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """Selective search once per run (cached in ``RUN/proposals``); nothing to do for a precomputed
    folder (MCG files), which the mil stage reads in place."""
    if ctx.config.proposals == "selective-search":
        options = SelectiveSearchOptions(max_proposals=ctx.profile.mil.proposal_max)
        compute_proposals(ctx.train_set, ctx.run_dir / PROPOSALS, workers=ctx.profile.mil.proposal_workers,
                          options=options, on_progress=on_progress, progress_bar=False)
        return {"proposals": ctx.run_dir / PROPOSALS}
    return {}  # precomputed files belong to the user, not to the run


# ----------------------------------------------------------------------------------------- mil
class _StageFeatures(torch.nn.Module):
    """The shared backbone's features at one stage, as the WSDDN head takes them."""

    def __init__(self, backbone, stage: int):
        super().__init__()
        self.backbone, self.stage = backbone, stage

    def forward(self, images):
        return self.backbone(images)[self.stage]


def round_bags(ctx: RoundContext, proposals, on_progress: Progress):
    """The round's MIL bags, image id -> bags: a bag per PRM peak (round 1; B_S of Eq. 4 per ``mil.objectness``),
    per confident IS box (later)."""
    ids = [info.id for info in ctx.train_set.images]
    if ctx.number == 1:  # a bag per PRM peak, ranked by Eq. 4 with the propagated map O
        peaks = ctx.work.read_json(PEAKS)
        stems = {info.id: image_stem(info) for info in ctx.train_set.images}
        if ctx.profile.mil.objectness == "straddling":
            position = {info.id: k for k, info in enumerate(ctx.train_set.images)}
            proposals = StraddlingProposals(proposals, lambda i: ctx.train_set.load_image(position[i]),
                                            ctx.profile.mil.superpixel_scale)
        return build_bags(
            ids, lambda i: peaks[str(i)], lambda i: ctx.work.read_scores(PROPAGATED, stems[i]), proposals,
            cfg=ctx.profile.mil, on_progress=on_progress,
        ).bags_by_image
    cues = ctx.work.read_json(CUE_INSTANCES)  # the confident IS predictions, or the fallback labels
    predicted = {
        i: (torch.tensor([xyxy(p["bbox"]) for p in cues[str(i)]], dtype=torch.float32).view(-1, 4),
            torch.tensor([p["category_id"] for p in cues[str(i)]], dtype=torch.long))
        for i in ids
    }
    return build_bags_from_boxes(predicted, proposals, cfg=ctx.profile.mil, on_progress=on_progress)


def stage_mil(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """Boxes of the round: WSDDN (Eq. 2) over the bags, or (``box_source="seg"``, Table 3's
    "Seg only") the boxes around connected components of the SS class masks, or (a later round with
    ``mil.later_boxes="is"``) the previous IS branch's confident boxes."""
    if ctx.config.box_source == "seg":
        annotations = segment_boxes(ctx)
    elif ctx.number > 1 and ctx.profile.mil.later_boxes == "is":
        annotations = instance_boxes(ctx)
        ctx.note(f"{len(annotations)} boxes are the previous IS branch's (mil.later_boxes is): no MIL branch")
    else:
        annotations = _mil_boxes(ctx, on_progress)
    ctx.work.write_json(MIL_BOXES, coco_file(ctx, annotations))
    return {"mil_boxes": ctx.work.path(MIL_BOXES)}


def _mil_boxes(ctx: RoundContext, on_progress: Progress) -> list[dict]:
    ds, profile, cfg = ctx.train_set, ctx.profile, ctx.profile.mil
    proposals = proposal_source(ctx)
    bag_p, train_p, select_p = phases(on_progress, Phase("bags", "img", 10), Phase("training", "it", 100),
                                      Phase("box selection", "img", 20))
    backbone = _StageFeatures(copy.deepcopy(round_classifier(ctx).backbone), cfg.feature_stage)
    head = WSDDNHead(backbone.backbone.channels[cfg.feature_stage], len(ctx.config.classes), hidden=cfg.hidden)

    def transform(image):
        return to_input(image, profile.input_size)[None]

    with _guard(ctx):
        bags = round_bags(ctx, proposals, bag_p)
        train_mil(backbone, head, ds, bags, proposals, transform=transform, cfg=cfg, device=ctx.device,
                  seed=profile.seed, epoch_images=profile.epoch_images, on_progress=train_p)
        selected = select_boxes(backbone, head, ds, bags, proposals, transform=transform, device=ctx.device,
                                on_progress=select_p)
    save_checkpoint(ctx.work.path(MIL), torch.nn.ModuleList([backbone, head]), profile.to_dict(), ctx.config.classes)
    annotations = []
    for image_id, boxes in selected.items():
        for index in distinct_boxes(boxes, cfg.nms_iou):
            box, source = boxes[index], bags[image_id][index].source
            peak = source if len(source) == 2 else ((source[0] + source[2]) / 2, (source[1] + source[3]) / 2)
            annotations.append(box_annotation(len(annotations) + 1, image_id, box.label, box.box, box.score, peak))
    return annotations


# ---------------------------------------------------------------------------------------- ccgr
def stage_ccgr(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """CCGR (Eq. 3) of every box on its class's SS score map, with the multi-peak stop rule, from round
    ``ccgr.first_round`` on; ``ccgr=False`` (Table 3's ablation) and earlier rounds keep the boxes as they are."""
    boxes = ctx.work.read_json(MIL_BOXES)
    first = ctx.profile.ccgr.first_round
    if ctx.config.ccgr and ctx.number >= first:
        boxes = {**boxes, "annotations": refine_boxes(ctx, boxes["annotations"], on_progress)}
    elif ctx.config.ccgr:
        ctx.note(f"MIL boxes kept as they are: CCGR refines from round {first} on (ccgr.first_round)")
    ctx.work.write_json(CCGR_BOXES, boxes)
    return {"ccgr_boxes": ctx.work.path(CCGR_BOXES)}


# ------------------------------------------------------------------------------- pseudo labels
def stage_pseudo_labels(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """Crop the SS score map with the refined boxes: the pseudo instance labels of the IS branch.

    Rounds never die on weak evidence: in later rounds an image left without a pseudo label takes the
    previous round's; a round-1 set left empty takes the whole boxes as masks. Both are noted."""
    boxes, cfg = ctx.work.read_json(CCGR_BOXES)["annotations"], ctx.profile.pseudo
    labels = masks_by_image(ctx, boxes, cfg.crop_mode, cfg.crop_threshold, on_progress)
    if ctx.number > 1:
        labels = _with_previous_labels(ctx, labels, "got no pseudo label from their boxes")
    elif not any(labels.values()) and boxes:
        ctx.note(f"no box of the {len(ctx.train_set)} images left a pseudo mask ({cfg.crop_mode} crop of S): "
                 "the whole boxes are the masks instead")
        labels = masks_by_image(ctx, boxes, "threshold", -1.0)
    annotations = []
    for info in ctx.train_set.images:
        renumbered = [{**ann, "id": len(annotations) + k} for k, ann in enumerate(labels[info.id], start=1)]
        annotations += renumbered
    ctx.work.write_json(PSEUDO_LABELS, coco_file(ctx, annotations))
    return {"pseudo_labels": ctx.work.path(PSEUDO_LABELS)}


# ------------------------------------------------------------------------------------ is_train
def _load_mask_rcnn(ctx: RoundContext, path: Path):
    return load_mask_rcnn(path, len(ctx.config.classes) + 1, cfg=ctx.profile.instance, backbone=ctx.profile.backbone)


def _training_annotations(ctx: RoundContext) -> list[dict]:
    if ctx.config.supervision == "full":  # the upper bound of Table 1: true training masks
        truth = open_ground_truth(ctx.config.data, ctx.config.train_split)
        if not truth.images:
            raise WsisInputError(f"no ground truth for split {ctx.config.train_split}: --supervision full needs masks")
        if len(truth.images) < truth.total:
            ctx.note(f"trained on the {len(truth.images)} of {truth.total} train images that have ground truth")
        return ground_truth_to_coco(truth)["annotations"]
    return ctx.work.read_json(PSEUDO_LABELS)["annotations"]


def stage_is_train(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """Mask R-CNN (the IS branch) on the pseudo labels, warm-started from the previous round; the checkpoint
    records the precision it was trained in."""
    profile = ctx.profile
    annotations = _training_annotations(ctx)
    if ctx.number > 1:
        model = _load_mask_rcnn(ctx, ctx.previous().require(MODEL))
    else:
        model = mask_rcnn_for(len(ctx.config.classes) + 1, cfg=profile.instance, backbone=profile.backbone)
    cfg = profile.instance.model_copy(update={"precision": resolve_precision(profile.instance.precision, ctx.device)})
    with _guard(ctx):
        train_distributed(model, ctx.train_set, annotations, devices=profile.devices, cfg=cfg, device=ctx.device,
                          seed=profile.seed, epoch_images=profile.epoch_images, on_progress=on_progress)
    trained_with = {**profile.to_dict(), "instance": cfg.model_dump(), "round": ctx.number}  # "auto" resolved
    save_checkpoint(ctx.work.path(MODEL), model, trained_with, ctx.config.classes)
    return {"model": ctx.work.path(MODEL)}


# ------------------------------------------------------------------------------------ evaluate
def stage_evaluate(ctx: RoundContext, on_progress: Progress) -> dict[str, Path]:
    """IS branch only (no proposals, no CCGR) on the val split; metrics against the ground truth of the
    val images that have it. Evaluation is optional: without a val split, or without ground truth in
    it, the stage records why in ``evaluation.json`` (and its message) and writes no metrics."""
    split = ctx.config.val_split
    if split is None:
        return _record_evaluation(ctx, {"split": None, "images": 0, "evaluated_images": 0},
                                  "no val split: metrics not computed")
    model = _load_mask_rcnn(ctx, ctx.work.require(MODEL))
    predictions = predict_instances(model, ctx.val_set, device=ctx.device, score_threshold=ctx.profile.instance.score_threshold,
                                    batch_size=ctx.profile.infer_batch_size, on_progress=on_progress)
    ctx.work.write_json(VAL_PREDICTIONS, predictions)
    artifacts = {"val_predictions": ctx.work.path(VAL_PREDICTIONS)}
    gt_path = ctx.run_dir / ground_truth_name(split)
    if not gt_path.exists():
        write_json(gt_path, ground_truth_to_coco(open_ground_truth(ctx.config.data, split)))
    gt = read_json(gt_path)
    record = {"split": split, "images": len(ctx.val_set), "evaluated_images": len(gt["images"])}
    if not gt["images"]:
        return {**artifacts, **_record_evaluation(ctx, record, f"no ground truth for split {split}: metrics not computed")}
    covered = {image["id"] for image in gt["images"]}
    scored = [p for p in predictions if p["image_id"] in covered]
    ctx.work.write_json(METRICS, evaluate(gt, scored, results_name=VAL_PREDICTIONS))
    artifacts["metrics"] = ctx.work.path(METRICS)
    message = (f"evaluated on all {len(covered)} images of split {split}" if len(covered) == len(ctx.val_set)
               else f"evaluated on the {len(covered)} of {len(ctx.val_set)} images of split {split} that have ground truth")
    return {**artifacts, **_record_evaluation(ctx, record, message)}


def _record_evaluation(ctx: RoundContext, record: dict, message: str) -> dict[str, Path]:
    """``evaluation.json``: what the evaluate stage measured on (split, images, evaluated images) and why."""
    ctx.note(message)
    ctx.work.write_json(EVALUATION, {**record, "message": message})
    return {"evaluation": ctx.work.path(EVALUATION)}


# The stages of a round in their order: the one list that rounds, the command line and the workers use.
STAGES = {
    "cues": stage_cues, "ss": stage_ss, "proposals": stage_proposals, "mil": stage_mil, "ccgr": stage_ccgr,
    "pseudo_labels": stage_pseudo_labels, "is_train": stage_is_train, "evaluate": stage_evaluate,
}

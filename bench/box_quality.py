"""Box quality of round 1: MIL (issue 5) and CCGR (issue 6) on the train split of the synthetic data.

One round-1 run of the real stages (``cues``, ``ss``, ``proposals``, ``mil``, ``ccgr``, ``pseudo_labels``,
through :func:`wsis_core.rounds.run_stage_in` in one work folder, as ``wsis cues/mil/ccgr`` do) is
measured against the train split's ground truth. The ground truth is read only here, for evaluation
(``open_ground_truth`` outside every stage); the stages run under ``weak_supervision()`` as always.

Issue 5 (MIL), mAP^b_0.5 of

* (a) the MIL boxes (``mil_boxes.json``: WSDDN, Eq. 2, over the bags of Eq. 4);
* (b) the top-1 Eq. 4 proposal of every bag, without MIL (the bags of :func:`wsis_core.stages.round_bags`,
  i.e. :func:`wsis_core.bags.build_bags` exactly as the mil stage builds them; each bag's best-ranked
  candidate with the bag's class), scored by its Eq. 4 rank R(B), and, second row, by the peak's
  classifier response;
* (c) "Seg only" (Table 3): boxes around the connected components of the SS class masks
  (:func:`wsis_core.box_sources.segment_boxes`, what ``--box-source seg`` uses);

plus the selective-search speed (proposals/s and images/s of the proposals stage).

Issue 6 (CCGR): mAP^b_0.5 of the MIL boxes vs the CCGR-refined boxes (``ccgr_boxes.json``); mAP^r of the
pseudo masks (``pseudo_labels.json``) with CCGR and with ``--no-ccgr`` (the MIL boxes cropped; the
ccgr and pseudo_labels stages run again with ``ccgr=False`` in ``WORK/no_ccgr/``, which links the
score maps, peaks and MIL boxes of WORK); and the Fig. 5-style curve, mAP^b_0.5 of the refined boxes
against the CCGR iteration count. Each point of the curve is a separate ``ccgr_refine`` run of k
iterations (the ccgr stage's own :func:`wsis_core.box_sources.refine_boxes` with ``ccgr.iters=k``) on the same
MIL boxes, score maps and peaks: a run of k iterations anneals its step size to ~0 at k, so the curve
shows the result for an iteration budget, not the trajectory of one 200-iteration run.

Diagnostics (evaluation only): PRM peak precision / instance recall, selective-search recall
(ground-truth instances with a proposal of IoU >= 0.5), the bag oracle (bags whose candidates hold a
proposal of IoU >= 0.5 with an instance of the bag's class), for every box set its precision
(boxes of IoU >= 0.5 with an instance of their class) and recall (instances matched by some box), and
the same CCGR curve with the ground-truth class masks as the score maps S (``WORK/oracle_s``), which
separates CCGR itself from the quality of the SS branch's maps, and CCGR on two more score maps that
split that quality into its parts (``WORK/ss_hard``: the SS argmax as a hard map, i.e. the SS regions
without their soft scores; ``WORK/oracle_coarse``: the ground-truth masks at the SS branch's output
resolution, i.e. perfect regions at the SS resolution), each with the mIoU of its argmax.

    PYTHONPATH=. python bench/box_quality.py --generate /tmp/synth --train 400 --val 100 --size 160 --seed 0
    PYTHONPATH=. python bench/box_quality.py --data /tmp/synth --work /tmp/bq_work   # reuses finished stages

``--work DIR`` keeps the run folder; a second call with the same configuration only evaluates (a
folder written by ``wsis cues/mil/ccgr`` with the same settings is accepted too). ``--redo STAGE``
recomputes that stage and every later one (e.g. ``--redo mil --set mil.lam=1``); the configuration
of the folder is then replaced by this call's, and the report names the stages that were reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from cues_quality import Confusion
from reporting import Progress, add_profile_arguments, fmt, profile_overrides, report_header, write_report
from synthetic_data import add_dataset_arguments, prepare_dataset
from wsis_core import box_sources, masks, run_layout, stages
from wsis_core.bags import rank_scores
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth, open_weak_dataset
from wsis_core.data.guard import weak_supervision
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.evaluation import evaluate
from wsis_core.io import read_json, write_json
from wsis_core.proposals import ProposalStore
from wsis_core.round_context import RoundContext, RunConfig
from wsis_core.rounds import run_stage_in, stage_done
from wsis_core.run_layout import marker_name
from wsis_core.workdir import WorkDir

RESULTS = Path(__file__).resolve().parent / "results"
ROUND1 = ("cues", "ss", "proposals", "mil", "ccgr", "pseudo_labels")
CURVE_ITERS = (0, 10, 25, 50, 100, 150, 200)
NO_CCGR = "no_ccgr"
LINKED = (run_layout.SCORE_MAPS, run_layout.PEAKS, run_layout.MIL_BOXES)  # what the no-CCGR stages read from WORK


# ------------------------------------------------------------------------------------------ the run
def same_run(a: RunConfig, b: RunConfig) -> bool:
    """Same run up to how the overrides are spelled (e.g. an override equal to the profile's own value)."""
    strip = dict(overrides={})
    return dataclasses.replace(a, **strip) == dataclasses.replace(b, **strip) and a.build_profile() == b.build_profile()


def open_run(work: Path, config: RunConfig, redo: str | None) -> tuple[RunConfig, list[str]]:
    """Write or check ``WORK/config.json``; with ``redo``, drop the markers of that stage and later.
    Returns the configuration the folder holds and the stages whose results are reused."""
    path = work / "config.json"
    if path.exists():
        existing = RunConfig.from_dict(read_json(path))
        if redo is None and not same_run(existing, config):
            raise WsisInputError(f"{work}: its stages were run with another configuration "
                                 f"({existing.to_dict()}); use --redo STAGE or another --work")
        if redo is None:
            config = existing  # as the folder's stages ran
        else:
            write_json(path, config.to_dict())
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, config.to_dict())
    if redo is not None:
        for stage in ROUND1[ROUND1.index(redo):]:
            (work / marker_name(stage)).unlink(missing_ok=True)
        shutil.rmtree(work / NO_CCGR, ignore_errors=True)
    reused = [s for s in ROUND1 if stage_done(WorkDir(work), s)]
    return config, reused


def run_round1(ctx: RoundContext) -> None:
    for stage in ROUND1:
        if not stage_done(ctx.work, stage):
            print(f"stage {stage} ...", flush=True)
        run_stage_in(ctx, stage, Progress(stage))


def run_without_ccgr(work: Path, config: RunConfig, device) -> RoundContext:
    """The ccgr (ccgr=False: the MIL boxes kept) and pseudo_labels stages in ``WORK/no_ccgr``."""
    folder = work / NO_CCGR
    folder.mkdir(exist_ok=True)
    for name in LINKED:
        link = folder / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    ctx = RoundContext(work, 1, dataclasses.replace(config, ccgr=False), device, round_dir=folder)
    for stage in ("ccgr", "pseudo_labels"):
        run_stage_in(ctx, stage, Progress(f"{stage} (no CCGR)"))
    return ctx


# ------------------------------------------------------------------------------------- box sources
def top1_eq4_boxes(ctx: RoundContext) -> tuple[list[dict], list[dict], dict]:
    """Baseline (b): the best-ranked Eq. 4 candidate of every bag of the mil stage, with the bag's class.

    Returns the annotations scored by R(B) (Eq. 4), the same boxes scored by the peak's response, and
    the bags (image id -> bags)."""
    proposals = stages.proposal_source(ctx)
    with weak_supervision():
        bags = stages.round_bags(ctx, proposals, None)
    peaks = ctx.work.read_json(run_layout.PEAKS)
    stems = {info.id: Path(info.file_name).stem for info in ctx.train_set.images}
    by_rank, by_peak = [], []
    for image_id, image_bags in bags.items():
        if not image_bags:
            continue
        boxes, objectness = proposals.proposals_for(image_id)
        foreground = ctx.work.read_scores(run_layout.PROPAGATED, stems[image_id])
        peak_score = {(p["class"], float(p["x"]), float(p["y"])): p["score"] for p in peaks[str(image_id)]}
        for bag in image_bags:
            best = int(bag.proposal_indices[0])
            rank = rank_scores(boxes[best : best + 1], objectness[best : best + 1], foreground[bag.label][None],
                               lam=ctx.profile.mil.lam)
            args = (image_id, bag.label, boxes[best])
            by_rank.append(box_sources.box_annotation(len(by_rank) + 1, *args, float(rank), bag.source))
            score = peak_score.get((bag.label, *bag.source), 0.0)
            by_peak.append(box_sources.box_annotation(len(by_peak) + 1, *args, float(score), bag.source))
    return by_rank, by_peak, bags


def curve(config: RunConfig, work: Path, device, mil: list[dict], gt: dict, iters: list[int],
          round_dir: Path | None = None, label: str = "curve") -> dict[int, dict]:
    """mAP^b_0.5 (and box diagnostics) of the MIL boxes refined by the ccgr stage's code with k iterations,
    on the score maps and peaks of ``round_dir`` (default: WORK)."""
    points = {}
    for k in iters:
        overrides = {**config.overrides, "ccgr.iters": k}
        ctx = RoundContext(work, 1, dataclasses.replace(config, overrides=overrides), device, round_dir=round_dir or work)
        started = time.perf_counter()
        refined = box_sources.refine_boxes(ctx, mil, None)
        seconds = time.perf_counter() - started
        points[k] = {**box_metrics(gt, refined), "seconds": seconds}
        print(f"  {label}: {k} iterations: mAP^b_0.5 {points[k]['mAP_b@0.5']:.2f} ({seconds:.1f} s)", flush=True)
    return points


def class_label_maps(ctx: RoundContext, gt: dict) -> dict[int, np.ndarray]:
    """Evaluation only: image id -> ground-truth class map [H, W] (0 background, void as background)."""
    by_image = defaultdict(list)
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    labels = {}
    for info in ctx.train_set.images:
        label = np.zeros((info.height, info.width), np.int64)
        for ann in by_image[info.id]:
            label[masks.decode(ann["segmentation"])] = ann["category_id"]
        labels[info.id] = label
    return labels


def one_hot(label: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes + 1, dtype=np.float32)[label].transpose(2, 0, 1)


def ss_resolution(label: np.ndarray, num_classes: int, cells: int) -> np.ndarray:
    """A one-hot class map reduced to the SS branch's ``cells`` x ``cells`` output grid (area average) and
    bilinearly upsampled back, as the ss stage upsamples its logits: what a perfect SS branch could give."""
    coarse = F.adaptive_avg_pool2d(torch.from_numpy(one_hot(label, num_classes))[None], cells)
    return F.interpolate(coarse, size=label.shape, mode="bilinear", align_corners=False)[0].numpy()


# Score maps S for the diagnostic table of CCGR: name -> (description, S from (SS scores, ground-truth class
# map, number of classes, SS grid cells)).
SCORE_MAP_VARIANTS = {
    "ss_hard": ("SS branch, argmax as one-hot (hard S)",
                lambda ss, label, n, cells: one_hot(ss.argmax(axis=0), n)),
    "oracle_coarse": ("ground-truth class masks at the SS output resolution",
                      lambda ss, label, n, cells: ss_resolution(label, n, cells)),
    "oracle_s": ("ground-truth class masks (full resolution)", lambda ss, label, n, cells: one_hot(label, n)),
}


def diagnostic_score_maps(config: RunConfig, work: Path, device, labels: dict[int, np.ndarray], variant: str) -> Path:
    """Diagnostic only: ``WORK/<variant>`` with the score maps S of :data:`SCORE_MAP_VARIANTS` and WORK's
    peaks, for the ccgr stage's code. Separates CCGR itself from the quality of the SS branch's maps."""
    folder = work / variant
    ctx = RoundContext(work, 1, config, device, round_dir=folder)
    source = WorkDir(work)
    if not (folder / run_layout.PEAKS).exists():
        folder.mkdir(exist_ok=True)
        (folder / run_layout.PEAKS).symlink_to(Path("..") / run_layout.PEAKS)
    profile, make = config.build_profile(), SCORE_MAP_VARIANTS[variant][1]
    cells = profile.input_size // profile.backbone.output_stride
    for info in ctx.train_set.images:
        stem = Path(info.file_name).stem
        scores = make(source.read_scores(run_layout.SCORE_MAPS, stem), labels[info.id], len(config.classes), cells)
        ctx.work.write_scores(run_layout.SCORE_MAPS, stem, scores)
    return folder


def score_map_miou(ctx: RoundContext, labels: dict[int, np.ndarray], maps: WorkDir) -> float:
    """mIoU (background + classes) of argmax S in ``maps`` against the ground-truth class maps of the train split."""
    conf = Confusion(len(ctx.config.classes))
    for info in ctx.train_set.images:
        conf.add(maps.read_scores(run_layout.SCORE_MAPS, Path(info.file_name).stem).argmax(axis=0), labels[info.id])
    return conf.miou()


# ----------------------------------------------------------------------------------------- metrics
def as_results(annotations: list[dict], with_masks: bool = False) -> list[dict]:
    """A COCO annotation list (with scores) as the results list :func:`wsis_core.evaluation.evaluate` takes."""
    keys = ("image_id", "category_id", "bbox", "score") + (("segmentation",) if with_masks else ())
    return [{k: a[k] for k in keys} for a in annotations]


def _xyxy(bboxes) -> torch.Tensor:
    b = torch.as_tensor(np.asarray(bboxes, dtype=np.float64).reshape(-1, 4))
    return torch.cat((b[:, :2], b[:, :2] + b[:, 2:]), dim=1)


def gt_boxes(gt: dict) -> dict[tuple[int, int], torch.Tensor]:
    """(image id, class) -> ground-truth boxes [n, 4] xyxy."""
    grouped = defaultdict(list)
    for ann in gt["annotations"]:
        grouped[ann["image_id"], ann["category_id"]].append(ann["bbox"])
    return {key: _xyxy(b) for key, b in grouped.items()}


def box_metrics(gt: dict, annotations: list[dict], with_masks: bool = False) -> dict:
    """wsis_core.evaluation metrics plus: boxes, boxes/image, precision@0.5 (box IoU >= 0.5 with an
    instance of its class), recall@0.5 (instances with such a box), mean best IoU of the boxes."""
    metrics = evaluate(gt, as_results(annotations, with_masks))
    truth = gt_boxes(gt)
    grouped = defaultdict(list)
    for ann in annotations:
        grouped[ann["image_id"], ann["category_id"]].append(ann["bbox"])
    good = best_sum = 0.0
    found = 0
    for key, bboxes in grouped.items():
        if key not in truth:
            continue
        iou = box_iou(_xyxy(bboxes), truth[key])
        good += float((iou.max(dim=1).values >= 0.5).sum())
        best_sum += float(iou.max(dim=1).values.sum())
        found += int((iou.max(dim=0).values >= 0.5).sum())
    n, n_gt = len(annotations), len(gt["annotations"])
    return {**metrics, "boxes": n, "boxes_per_image": n / max(len(gt["images"]), 1),
            "precision@0.5": good / max(n, 1), "recall@0.5": found / max(n_gt, 1), "mean_best_iou": best_sum / max(n, 1)}


def peak_and_bag_diagnostics(ctx: RoundContext, gt: dict, bags: dict) -> dict:
    """Evaluation-only diagnostics of the MIL inputs: peaks, selective-search recall, bag oracle."""
    peaks = ctx.work.read_json(run_layout.PEAKS)
    instances = defaultdict(list)  # image id -> (class, mask)
    for ann in gt["annotations"]:
        instances[ann["image_id"]].append((ann["category_id"], masks.decode(ann["segmentation"])))
    n_peaks = on_object = 0
    hit_instances = 0
    for info in ctx.train_set.images:
        hit = [False] * len(instances[info.id])
        for p in peaks[str(info.id)]:
            n_peaks += 1
            inside = [j for j, (c, m) in enumerate(instances[info.id]) if c == p["class"] and m[p["y"], p["x"]]]
            on_object += bool(inside)
            for j in inside:
                hit[j] = True
        hit_instances += sum(hit)
    truth = gt_boxes(gt)
    proposals = stages.proposal_source(ctx)
    recalled = n_proposals = 0
    n_bags = oracle = top1_good = relaxed = 0
    bag_sizes = []
    for info in ctx.train_set.images:
        boxes, _ = proposals.proposals_for(info.id)
        boxes = torch.as_tensor(boxes, dtype=torch.float64)
        n_proposals += len(boxes)
        all_truth = [t for (i, _c), t in truth.items() if i == info.id]
        if all_truth and len(boxes):
            recalled += int((box_iou(torch.cat(all_truth), boxes).max(dim=1).values >= 0.5).sum())
        for bag in bags.get(info.id, []):
            n_bags += 1
            relaxed += not bag.exclusive
            bag_sizes.append(len(bag.proposal_indices))
            target = truth.get((info.id, bag.label))
            if target is None:
                continue
            iou = box_iou(boxes[bag.proposal_indices], target).max(dim=1).values
            oracle += bool((iou >= 0.5).any())
            top1_good += bool(iou[0] >= 0.5)
    n_gt = len(gt["annotations"])
    return {
        "peaks": n_peaks, "peaks_per_image": n_peaks / max(len(ctx.train_set), 1),
        "peak_precision": on_object / max(n_peaks, 1), "instance_recall_peaks": hit_instances / max(n_gt, 1),
        "proposals_per_image": n_proposals / max(len(ctx.train_set), 1),
        "ss_recall@0.5": recalled / max(n_gt, 1),
        "bags": n_bags, "relaxed_bags": relaxed, "dropped_peaks": n_peaks - n_bags,
        "mean_bag_size": float(np.mean(bag_sizes)) if bag_sizes else 0.0,
        "bag_oracle@0.5": oracle / max(n_bags, 1), "bag_top1_good@0.5": top1_good / max(n_bags, 1),
        "gt_instances": n_gt,
    }


def ccgr_movement(mil: list[dict], refined: list[dict]) -> dict:
    """How much CCGR moved the boxes: fraction moved by more than 0.5 px (any side), mean IoU(before, after)."""
    before, after = _xyxy([a["bbox"] for a in mil]), _xyxy([a["bbox"] for a in refined])
    if not len(before):
        return {"moved": 0.0, "mean_iou_before_after": 1.0}
    moved = ((before - after).abs().max(dim=1).values > 0.5).double().mean()
    iou = box_iou(before, after).diagonal().mean()
    return {"moved": float(moved), "mean_iou_before_after": float(iou)}


BOX_KINDS = ("matched", "part", "merged", "loose", "off")


def box_kind(box: torch.Tensor, instances: torch.Tensor | None) -> str:
    """Where one xyxy ``box`` [1, 4] sits on the boxes [n, 4] of its class's ``instances`` (None: the image has
    none), first rule that holds: ``merged`` it holds more than half of two or more instances (a box grown over
    touching instances); ``matched`` IoU >= 0.5 with one; ``part`` at least 0.8 of it lies inside one instance (the
    paper's Fig. 1 box on a discriminative part, what CCGR is to grow); ``loose`` it holds more than half of one
    instance (a box grown past its object); ``off`` none of these (background, clutter, another class's object)."""
    if instances is None:
        return "off"
    inside = _area(torch.cat((torch.maximum(box[:, :2], instances[:, :2]), torch.minimum(box[:, 2:], instances[:, 2:])), 1))
    covered = inside / _area(instances)
    if int((covered > 0.5).sum()) >= 2:
        return "merged"
    if float(box_iou(box, instances).max()) >= 0.5:
        return "matched"
    if float((inside / _area(box[0])).max()) >= 0.8:
        return "part"
    return "loose" if float(covered.max()) > 0.5 else "off"


def box_kinds(truth: dict[tuple[int, int], torch.Tensor], annotations: list[dict]) -> list[str]:
    """:func:`box_kind` of every annotation (``truth``: :func:`gt_boxes`), in order."""
    return [box_kind(_xyxy([ann["bbox"]]), truth.get((ann["image_id"], ann["category_id"]))) for ann in annotations]


def kind_fractions(kinds: list[str]) -> str:
    """``matched / part / merged / loose / off`` fractions of ``kinds`` as one table cell."""
    return " / ".join(f"{kinds.count(kind) / max(len(kinds), 1):.3f}" for kind in BOX_KINDS)


def kinds_after(before: list[str], after: list[str], kind: str) -> str:
    """Where the boxes of ``kind`` in ``before`` went (:func:`kind_fractions` of their kinds in ``after``, same
    order of boxes), with their count."""
    moved = [new for old, new in zip(before, after, strict=True) if old == kind]
    return f"{kind_fractions(moved)} ({len(moved)})"


def matched_size(truth: dict[tuple[int, int], torch.Tensor], annotations: list[dict]) -> float | None:
    """Median of area(box) / area(instance) over the boxes that match an instance of their class (IoU >= 0.5;
    ``truth``: :func:`gt_boxes`). Above 1: the boxes are looser than the objects. None where no box matches."""
    sizes = []
    for ann in annotations:
        instances = truth.get((ann["image_id"], ann["category_id"]))
        if instances is None:
            continue
        box = _xyxy([ann["bbox"]])
        iou = box_iou(box, instances)[0]
        if float(iou.max()) >= 0.5:
            sizes.append(float(_area(box[0]) / _area(instances[int(iou.argmax())])))
    return float(np.median(sizes)) if sizes else None


def _area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes [..., 4] (0 where a side is negative: an empty intersection)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


# ------------------------------------------------------------------------------------------ report
def box_row(name: str, m: dict) -> str:
    return (f"| {name} | {fmt(m['mAP_b@0.5'])} | {fmt(m['coco_bbox_AP'])} | {m['boxes']} ({m['boxes_per_image']:.1f}/img) | "
            f"{m['precision@0.5']:.3f} | {m['recall@0.5']:.3f} | {m['mean_best_iou']:.3f} |")


BOX_HEADER = ["| boxes | mAP^b_0.5 | COCO box AP | boxes | precision@0.5 | recall@0.5 | mean best IoU |",
              "|---|---|---|---|---|---|---|"]


def report(r: dict) -> str:
    d, s = r["diagnostics"], r["stage_seconds"]
    lines = [
        "<!-- " + r["command"] + " -->", "",
        "# Round-1 box quality: MIL (issue 5) and CCGR (issue 6)", "",
        f"Measured {r['date']} on {r['machine']}; device `{r['device']}`.", "",
        f"Data: `{r['data']}`, train split ({r['train_images']} images, {d['gt_instances']} instances) evaluated, "
        f"{r['dataset_note']}. Profile `{r['profile']}`" + (f" with {r['overrides']}" if r["overrides"] else "")
        + f", seed {r['seed']}. Work folder `{r['work']}`"
        + (f"; stages reused from an earlier call: {', '.join(r['reused'])}" if r["reused"] else "") + ".", "",
        "mAP^b_0.5 / mAP^r: `wsis_core.evaluation` (VOC rule, percent) against the train split's ground truth, which "
        "only this evaluation reads. precision@0.5: boxes of IoU >= 0.5 with an instance of their class; "
        "recall@0.5: instances with such a box; mean best IoU: per box, with the instances of its class.", "",
        "## Issue 5: MIL boxes vs baselines", "", *BOX_HEADER,
        box_row("(a) MIL (`mil_boxes.json`)", r["boxes"]["mil"]),
        box_row("(b) top-1 Eq. 4 per bag, score R(B)", r["boxes"]["top1_eq4"]),
        box_row("(b') top-1 Eq. 4 per bag, score = peak response", r["boxes"]["top1_eq4_peak"]),
        box_row("(c) Seg only (components of SS masks)", r["boxes"]["seg_only"]), "",
        f"Selective search (proposals stage, {r['proposal_workers']} worker processes): "
        f"{r['proposals_per_s']:.0f} proposals/s, {r['images_per_s']:.2f} images/s "
        f"({d['proposals_per_image']:.0f} proposals/image, {s.get('proposals', 0):.0f} s).", "",
        "MIL inputs (evaluation-only diagnostics):", "",
        f"* PRM peaks: {d['peaks']} ({d['peaks_per_image']:.1f}/image); on an instance of their class: "
        f"{d['peak_precision']:.3f}; instances holding a peak of their class: {d['instance_recall_peaks']:.3f}.",
        f"* Selective-search recall (instances with a proposal of IoU >= 0.5): {d['ss_recall@0.5']:.3f}.",
        f"* Bags: {d['bags']} (mean {d['mean_bag_size']:.1f} candidates, {d['relaxed_bags']} non-exclusive, "
        f"{d['dropped_peaks']} peaks without a bag); bags holding a candidate of IoU >= 0.5 with an instance of "
        f"their class (oracle): {d['bag_oracle@0.5']:.3f}; top-1 Eq. 4 candidate is such: {d['bag_top1_good@0.5']:.3f}; "
        f"the MIL choice is: {r['boxes']['mil']['precision@0.5']:.3f}.", "",
        "## Issue 6: CCGR", "", *BOX_HEADER,
        box_row("MIL boxes", r["boxes"]["mil"]),
        box_row(f"CCGR-refined (`ccgr_boxes.json`, {r['ccgr_iters']} iterations)", r["boxes"]["ccgr"]),
        box_row("diagnostic: CCGR of the MIL boxes on ground-truth class masks as S", r["boxes"]["ccgr_oracle_s"]), "",
        f"CCGR moved {r['movement']['moved']:.1%} of the boxes by more than 0.5 px; mean IoU(MIL box, refined box) "
        f"{r['movement']['mean_iou_before_after']:.3f}.", "",
        "Pseudo instance masks (`pseudo_labels.json`, S cropped by the boxes):", "",
        "| pseudo labels | mAP^r_0.25 | mAP^r_0.5 | mAP^r_0.75 | mAP^b_0.5 | COCO mask AP | instances |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, key in (("with CCGR", "pseudo_ccgr"), ("`--no-ccgr` (MIL boxes cropped)", "pseudo_no_ccgr")):
        m = r["boxes"][key]
        lines.append(f"| {name} | {fmt(m['mAP_r@0.25'])} | {fmt(m['mAP_r@0.5'])} | {fmt(m['mAP_r@0.75'])} | "
                     f"{fmt(m['mAP_b@0.5'])} | {fmt(m['coco_segm_AP'])} | {m['boxes']} |")
    mil_ap = r["boxes"]["mil"]["mAP_b@0.5"]
    lines += ["", f"Which S lets CCGR help (evaluation-only diagnostic): the MIL boxes refined on other score maps "
              f"with the same code and peaks, {r['ccgr_iters']} iterations; mIoU of argmax S against the train split's "
              "ground-truth class maps (background + classes):", "",
              "| S | mIoU of argmax S | CCGR mAP^b_0.5 | change vs MIL boxes |", "|---|---|---|---|"]
    names = {"ss": "SS branch (`score_maps`, what the ccgr stage uses)",
             **{name: description for name, (description, _) in SCORE_MAP_VARIANTS.items()}}
    for name, m in r["score_maps"].items():
        ap = m["ccgr"]["mAP_b@0.5"]
        lines.append(f"| {names[name]} | {m['miou']:.3f} | {fmt(ap)} | {ap - mil_ap:+.1f} |")
    lines += ["", f"Fig. 5-style curve (`{r['curve_png']}`): mAP^b_0.5 of the MIL boxes refined with k CCGR "
              "iterations (one run per k, its step size annealed to ~0 at k):", "",
              "| iterations | " + " | ".join(str(k) for k in r["curve"]) + " |",
              "|---" * (len(r["curve"]) + 1) + "|",
              "| mAP^b_0.5 | " + " | ".join(fmt(p["mAP_b@0.5"]) for p in r["curve"].values()) + " |",
              "| mean best IoU | " + " | ".join(f"{p['mean_best_iou']:.3f}" for p in r["curve"].values()) + " |",
              "| CCGR s (with reading the maps) | " + " | ".join(f"{p['seconds']:.1f}" for p in r["curve"].values()) + " |",
              "| diagnostic: mAP^b_0.5 with ground-truth masks as S | "
              + " | ".join(fmt(p["mAP_b@0.5"]) for p in r["curve_oracle_s"].values()) + " |",
              "", "## Stage wall times (s)", "",
              "| " + " | ".join(s) + " | ccgr (no CCGR) | pseudo_labels (no CCGR) |",
              "|---" * (len(s) + 2) + "|",
              "| " + " | ".join(f"{v:.1f}" for v in s.values()) + " | "
              + " | ".join(f"{r['no_ccgr_seconds'].get(k, 0):.1f}" for k in ("ccgr", "pseudo_labels")) + " |", ""]
    if r.get("notes"):
        lines += ["## Notes", "", r["notes"], ""]
    return "\n".join(lines)


def plot_curve(points: dict[int, dict], oracle: dict[int, dict], baselines: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(points)
    ax.plot(ks, [points[k]["mAP_b@0.5"] for k in ks], "o-", label="CCGR-refined MIL boxes (S: SS branch)")
    ax.plot(ks, [oracle[k]["mAP_b@0.5"] for k in ks], "s--", color="tab:green", alpha=0.7,
            label="diagnostic: S = ground-truth class masks")
    for (name, value), style in zip(baselines.items(), ("--", ":", "-.")):
        ax.axhline(value, linestyle=style, color="grey", label=f"{name} ({value:.1f})")
    ax.set_xlabel("CCGR iterations")
    ax.set_ylabel("mAP$^b_{0.5}$ (train split, %)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser, train=400, val=100)
    add_profile_arguments(parser)
    parser.add_argument("--work", help="run folder (default: a new folder under /tmp); finished stages are reused")
    parser.add_argument("--redo", choices=ROUND1, help="recompute this stage and the later ones")
    parser.add_argument("--curve-iters", default=",".join(map(str, CURVE_ITERS)))
    parser.add_argument("--out", default=str(RESULTS / "box_quality.md"))
    parser.add_argument("--curve", default=None, help="PNG of the curve (default: ccgr_curve.png next to --out)")
    args = parser.parse_args()
    root, generate_s = prepare_dataset(parser, args)
    overrides = profile_overrides(parser, args.set)
    classes = open_weak_dataset(root, "train").classes
    config = RunConfig(data=str(root), classes=tuple(classes), profile=args.profile, overrides=overrides, seed=args.seed)
    config.build_profile()
    work = Path(args.work) if args.work else Path(f"/tmp/box_quality_{datetime.datetime.now():%Y%m%d_%H%M%S}")
    config, reused = open_run(work, config, args.redo)
    device = resolve_device(args.device)
    print(f"work folder {work}; device {device}", flush=True)

    ctx = RoundContext(work, 1, config, device, round_dir=work)
    run_round1(ctx)
    no_ccgr = run_without_ccgr(work, config, device)

    gt_path = work / "train_gt.json"
    if not gt_path.exists():
        write_json(gt_path, ground_truth_to_coco(open_ground_truth(root, "train")))
    gt = read_json(gt_path)

    mil = ctx.work.read_json(run_layout.MIL_BOXES)["annotations"]
    ccgr = ctx.work.read_json(run_layout.CCGR_BOXES)["annotations"]
    top1, top1_peak, bags = top1_eq4_boxes(ctx)
    seg = box_sources.segment_boxes(ctx)
    for name, anns in (("top1_eq4_boxes.json", top1), ("seg_only_boxes.json", seg)):
        write_json(work / name, box_sources.coco_file(ctx, anns))
    boxes = {
        "mil": box_metrics(gt, mil), "top1_eq4": box_metrics(gt, top1), "top1_eq4_peak": box_metrics(gt, top1_peak),
        "seg_only": box_metrics(gt, seg), "ccgr": box_metrics(gt, ccgr),
        "pseudo_ccgr": box_metrics(gt, ctx.work.read_json(run_layout.PSEUDO_LABELS)["annotations"], with_masks=True),
        "pseudo_no_ccgr": box_metrics(gt, no_ccgr.work.read_json(run_layout.PSEUDO_LABELS)["annotations"], with_masks=True),
    }
    for name, m in boxes.items():
        masks_part = "" if m["mAP_r@0.5"] is None else f", mAP^r_0.5 {m['mAP_r@0.5']:.2f}"
        print(f"  {name}: mAP^b_0.5 {m['mAP_b@0.5']:.2f}{masks_part}", flush=True)
    diagnostics = peak_and_bag_diagnostics(ctx, gt, bags)

    profile = config.build_profile()
    iters = sorted({int(k) for k in args.curve_iters.split(",") if k} | {profile.ccgr.iters})
    points = curve(config, work, device, mil, gt, iters)
    labels = class_label_maps(ctx, gt)
    folders = {name: diagnostic_score_maps(config, work, device, labels, name) for name in SCORE_MAP_VARIANTS}
    oracle = curve(config, work, device, mil, gt, iters, folders["oracle_s"], "oracle S")
    boxes["ccgr_oracle_s"] = oracle[profile.ccgr.iters]
    score_maps = {"ss": {"miou": score_map_miou(ctx, labels, ctx.work), "ccgr": boxes["ccgr"]}}
    for name, folder in folders.items():
        ccgr_boxes = oracle if name == "oracle_s" else curve(config, work, device, mil, gt, [profile.ccgr.iters], folder, name)
        score_maps[name] = {"miou": score_map_miou(ctx, labels, WorkDir(folder)), "ccgr": ccgr_boxes[profile.ccgr.iters]}

    seconds = {s: read_json(work / marker_name(s))["seconds"] for s in ROUND1}
    n_proposals = sum(len(ProposalStore(work / "proposals").proposals_for(i.id)[0]) for i in ctx.train_set.images) \
        if config.proposals == "selective-search" else 0
    curve_png = Path(args.curve) if args.curve else Path(args.out).with_name("ccgr_curve.png")
    note = f"synthetic, {args.difficulty}, generated in {generate_s:.0f} s" if args.generate else "an existing dataset"
    result = {
        **report_header(args, device),
        "data": str(root), "dataset_note": note, "train_images": len(ctx.train_set), "profile": config.profile,
        "overrides": config.overrides, "seed": config.seed, "work": str(work), "reused": reused,
        "boxes": boxes, "diagnostics": diagnostics, "movement": ccgr_movement(mil, ccgr),
        "curve": points, "curve_oracle_s": oracle, "score_maps": score_maps, "ccgr_iters": profile.ccgr.iters,
        "curve_png": os.path.relpath(curve_png.resolve(), Path(args.out).resolve().parent),
        "stage_seconds": seconds,
        "no_ccgr_seconds": {s: read_json(no_ccgr.work.path(marker_name(s)))["seconds"] for s in ("ccgr", "pseudo_labels")},
        "proposal_workers": profile.mil.proposal_workers,
        "proposals_per_s": n_proposals / max(seconds["proposals"], 1e-9),
        "images_per_s": len(ctx.train_set) / max(seconds["proposals"], 1e-9),
    }
    write_json(work / "box_quality.json", result)
    plot_curve(points, oracle, {"MIL boxes": boxes["mil"]["mAP_b@0.5"], "top-1 Eq. 4": boxes["top1_eq4"]["mAP_b@0.5"],
                        "Seg only": boxes["seg_only"]["mAP_b@0.5"]}, curve_png,
               f"CCGR on {len(ctx.train_set)} synthetic train images, profile {config.profile}")
    text = report(result)
    write_report(text, args.out)


if __name__ == "__main__":
    main()

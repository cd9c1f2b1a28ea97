"""The per-stage microscope of a run (issue 16): what every stage of every round got right, measured against
the train split's ground truth, one markdown table per round.

Benchmarks only: this reads the train split's masks and boxes (``open_ground_truth``), which the stages never
do; it only reads the run's artifacts (and, for the CAM/PSA rows, re-runs round 1's classifier and AffinityNet
in eval mode on the train split). Rows:

* classifier: val mAP of round 1's classifier (``cues_quality.classification_map``);
* peaks (``peaks.json``; later rounds reuse round 1's): precision (a peak inside an instance of its class),
  recall (instances with >= 1 peak of their class), instances with 2+ peaks, peaks per image, peaks scoring <= 0;
* semantic maps, mIoU (background + classes, VOID ignored; ``cues_quality.Confusion``) against
  SegmentationClass of the train split: CAM (argmax of [(1 - max CAM)^rw_bg_power, CAMs]) and PSA (argmax of
  the random-walk map O), round 1 only; the SS branch's training labels (PSA's confident labels in round 1,
  the union of confident IS masks later; accuracy / coverage of the labelled pixels too) and argmax S, and how
  far S spreads past an object (``lone_instance_extents``); how much of each instance S covers and how much of S
  lies on its class;
* proposals: recall@0.5 (instances with a proposal of IoU >= 0.5, ``box_quality.peak_and_bag_diagnostics``);
  bags (``stages.round_bags``): bag recall = bags holding a proposal of IoU >= 0.5 with their source's
  instance (round 1: the instance of the bag's class under the peak; later: the instance of the bag's class
  best overlapping the predicted box; a bag without one counts as a miss), and instances covered by such a bag;
* MIL boxes, CCGR boxes, pseudo masks and their boxes (what the IS branch learns, ``pseudo.box``) as label
  sets (``wsis_core.evaluation.label_set_quality``: one-to-one VOC matching at IoU 0.5; precision, recall, mean
  IoU of the matched) and their mAP^b_0.5 / mAP^r_0.5
  (``wsis_core.evaluation.evaluate``); images left without a pseudo label; the MIL and CCGR boxes' size
  against their matched instances (``box_quality.matched_size``) and their kinds (``box_quality.box_kind``:
  matched, on a part of an instance, merged over 2+ instances, loose past one, off every instance), and where
  CCGR took MIL's part boxes and MIL's matched boxes; and CCGR of the same MIL boxes on the true class masks as S
  (``oracle_ccgr_rows``), which separates CCGR from the SS branch's errors;
* later rounds: the previous IS model's train-split predictions kept as this round's cues (``cue_instances.json``,
  with the fallback labels of images that had none) as a mask label set;
* IS branch: the round's val metrics (``metrics.json``) and the stage wall times.

    PYTHONPATH=. python bench/stage_report.py --run /tmp/run --data /tmp/parts --out bench/results/stage_report.md
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import box_iou

from box_quality import (
    BOX_KINDS,
    as_results,
    box_kinds,
    ccgr_movement,
    gt_boxes,
    kind_fractions,
    kinds_after,
    matched_size,
    one_hot,
    peak_and_bag_diagnostics,
)
from cues_quality import (
    Confusion,
    Timer,
    cam_and_psa_labels,
    classification_map,
    confident_accuracy,
    miou,
    peak_counts,
    semantic_ground_truth,
)
from reporting import report_header, write_report
from wsis_core import run_layout, stages
from wsis_core.affinity import AffinityNet
from wsis_core.box_sources import refine_boxes
from wsis_core.checkpoint import load_checkpoint
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth
from wsis_core.data.guard import weak_supervision
from wsis_core.data.types import VOID
from wsis_core.device import resolve_device
from wsis_core.evaluation import evaluate, label_set_quality
from wsis_core.round_context import RoundContext, read_config
from wsis_core.rounds import stage_done, stage_seconds, stages_of

NOT_RUN = "n/a"
KINDS = " / ".join(BOX_KINDS)


class TrainTruth:
    """The train split's ground truth, read once: COCO dict, semantic maps and (class, mask) instances per image
    (in the dataset's image order), and boxes per (image id, class)."""

    def __init__(self, data: str, split: str):
        self.coco = ground_truth_to_coco(open_ground_truth(data, split))
        self.semantic, self.instances = semantic_ground_truth(Path(data), split)
        self.boxes = gt_boxes(self.coco)


# ------------------------------------------------------------------------------------------- metrics
def bag_recall(ctx: RoundContext, bags: dict, truth: TrainTruth) -> tuple[float, float, int]:
    """(bags holding a proposal of IoU >= 0.5 with their source's instance, instances covered by such a bag,
    bags). Round 1: the source's instance is the instance of the bag's class under the peak; later rounds:
    the instance of the bag's class that best overlaps the predicted box."""
    proposals = stages.proposal_source(ctx)
    good = n_bags = 0
    covered = set()
    for position, info in enumerate(ctx.train_set.images):
        image_bags = bags.get(info.id, [])
        if not image_bags:
            continue
        boxes = torch.as_tensor(proposals.proposals_for(info.id)[0], dtype=torch.float64).reshape(-1, 4)
        instances = truth.instances[position]
        for bag in image_bags:
            n_bags += 1
            target = _source_instance(bag, instances)
            if target is None:
                continue
            ys, xs = np.nonzero(instances[target][1])
            instance_box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float64)
            if bool((box_iou(boxes[bag.proposal_indices], instance_box) >= 0.5).any()):
                good += 1
                covered.add((info.id, target))
    return good / max(n_bags, 1), len(covered) / max(len(truth.coco["annotations"]), 1), n_bags


def _source_instance(bag, instances) -> int | None:
    """Index of the ground-truth instance a bag was built for (see :func:`bag_recall`), or None."""
    if len(bag.source) == 2:
        x, y = (int(v) for v in bag.source)
        hits = [j for j, (c, m) in enumerate(instances) if c == bag.label and m[y, x]]
        return hits[-1] if hits else None  # the mask under the peak (masks are disjoint)
    same = [j for j, (c, _) in enumerate(instances) if c == bag.label]
    if not same:
        return None
    source = torch.tensor([bag.source], dtype=torch.float64)
    boxes = []
    for j in same:
        ys, xs = np.nonzero(instances[j][1])
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    iou = box_iou(source, torch.tensor(boxes, dtype=torch.float64))[0]
    return same[int(iou.argmax())] if float(iou.max()) > 0 else None


def label_set_rows(name: str, truth: TrainTruth, annotations: list[dict] | None, iou_type: str) -> list[tuple]:
    """Rows of one label set: precision / recall at IoU 0.5, mean IoU of the matched, mAP at 0.5, count."""
    if annotations is None:
        return [(name, "label set", NOT_RUN)]
    quality = label_set_quality(truth.coco, as_results(annotations, with_masks=iou_type == "segm"), iou_type)
    metrics = evaluate(truth.coco, as_results(annotations, with_masks=iou_type == "segm")) if annotations else {}
    key, kind = ("mAP_r@0.5", "mask") if iou_type == "segm" else ("mAP_b@0.5", "box")
    images = len({a["image_id"] for a in annotations})
    return [
        (name, "labels (per image; images with none)",
         f"{len(annotations)} ({len(annotations) / max(len(truth.coco['images']), 1):.1f}; "
         f"{len(truth.coco['images']) - images})"),
        (name, f"precision / recall at {kind} IoU 0.5", f"{_f(quality['precision'], 3)} / {_f(quality['recall'], 3)}"),
        (name, "mean IoU of matched", _f(quality["matched_iou"], 3)),
        (name, f"{key} (train)", _f(metrics.get(key))),
    ]


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _f(value, digits: int = 1) -> str:
    return NOT_RUN if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def round_annotations(ctx: RoundContext, name: str) -> list[dict] | None:
    path = ctx.work.path(name)
    return ctx.work.read_json(name)["annotations"] if path.exists() else None


# -------------------------------------------------------------------------------------------- rounds
def cue_rows(ctx: RoundContext, truth: TrainTruth, device, val_map: float) -> list[tuple]:
    """Classifier, peaks and the semantic maps of one round."""
    n = len(ctx.config.classes)
    rows = [("classifier", "val mAP (round 1's classifier)", _f(val_map, 3))]
    if ctx.work.path(run_layout.PEAKS).exists():
        peaks = ctx.work.read_json(run_layout.PEAKS)
        per_image = [peaks[str(info.id)] for info in ctx.train_set.images]
        counts = peak_counts(per_image, truth.instances)
        rows += [
            ("peaks", "precision / recall", f"{counts['precision']:.3f} / {counts['recall']:.3f}"),
            ("peaks", "instances with 2+ peaks", f"{counts['multi']:.3f}"),
            ("peaks", "peaks per image (instances per image); scoring <= 0",
             f"{counts['per_image']:.1f} ({len(truth.coco['annotations']) / max(len(per_image), 1):.1f}); "
             f"{counts['non_positive']:.3f}"),
        ]
    if ctx.number == 1 and stage_done(ctx.work, "cues"):
        classifier = stages.round_classifier(ctx)
        affinity = AffinityNet(copy.deepcopy(classifier.backbone))
        affinity.load_state_dict(load_checkpoint(ctx.work.require(run_layout.AFFINITY)).state_dict)
        own = (ctx.profile.aff.rw_bg_power, ctx.profile.aff.rw_t)
        with weak_supervision():
            cam, psa, _, _ = cam_and_psa_labels(classifier, affinity, ctx.train_set, ctx.profile, device, [own],
                                                Timer(device))
        rows += [("semantic", "CAM mIoU (train)", f"{miou(cam[own], truth.semantic, n):.3f}"),
                 ("semantic", "PSA mIoU (argmax O, train)", f"{miou(psa[own], truth.semantic, n):.3f}")]
    stems = [Path(info.file_name).stem for info in ctx.train_set.images]
    if stage_done(ctx.work, "cues"):
        labels = [ctx.work.read_label(run_layout.SEMANTIC_LABELS, s) for s in stems]
        accuracy, cover = confident_accuracy(labels, truth.semantic)
        rows.append(("semantic", "SS training labels: mIoU; accuracy / coverage of labelled pixels",
                     f"{miou(labels, truth.semantic, n):.3f}; {accuracy:.3f} / {cover:.3f}"))
    if stage_done(ctx.work, "ss"):
        confusion, extents, covered, placed = Confusion(n), [], [], []
        for stem, semantic, instances in zip(stems, truth.semantic, truth.instances):
            argmax = ctx.work.read_scores(run_layout.SCORE_MAPS, stem).argmax(axis=0)
            confusion.add(argmax, semantic)
            extents += lone_instance_extents(argmax, instances)
            covered += [float((argmax[mask] == category).mean()) for category, mask in instances]
            placed += [float((semantic[argmax == category] == category).mean())
                       for category in {category for category, _ in instances} if (argmax == category).any()]
        rows += [("semantic", "SS mIoU (argmax S, train)", f"{confusion.miou():.3f}"),
                 ("semantic", "SS extent: box of the argmax-S region at a lone instance / the instance's box "
                  "(median; instances)", f"{np.median(extents):.2f} ({len(extents)})" if extents else NOT_RUN),
                 ("semantic", "SS cover: an instance's pixels that S gives its class; S's pixels of a class on that "
                  "class (medians over instances; over images and classes)",
                  f"{_f(_median(covered), 3)}; {_f(_median(placed), 3)}")]
    return rows


def lone_instance_extents(argmax: np.ndarray, instances: list[tuple[int, np.ndarray]]) -> list[float]:
    """For each instance alone of its class in the image: area of the box around the connected region of its class
    in ``argmax`` (argmax of S) that holds the centre of the instance's box, over the area of that box (above 1: S
    spreads past the object); instances whose box centre S gives another label are left out."""
    classes = [c for c, _ in instances]
    ratios = []
    for category, mask in instances:
        if classes.count(category) > 1:
            continue
        ys, xs = np.nonzero(mask)
        regions, _ = ndimage.label(argmax == category)
        region = regions[(ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2]
        if region:
            ry, rx = np.nonzero(regions == region)
            box_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            ratios.append((ry.max() - ry.min() + 1) * (rx.max() - rx.min() + 1) / box_area)
    return ratios


def box_rows(ctx: RoundContext, truth: TrainTruth) -> list[tuple]:
    """Proposals, bags, MIL and CCGR boxes, pseudo masks and (later rounds) the IS predictions kept as cues."""
    rows = []
    if stage_done(ctx.work, "proposals") and stage_done(ctx.work, "cues"):
        with weak_supervision():
            bags = stages.round_bags(ctx, stages.proposal_source(ctx), None)
        diagnostics = peak_and_bag_diagnostics(ctx, truth.coco, bags)
        recall, covered, n_bags = bag_recall(ctx, bags, truth)
        rows += [("proposals", "recall@0.5", f"{diagnostics['ss_recall@0.5']:.3f}"),
                 ("bags", "bag recall (bags; instances covered)", f"{recall:.3f} ({n_bags}; {covered:.3f})")]
    if ctx.number > 1 and ctx.work.path(run_layout.CUE_INSTANCES).exists():
        kept = ctx.work.read_json(run_layout.CUE_INSTANCES)
        rows += label_set_rows("IS cues", truth, [p for image in kept.values() for p in image], "segm")
    mil, ccgr = round_annotations(ctx, run_layout.MIL_BOXES), round_annotations(ctx, run_layout.CCGR_BOXES)
    kinds = {}
    for name, boxes in (("MIL boxes", mil), ("CCGR boxes", ccgr)):
        rows += label_set_rows(name, truth, boxes, "bbox")
        if boxes:
            kinds[name] = box_kinds(truth.boxes, boxes)
            rows += [(name, "area / matched instance's (median)", _f(matched_size(truth.boxes, boxes), 2)),
                     (name, f"kinds: {KINDS}", kind_fractions(kinds[name]))]
    if mil and ccgr:
        moved = ccgr_movement(mil, ccgr)
        rows.append(("CCGR boxes", "moved > 0.5 px; mean IoU(MIL, CCGR)",
                     f"{moved['moved']:.3f}; {moved['mean_iou_before_after']:.3f}"))
        rows += [("CCGR boxes", f"MIL's {kind} boxes after CCGR: {KINDS} (boxes)",
                  kinds_after(kinds["MIL boxes"], kinds["CCGR boxes"], kind)) for kind in ("part", "matched")]
        rows += oracle_ccgr_rows(ctx, truth, mil, kinds["MIL boxes"])
    pseudo = round_annotations(ctx, run_layout.PSEUDO_LABELS)
    rows += label_set_rows("pseudo masks", truth, pseudo, "segm")
    rows += label_set_rows("pseudo boxes", truth, pseudo, "bbox")  # the boxes the IS branch learns (pseudo.box)
    return rows


def oracle_ccgr_rows(ctx: RoundContext, truth: TrainTruth, mil: list[dict], mil_kinds: list[str]) -> list[tuple]:
    """CCGR of the round's MIL boxes with the run's settings and peaks, on the train split's true class masks as S
    (one-hot, void as background): what CCGR gives where S is right, apart from the SS branch's errors. The maps
    go to a temporary round folder; the run folder is not written."""
    with tempfile.TemporaryDirectory() as folder:
        oracle = RoundContext(ctx.run_dir, ctx.number, ctx.config, ctx.device, round_dir=Path(folder))
        oracle.work.write_json(run_layout.PEAKS, ctx.work.read_json(run_layout.PEAKS))
        n = len(ctx.config.classes)
        for info, semantic in zip(ctx.train_set.images, truth.semantic):
            truth_map = one_hot(np.where(semantic == VOID, 0, semantic), n)
            oracle.work.write_scores(run_layout.SCORE_MAPS, run_layout.image_stem(info), truth_map)
        refined = refine_boxes(oracle, mil, None)
    name = "CCGR boxes on the true S"
    _, _, _, average_precision = (value for _, _, value in label_set_rows(name, truth, refined, "bbox"))
    return [(name, "mAP_b@0.5 (train); MIL's part boxes after CCGR: " + KINDS,
             f"{average_precision}; {kinds_after(mil_kinds, box_kinds(truth.boxes, refined), 'part')}")]


def is_rows(ctx: RoundContext) -> list[tuple]:
    metrics = ctx.work.read_json(run_layout.METRICS) if ctx.work.path(run_layout.METRICS).exists() else {}
    seconds = stage_seconds(ctx.work, stages_of(ctx.config))
    return [
        ("IS branch", "val mAP_r@0.25 / 0.5 / 0.75",
         " / ".join(_f(metrics.get(k)) for k in ("mAP_r@0.25", "mAP_r@0.5", "mAP_r@0.75"))),
        ("IS branch", "val mAP_b@0.5", _f(metrics.get("mAP_b@0.5"))),
        ("run", "stage seconds", ", ".join(f"{s} {v:.0f}" for s, v in seconds.items()) or NOT_RUN),
    ]


def round_rows(ctx: RoundContext, truth: TrainTruth, device, val_map: float) -> list[tuple]:
    """Every (stage, measure, value) row of one round's table."""
    return cue_rows(ctx, truth, device, val_map) + box_rows(ctx, truth) + is_rows(ctx)


def round_table(ctx: RoundContext, truth: TrainTruth, device, val_map: float) -> str:
    rows = round_rows(ctx, truth, device, val_map)
    lines = [f"## Round {ctx.number}", "", "| stage | measure | value |", "|---|---|---|"]
    lines += [f"| {stage} | {measure} | {value} |" for stage, measure, value in rows]
    return "\n".join(lines) + "\n"


def rounds_of(run: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in run.glob("round_*") if p.name.split("_")[1].isdigit())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of `wsis train`")
    parser.add_argument("--data", required=True, help="the run's dataset (its train split's ground truth is read)")
    parser.add_argument("--rounds", help="comma-separated rounds (default: every round folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--notes-file", help="markdown appended to the report as its Notes section")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    run = Path(args.run)
    config = read_config(run)
    if config.supervision != "weak":
        parser.error(f"{run}: a {config.supervision}-supervision run has no weak stages to look at")
    config = type(config).from_dict({**config.to_dict(), "data": str(Path(args.data))})
    numbers = [int(k) for k in args.rounds.split(",")] if args.rounds else rounds_of(run)
    if not numbers:
        parser.error(f"{run}: no round folders")
    device = resolve_device(args.device)
    truth = TrainTruth(config.data, config.train_split)
    first = RoundContext(run, 1, config, device)
    val_map = classification_map(stages.round_classifier(first), first.val_set, first.profile, device) \
        if stage_done(first.work, "cues") else None
    header = report_header(args, device)
    tables = [round_table(RoundContext(run, k, config, device), truth, device, val_map) for k in numbers]
    text = "\n".join([
        "<!-- " + header["command"] + " -->", "", f"# Stage report of `{run}`", "",
        f"{header['date']}; {header['machine']}. Data `{args.data}` ({len(first.train_set)} train images, "
        f"{len(truth.coco['annotations'])} instances); profile `{config.profile}`"
        + (f" with {config.overrides}" if config.overrides else "") + f", seed {config.seed}, "
        f"ccgr {config.ccgr}, box source {config.box_source}. Train-split ground truth read by this report only.", "",
        *tables,
        *(["## Notes", "", header["notes"], ""] if header["notes"] else []),
    ])
    write_report(text, args.out)


if __name__ == "__main__":
    main()

"""Pseudo masks of one round by crop mode, from the round's own boxes and from the true boxes (issue 16).

The microscope (``stage_report.py``) scores the pseudo masks a run made; this asks which mask stage a run
should have used, and how much of the loss is the boxes' and how much the masks'. For every ``--modes``
entry (``argmax``, ``threshold``, ``grabcut`` of :func:`wsis_core.pseudo_labels.crop_instances`, with the
run's own ``pseudo`` settings) it crops masks from

* the round's refined boxes (``ccgr_boxes.json``: what the pseudo_labels stage crops), and
* the train split's true boxes (one per instance, score 1): the masks' quality inside correct boxes,

and scores them as label sets against the train split's masks (``wsis_core.evaluation.label_set_quality``:
precision / recall at mask IoU 0.5, mean IoU of the matched) with their mAP^r at 0.5 and 0.25. A ``box``
row fills each whole box, the lower bound every mode should beat.

Benchmarks only: it reads the train split's ground truth, which the stages never do.

    PYTHONPATH=. python bench/mask_sources.py --run /tmp/run --data /tmp/parts --out bench/results/masks.md
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from box_quality import as_results
from reporting import report_header, write_report
from stage_report import TrainTruth
from wsis_core.box_sources import masks_by_image
from wsis_core.evaluation import evaluate, label_set_quality
from wsis_core.round_context import RoundContext, read_config
from wsis_core.run_layout import CCGR_BOXES

BOX = "box"


def true_boxes(truth: TrainTruth) -> list[dict]:
    """The train split's instances as boxes of score 1 (COCO annotations)."""
    return [{**ann, "score": 1.0} for ann in truth.coco["annotations"]]


def masks_of(ctx: RoundContext, boxes: list[dict], mode: str) -> list[dict]:
    """COCO annotations with masks of ``boxes`` cut as the pseudo_labels stage cuts them with ``mode`` (or the
    whole boxes: :data:`BOX`, a threshold below any score)."""
    crop_mode, threshold = ("threshold", -1.0) if mode == BOX else (mode, ctx.profile.pseudo.crop_threshold)
    return [ann for image in masks_by_image(ctx, boxes, crop_mode, threshold).values() for ann in image]


def row(truth: TrainTruth, boxes_name: str, mode: str, annotations: list[dict]) -> str:
    results = as_results(annotations, with_masks=True)
    quality = label_set_quality(truth.coco, results, "segm")
    metrics = evaluate(truth.coco, results) if results else {}

    def f(value, digits=3):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    return (f"| {boxes_name} | {mode} | {len(annotations)} | {f(quality['precision'])} / {f(quality['recall'])} | "
            f"{f(quality['matched_iou'])} | {f(metrics.get('mAP_r@0.5'), 1)} | {f(metrics.get('mAP_r@0.25'), 1)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of `wsis train` (its round has score maps)")
    parser.add_argument("--data", required=True, help="the run's dataset (its train split's ground truth is read)")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--modes", default="argmax,grabcut", help="comma-separated crop modes")
    parser.add_argument("--notes-file", help="markdown appended to the report as its Notes section")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    run = Path(args.run)
    config = read_config(run)
    config = type(config).from_dict({**config.to_dict(), "data": str(Path(args.data))})
    ctx = RoundContext(run, args.round, config, torch.device("cpu"))
    truth = TrainTruth(config.data, config.train_split)
    modes = [BOX, *args.modes.split(",")]
    rows = [row(truth, "true", mode, masks_of(ctx, true_boxes(truth), mode)) for mode in modes]
    rows += [row(truth, f"round {args.round} CCGR", mode, masks_of(ctx, ctx.work.read_json(CCGR_BOXES)["annotations"], mode))
             for mode in modes]
    header = report_header(args, "cpu")
    text = "\n".join([
        "<!-- " + header["command"] + " -->", "", f"# Pseudo masks by crop mode: `{run}`, round {args.round}", "",
        f"{header['date']}; {header['machine']}. Data `{args.data}` ({len(ctx.train_set)} train images, "
        f"{len(truth.coco['annotations'])} instances); profile `{config.profile}` with {config.overrides or 'no overrides'}.",
        "", "| boxes | masks | labels | precision / recall at mask IoU 0.5 | mean IoU of matched | mAP_r@0.5 | mAP_r@0.25 |",
        "|---|---|---|---|---|---|---|", *rows, "",
        *(["## Notes", "", header["notes"], ""] if header["notes"] else []),
    ])
    write_report(text, args.out)


if __name__ == "__main__":
    main()

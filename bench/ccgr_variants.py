"""CCGR settings compared on one finished round: the round's MIL boxes refined again under each ``--variant``
(profile overrides of the ``ccgr`` section), measured against the train split's ground truth as label sets.

Benchmarks only (the train split's boxes are read here, never by the stages). Each variant runs the ccgr
stage's own :func:`wsis_core.box_sources.refine_boxes` on the round's ``mil_boxes.json``, SS score maps and
peaks, with the run's overrides plus the variant's; nothing in the run folder is written. Rows: the MIL boxes,
the run's own CCGR boxes, then every variant: precision / recall at box IoU 0.5 (one-to-one VOC matching), mean
IoU of the matched, mAP^b_0.5, how far CCGR moved the boxes, and how the boxes fit their instances
(median area over the matched instance's, :func:`box_quality.matched_size`; the fractions of each
:func:`box_quality.box_kind`; and where the variant took MIL's part boxes).

    python bench/ccgr_variants.py --run RUN/weak --data DATA --rounds 1 \
        --variant ccgr.gap=paper --variant ccgr.moves=free --variant ccgr.gap=paper,ccgr.moves=free
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from box_quality import box_kinds, ccgr_movement, kind_fractions, kinds_after, matched_size
from reporting import fmt, report_header, write_report
from stage_report import KINDS, TrainTruth, label_set_rows, round_annotations
from wsis_core import run_layout
from wsis_core.box_sources import refine_boxes
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.round_context import RoundContext, read_config
from wsis_core.rounds import stage_done


def parse_variant(text: str) -> dict[str, str]:
    """``ccgr.gap=paper,ccgr.moves=free`` -> {"ccgr.gap": "paper", "ccgr.moves": "free"}."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].startswith("ccgr.") for pair in pairs):
        raise ValueError(f"--variant {text!r}: expected ccgr.FIELD=VALUE[,ccgr.FIELD=VALUE...]")
    return {field.strip(): value.strip() for field, value in pairs}


def box_row(name: str, truth: TrainTruth, boxes: list[dict], mil: list[dict], mil_kinds: list[str]) -> str:
    """One table row: the microscope's label-set values of ``boxes`` (stage_report.label_set_rows), movement, size
    and kinds (``mil_kinds``: :func:`box_quality.box_kinds` of ``mil``)."""
    _, precision_recall, matched, average_precision = (value for _, _, value in label_set_rows(name, truth, boxes, "bbox"))
    moved, kinds = ccgr_movement(mil, boxes), box_kinds(truth.boxes, boxes)
    return (f"| {name} | {precision_recall} | {matched} | {average_precision} "
            f"| {moved['moved']:.3f}; {moved['mean_iou_before_after']:.3f} | {fmt(matched_size(truth.boxes, boxes), 2)} "
            f"| {kind_fractions(kinds)} | {kinds_after(mil_kinds, kinds, 'part')} |")


def round_table(ctx: RoundContext, truth: TrainTruth, variants: list[dict[str, str]]) -> str:
    mil = round_annotations(ctx, run_layout.MIL_BOXES)
    mil_kinds = box_kinds(truth.boxes, mil)
    lines = [f"## Round {ctx.number}", "",
             "| boxes | precision / recall at box IoU 0.5 | mean IoU of matched | mAP_b@0.5 (train) "
             "| moved > 0.5 px; mean IoU(MIL, boxes) | area / matched instance (median) "
             f"| kinds: {KINDS} | MIL's part boxes: {KINDS} (boxes) |", "|---|---|---|---|---|---|---|---|",
             box_row("MIL boxes", truth, mil, mil, mil_kinds)]
    own = round_annotations(ctx, run_layout.CCGR_BOXES)
    if own is not None:
        lines.append(box_row(f"the run's CCGR boxes ({'ccgr on' if ctx.config.ccgr else '--no-ccgr'})", truth, own, mil, mil_kinds))
    for variant in variants:
        config = dataclasses.replace(ctx.config, ccgr=True, overrides={**ctx.config.overrides, **variant})
        refined = refine_boxes(RoundContext(ctx.run_dir, ctx.number, config, ctx.device), mil, None)
        lines.append(box_row("CCGR " + ", ".join(f"{k}={v}" for k, v in variant.items()), truth, refined, mil, mil_kinds))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of `wsis train`")
    parser.add_argument("--data", required=True, help="the run's dataset (its train split's ground truth is read)")
    parser.add_argument("--rounds", default="1", help="comma-separated rounds (default: 1)")
    parser.add_argument("--variant", action="append", default=[], metavar="ccgr.FIELD=VALUE[,...]",
                        help="one CCGR setting to compare (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--notes-file", help="markdown appended to the report as its Notes section")
    parser.add_argument("--out", help="also write the report here")
    args = parser.parse_args()
    try:
        variants = [parse_variant(v) for v in args.variant]
    except ValueError as error:
        parser.error(str(error))
    run = Path(args.run)
    config = read_config(run)
    config = type(config).from_dict({**config.to_dict(), "data": str(Path(args.data))})
    for variant in variants:
        try:
            dataclasses.replace(config, overrides={**config.overrides, **variant}).build_profile()
        except WsisInputError as error:  # a bad field or value: one line, before any work
            parser.error(f"--variant {variant}: {error}")
    device = resolve_device(args.device)
    contexts = [RoundContext(run, int(k), config, device) for k in args.rounds.split(",")]
    if missing := [ctx.number for ctx in contexts if not stage_done(ctx.work, "mil")]:
        parser.error(f"{run}: round(s) {missing} have no finished mil stage")
    truth = TrainTruth(config.data, config.train_split)
    header = report_header(args, device)
    text = "\n".join([
        "<!-- " + header["command"] + " -->", "", f"# CCGR variants on `{run}`", "",
        f"{header['date']}; {header['machine']}. Data `{args.data}` ({len(truth.coco['images'])} train images, "
        f"{len(truth.coco['annotations'])} instances); profile `{config.profile}`"
        + (f" with {config.overrides}" if config.overrides else "") + f", seed {config.seed}. "
        "Train-split ground truth read by this report only.", "",
        *(round_table(ctx, truth, variants) for ctx in contexts),
        *(["## Notes", "", header["notes"], ""] if header["notes"] else []),
    ])
    write_report(text, args.out)


if __name__ == "__main__":
    main()

"""Box and pseudo-mask quality of every round of a finished run (``wsis train`` or ``bench/paper_tables.py``),
on the train split: mAP^b_0.5 of the MIL boxes and of the CCGR boxes, and mAP^r_0.5 of the pseudo masks.

Evaluation only: reads the run's ``round_<k>/mil_boxes.json``, ``ccgr_boxes.json`` and ``pseudo_labels.json``
and the train split's ground truth (never read by the stages). Whether CCGR raises mAP^b_0.5 depends on the
SS score maps it climbs (bench/results/box_quality.md); round k > 1 trains SS on the IS masks instead of
PSA labels, so this shows how CCGR fares on those maps.

    python bench/round_boxes.py /tmp/pt/work/weak --out bench/results/round_boxes.md
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from box_quality import box_metrics
from reporting import fmt
from wsis_core import run_layout
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth
from wsis_core.io import read_json
from wsis_core.round_context import read_config


def round_rows(run: Path) -> list[str]:
    config = read_config(run)
    gt = ground_truth_to_coco(open_ground_truth(config.data, config.train_split))
    lines = []
    for folder in sorted(run.glob("round_*"), key=lambda p: int(p.name.split("_")[1])):
        files = [folder / name for name in (run_layout.MIL_BOXES, run_layout.CCGR_BOXES, run_layout.PSEUDO_LABELS)]
        if not all(f.exists() for f in files):
            continue
        mil, ccgr, pseudo = (read_json(f)["annotations"] for f in files)
        m, c, p = box_metrics(gt, mil), box_metrics(gt, ccgr), box_metrics(gt, pseudo, with_masks=True)
        lines.append(f"| {folder.name.split('_')[1]} | {fmt(m['mAP_b@0.5'])} | {fmt(c['mAP_b@0.5'])} | "
                     f"{fmt(c['mAP_b@0.5'] - m['mAP_b@0.5'])} | {m['mean_best_iou']:.3f} | {c['mean_best_iou']:.3f} | "
                     f"{fmt(p['mAP_r@0.5'])} | {len(mil)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (RUN/config.json, RUN/round_<k>/)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    text = "\n".join([
        f"# Boxes per round of {args.run} (train split, {datetime.datetime.now():%Y-%m-%d %H:%M})", "",
        "| round | MIL mAP^b_0.5 | CCGR mAP^b_0.5 | CCGR - MIL | MIL mean best IoU | CCGR mean best IoU | "
        "pseudo masks mAP^r_0.5 | boxes |",
        "|---|---|---|---|---|---|---|---|",
        *round_rows(args.run),
    ]) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Round-1 label quality of profile variants over several datasets and seeds (issue 16): the evidence that a
change of a profile default cites.

For every dataset (``--data``, repeatable), seed (``--seeds``) and variant (``--variant NAME:FIELD=VALUE,...``,
FIELD a dotted profile field such as ``cls.epochs``; ``NAME:`` alone is the profile as it is; ``NAME@BASE:FIELD=VALUE,...`` starts from a copy of variant BASE's
round 1 with its stages before ``--fork-stage`` kept, for fields that only act from that stage on) this runs
round 1 of ``wsis train`` through ``--through`` (default ``pseudo_labels``: no IS branch, so a variant costs
minutes) in ``WORK/<dataset>/<variant>_s<seed>``, then the per-stage microscope of it
(``stage_report.round_rows``; the train split's ground truth is read by this report only). The selective-search
proposals of a dataset are computed once and shared by its runs (they depend on the images and
``mil.proposal_max`` alone; a variant that sets ``mil.proposal_*`` computes its own).

The report (``--out``) has one summary table, key rows x (dataset, variant), with the mean and the half range
over seeds, then every run's full microscope. Runs resume: a second call with the same ``--work`` only runs
what is missing, and the summary covers every run found under ``WORK`` (so several calls, e.g. one per
dataset in parallel, make one report).

    python bench/cue_ablation.py --data /tmp/parts_s0 --data /tmp/parts_s1 --seeds 0,1 --work /tmp/abl \\
        --variant base: --variant clean:cls.epochs=20,cls.peak_min_score=0 --out bench/results/cue_ablation.md
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

from cues_quality import classification_map
from paper_tables import fork_first_round
from reporting import Progress, report_header, write_report
from stage_report import TrainTruth, round_rows
from wsis_core import stages
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.profiles import get_profile
from wsis_core.round_context import RoundContext, RunConfig, write_config
from wsis_core.rounds import STAGES, run_stage_in
from wsis_core.run_layout import marker_name

# (stage, measure) rows of the summary, in the microscope's words.
KEY_ROWS = (
    ("classifier", "val mAP (round 1's classifier)"),
    ("peaks", "precision / recall"),
    ("peaks", "instances with 2+ peaks"),
    ("semantic", "CAM mIoU (train)"),
    ("semantic", "PSA mIoU (argmax O, train)"),
    ("semantic", "SS training labels: mIoU; accuracy / coverage of labelled pixels"),
    ("semantic", "SS mIoU (argmax S, train)"),
    ("bags", "bag recall (bags; instances covered)"),
    ("MIL boxes", "precision / recall at box IoU 0.5"),
    ("MIL boxes", "mAP_b@0.5 (train)"),
    ("CCGR boxes", "precision / recall at box IoU 0.5"),
    ("CCGR boxes", "mAP_b@0.5 (train)"),
    ("pseudo masks", "precision / recall at mask IoU 0.5"),
    ("pseudo masks", "mAP_r@0.5 (train)"),
    ("pseudo boxes", "precision / recall at box IoU 0.5"),
    ("pseudo boxes", "mAP_b@0.5 (train)"),
    ("run", "stage seconds"),
)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_variant(parser: argparse.ArgumentParser, text: str) -> tuple[str, str | None, dict[str, str]]:
    """``NAME[@BASE]:FIELD=VALUE,...`` -> (name, base or None, overrides)."""
    head, sep, fields = text.partition(":")
    match = re.fullmatch(r"([A-Za-z0-9_-]+)(?:@([A-Za-z0-9_-]+))?", head)
    if not sep or not match:
        parser.error(f"--variant {text}: expected NAME[@BASE]:FIELD=VALUE,... (names of letters, digits, _ or -)")
    overrides = {}
    for item in filter(None, fields.split(",")):
        field, eq, value = item.partition("=")
        if not eq:
            parser.error(f"--variant {text}: {item!r} is not FIELD=VALUE")
        overrides[field.strip()] = value.strip()
    return match[1], match[2], overrides


def run_round_one(run: Path, config: RunConfig, through: str, device, shared_proposals: Path | None) -> None:
    """Round 1's stages up to and including ``through``, resuming; proposals copied from ``shared_proposals``."""
    write_config(run, config)
    if shared_proposals is not None and shared_proposals.is_dir() and not (run / "proposals").exists():
        shutil.copytree(shared_proposals, run / "proposals")
    ctx = RoundContext(run, 1, config, device)
    for stage in STAGES[: STAGES.index(through) + 1]:
        run_stage_in(ctx, stage, Progress(f"{run.name} {stage}"))


def microscope(run: Path, config: RunConfig, device) -> list[tuple]:
    ctx = RoundContext(run, 1, config, device)
    val_map = classification_map(stages.round_classifier(ctx), ctx.val_set, ctx.profile, device)
    return [tuple(row) for row in round_rows(ctx, TrainTruth(config.data, config.train_split), device, val_map)]


def summary_table(work: Path) -> str:
    """Key rows x (dataset family, variant): mean and half range over the runs found under ``work`` (seeds of
    the training and of the dataset, ``DATA_s<k>``)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(work.glob("*/*/microscope.json")):
        variant = path.parent.name.rsplit("_s", 1)[0]
        rows = {(stage, measure): value for stage, measure, value in json.loads(path.read_text())["rows"]}
        runs.setdefault((dataset_family(path.parent.parent.name), variant), []).append(rows)
    columns = sorted(runs)
    lines = ["| stage | measure | " + " | ".join(f"{d} `{v}` ({len(runs[(d, v)])} seeds)" for d, v in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for key in KEY_ROWS:
        cells = [aggregate([rows.get(key, "") for rows in runs[column]]) for column in columns]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dataset_family(folder: str) -> str:
    """``parts_s1`` -> ``parts``: datasets drawn with different seeds are one column."""
    return re.sub(r"_s\d+$", "", folder)


def aggregate(values: list[str]) -> str:
    """The seeds' cells as one: each number as mean ± half range (cells of different shapes joined as they are)."""
    if len(set(values)) == 1:
        return values[0]
    parsed = [NUMBER.findall(v) for v in values]
    if not parsed[0] or any(len(p) != len(parsed[0]) for p in parsed):
        return " ; ".join(values)
    pieces = NUMBER.split(values[0])
    out = pieces[0]
    for i, piece in enumerate(pieces[1:]):
        numbers = [float(p[i]) for p in parsed]
        digits = len(parsed[0][i].partition(".")[2])
        spread = f"±{(max(numbers) - min(numbers)) / 2:.{digits}f}" if len(numbers) > 1 else ""
        out += f"{statistics.mean(numbers):.{digits}f}{spread}{piece}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--variant", action="append", required=True, help="NAME:FIELD=VALUE,... (repeatable)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--through", default="pseudo_labels", choices=STAGES[:STAGES.index("pseudo_labels") + 1])
    parser.add_argument("--fork-stage", default="ccgr", choices=STAGES[1:STAGES.index("pseudo_labels") + 1],
                        help="a NAME@BASE variant reruns round 1 from this stage on")
    parser.add_argument("--work", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--notes-file", help="markdown appended to the report as its Notes section")
    parser.add_argument("--out", help="write the report here")
    args = parser.parse_args()
    variants = [parse_variant(parser, text) for text in args.variant]
    for name, _, overrides in variants:  # a wrong field fails now, not after the other variants trained
        try:
            get_profile(args.profile, overrides)
        except WsisInputError as exc:
            parser.error(f"--variant {name}: {exc}")
    seeds = [int(s) for s in args.seeds.split(",")]
    device, work = resolve_device(args.device), Path(args.work)
    for data in map(Path, args.data):
        classes = tuple(open_weak_dataset(data, "train").classes)
        for seed in seeds:
            shared = next((p for p in sorted((work / data.name).glob("*/proposals"))
                           if (p.parent / "round_1" / marker_name("proposals")).exists()), None)
            for name, base, overrides in variants:
                run = work / data.name / f"{name}_s{seed}"
                if base is not None:
                    fork_first_round(work / data.name / f"{base}_s{seed}", run,
                                     STAGES[:STAGES.index(args.fork_stage)])
                config = RunConfig(data=str(data), classes=classes, profile=args.profile, overrides=overrides,
                                   seed=seed)
                print(f"== {run}", flush=True)
                run_round_one(run, config, args.through, device,
                              None if any(k.startswith("mil.proposal") for k in overrides) else shared)
                shared = shared or run / "proposals"
                result = run / "microscope.json"
                if not result.exists():
                    result.write_text(json.dumps({"overrides": overrides, "rows": microscope(run, config, device)}))
    header = report_header(args, device)
    details = []
    for path in sorted(work.glob("*/*/microscope.json")):
        record = json.loads(path.read_text())
        details += [f"### `{path.parent.parent.name}` / `{path.parent.name}` ({record['overrides'] or 'profile as is'})",
                    "", "| stage | measure | value |", "|---|---|---|",
                    *(f"| {s} | {m} | {v} |" for s, m, v in record["rows"]), ""]
    text = "\n".join([
        f"<!-- {header['command']} -->", "", "# Round-1 stage quality of profile variants", "",
        f"{header['date']}; {header['machine']}; device {header['device']}. Profile `{args.profile}`, round 1 "
        f"through `{args.through}`; mean ± half range over seeds.", "",
        summary_table(work), *(["## Notes", "", header["notes"], ""] if header["notes"] else []),
        "## Every run", "", *details,
    ])
    write_report(text, args.out)


if __name__ == "__main__":
    main()

"""Tables 1 and 3 of the paper on our data: weak supervision per round, the ``--no-ccgr`` and
``--box-source seg`` ablations, and the ``--supervision full`` upper bound, on one seeded synthetic
dataset (600 train / 200 val images of 160 px of ``--difficulty parts`` by default, the case of the paper's
Fig. 1; ``--difficulty easy`` is the regression row of bench/results/paper_tables_600_cpu.md).

Up to four runs (``--runs``, default all) of :func:`wsis_core.rounds.run_rounds`, exactly what ``wsis train``
runs, in ``WORK/`` (weak round 1 first, then the ablations' round 1 and full, then the later rounds):

* ``weak``: ``--rounds R`` (default 3);
* ``no_ccgr``: ``--no-ccgr`` (the MIL boxes cropped), as many rounds as the weak run;
* ``seg``: round 1 with ``--box-source seg`` (boxes around connected components of the SS masks);
* ``full``: the IS branch on the train split's true masks (one round).

The ablations start from a copy of the weak run's ``round_1`` (and ``proposals``) in which only the
stages that do not depend on the switch are kept (cues, ss, proposals; and mil for ``no_ccgr``): the
same cues, score maps and MIL boxes, so the rows differ by the switch alone, and those stages are
not paid twice. Every run resumes: a second call with the same ``--work`` only runs what is missing.

Metrics are the ``evaluate`` stage's (IS branch only, on the val split): mAP^r at 0.25/0.5/0.75,
mAP^b at 0.5, COCO segm/bbox AP, all in percent. The report also gives the weak/full ratios, the
CCGR effect (weak round 1 minus ``no_ccgr``) and every stage's wall time.

    python bench/paper_tables.py --generate /tmp/pt_data --work /tmp/pt_work
    python bench/paper_tables.py --data /tmp/pt_data --work /tmp/pt_work   # resume
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import time
from pathlib import Path

from reporting import Progress, add_profile_arguments, fmt, profile_overrides, report_header, write_report
from synthetic_data import add_dataset_arguments, prepare_dataset
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.evaluation import METRIC_KEYS
from wsis_core.io import read_json, write_json
from wsis_core.round_context import RunConfig
from wsis_core.rounds import STAGES, run_rounds
from wsis_core.run_layout import marker_name

RESULTS = Path(__file__).resolve().parent / "results"
# Ablation -> (RunConfig changes, round-1 stages it shares with the weak run, runs all the weak run's rounds).
ABLATIONS = {
    "no_ccgr": ({"ccgr": False}, ("cues", "ss", "proposals", "mil"), True),
    "seg": ({"box_source": "seg"}, ("cues", "ss", "proposals"), False),
}
RUNS = ("weak", *ABLATIONS, "full")
ROW_NAMES = {"no_ccgr": "weak, no CCGR (MIL boxes cropped)", "seg": "weak, Seg-only boxes",
             "full": "full supervision (upper bound)"}
RATIO_KEYS = ("mAP_r@0.25", "mAP_r@0.5", "mAP_b@0.5")


def fork_first_round(weak: Path, target: Path, shared: tuple[str, ...]) -> None:
    """Start run ``target`` from a copy of ``weak``'s round 1 in which only the ``shared`` stages count
    as finished (the other stages' markers and artifacts are removed, so they run again)."""
    if (target / "round_1").exists():
        return  # forked by an earlier call: resume
    source = weak / "round_1"
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging / "round_1")
    if (weak / "proposals").exists():
        shutil.copytree(weak / "proposals", staging / "proposals")
    for stage in STAGES:
        marker = staging / "round_1" / marker_name(stage)
        if stage in shared or not marker.exists():
            continue
        for relative in read_json(marker)["artifacts"].values():
            path = staging / "round_1" / relative
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        marker.unlink()
    staging.rename(target)


def run_all(work: Path, weak_config: RunConfig, rounds: int, device, runs: tuple[str, ...]) -> dict[str, dict]:
    """The selected runs (``weak`` always); returns each run's summary (``RUN/summary.json``).

    Order: weak round 1 (the ablations fork it), every ablation's round 1, full, the weak run's later
    rounds, then the later rounds of the ablations that follow the weak run: every row of round 1 is done
    early, and a call cut short can be resumed with fewer ``--rounds``."""
    def run(name: str, config: RunConfig, n: int) -> dict:
        print(f"== run {name}", flush=True)
        return run_rounds(work / name, config, n, device, progress_for=Progress)

    summaries = {"weak": run("weak", weak_config, 1)}
    ablations = {name: spec for name, spec in ABLATIONS.items() if name in runs}
    for name, (changes, shared, _) in ablations.items():
        fork_first_round(work / "weak", work / name, shared)
        summaries[name] = run(name, dataclasses.replace(weak_config, **changes), 1)
    if "full" in runs:
        summaries["full"] = run("full", dataclasses.replace(weak_config, supervision="full"), 1)
    summaries["weak"] = run("weak", weak_config, rounds)
    for name, (changes, _, all_rounds) in ablations.items():
        if all_rounds and rounds > 1:
            summaries[name] = run(name, dataclasses.replace(weak_config, **changes), rounds)
    return summaries


# ------------------------------------------------------------------------------------------ report
def rows(summaries: dict[str, dict]) -> list[tuple[str, dict, dict]]:
    """(row name, metrics, seconds of the stages the run ran itself) for every weak round, then every
    round of the ablations (round 1 without the stages shared with the weak run) and full."""
    out = [(f"weak, round {r['round']}", r["metrics"], r["stage_seconds"]) for r in summaries["weak"]["rounds"]]
    for name in RUNS[1:]:
        if name not in summaries:
            continue
        for r in summaries[name]["rounds"]:
            shared = ABLATIONS[name][1] if name in ABLATIONS and r["round"] == 1 else ()
            own = {stage: s for stage, s in r["stage_seconds"].items() if stage not in shared}
            label = ROW_NAMES[name] if name == "full" else f"{ROW_NAMES[name]}, round {r['round']}"
            out.append((label, r["metrics"], own))
    return out


def comparisons(summaries: dict[str, dict]) -> tuple[dict | None, dict[int, dict]]:
    """Per RATIO_KEYS metric: the weak run's last round over full (``None`` without a full run), and the CCGR
    effect (weak minus ``no_ccgr``) of every round both runs have; a value is ``None`` where either is missing."""
    weak_rounds = summaries["weak"]["rounds"]
    ratios = None
    if "full" in summaries:
        last, full = weak_rounds[-1]["metrics"], summaries["full"]["rounds"][0]["metrics"]
        ratios = {k: None if last.get(k) is None or not full.get(k) else last[k] / full[k] for k in RATIO_KEYS}
    no_ccgr = {r["round"]: r["metrics"] for r in summaries.get("no_ccgr", {}).get("rounds", [])}
    effects = {
        r["round"]: {k: None if r["metrics"].get(k) is None or no_ccgr[r["round"]].get(k) is None
                     else r["metrics"][k] - no_ccgr[r["round"]][k] for k in RATIO_KEYS}
        for r in weak_rounds if r["round"] in no_ccgr
    }
    return ratios, effects


def report(result: dict) -> str:
    summaries = result["summaries"]
    table = rows(summaries)
    weak_rounds = summaries["weak"]["rounds"]
    ratios, effects = comparisons(summaries)
    compared = [
        *([f"| weak (round {len(weak_rounds)}) / full | " + " | ".join(fmt(ratios[k], 2) for k in RATIO_KEYS) + " |"]
          if ratios else []),
        *(f"| CCGR effect: weak round {number} minus no CCGR (points) | "
          + " | ".join(fmt(effect[k]) for k in RATIO_KEYS) + " |" for number, effect in effects.items()),
    ]
    lines = [
        "<!-- " + result["command"] + " -->", "",
        "# Tables 1 and 3 on the synthetic data (`bench/paper_tables.py`)", "",
        f"{result['date']}; {result['machine']}; device {result['device']}.",
        f"Data: {result['data']} ({result['dataset_note']}), {result['train_images']} train / "
        f"{result['val_images']} val images; profile `{result['profile']}`, seed {result['seed']}"
        + (f", overrides {result['overrides']}" if result["overrides"] else "") + f"; work folder {result['work']}.",
        "Metrics (percent): IS branch only on the val split.", "",
        "| run | " + " | ".join(METRIC_KEYS) + " |",
        "|---|" + "---|" * len(METRIC_KEYS),
        *(f"| {name} | " + " | ".join(fmt(m.get(k)) for k in METRIC_KEYS) + " |" for name, m, _ in table),
        "",
        *([] if not compared else ["| | " + " | ".join(RATIO_KEYS) + " |", "|---|" + "---|" * len(RATIO_KEYS),
                                   *compared, ""]),
        "Stage wall times (s; \"-\": not run by that run: an ablation shares the weak run's round-1 stages "
        "before its switch, full supervision has no cue stages):", "",
        "| run | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for name, _, seconds in table:
        cells = [fmt(seconds.get(s), 0) if s in seconds else "-" for s in STAGES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(seconds.values()):.0f} |")
    weak_total = sum(sum(r["stage_seconds"].values()) for r in weak_rounds)
    lines += ["", f"Weak run, {len(weak_rounds)} rounds: {weak_total / 60:.1f} min of stage time; "
              f"whole benchmark {result['wall_s'] / 60:.1f} min wall (this call; stages reused from an earlier "
              "call are not in it)."]
    if result["notes"]:
        lines += ["", "## Notes", "", result["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser, train=600, val=200, difficulty="parts")  # easy: the regression row
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the weak run")
    add_profile_arguments(parser)
    parser.add_argument("--work", help="folder of the four runs (default: a new folder under /tmp); resumed if it exists")
    parser.add_argument("--out", default=str(RESULTS / "paper_tables.md"))
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated runs out of {','.join(RUNS)} (weak always runs; default: all)")
    args = parser.parse_args()
    runs = tuple(name.strip() for name in args.runs.split(",") if name.strip())
    if unknown := sorted(set(runs) - set(RUNS)):
        parser.error(f"--runs: unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    root, generate_s = prepare_dataset(parser, args)
    overrides = profile_overrides(parser, args.set)
    train = open_weak_dataset(root, "train")
    config = RunConfig(data=str(root), classes=tuple(train.classes), profile=args.profile, overrides=overrides,
                       seed=args.seed)
    config.build_profile()  # a bad override fails here, before any work
    work = Path(args.work) if args.work else Path(f"/tmp/paper_tables_{datetime.datetime.now():%Y%m%d_%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    print(f"work folder {work}; device {device}", flush=True)

    started = time.perf_counter()
    summaries = run_all(work, config, args.rounds, device, runs)
    note = f"synthetic, {args.difficulty}, generated in {generate_s:.0f} s" if args.generate else "an existing dataset"
    result = {
        **report_header(args, device),
        "data": str(root), "dataset_note": note, "train_images": len(train),
        "val_images": len(open_weak_dataset(root, "val")), "profile": config.profile, "overrides": overrides,
        "seed": config.seed, "work": str(work), "wall_s": time.perf_counter() - started, "summaries": summaries,
    }
    write_json(work / "paper_tables.json", result)
    text = report(result)
    write_report(text, args.out)


if __name__ == "__main__":
    main()

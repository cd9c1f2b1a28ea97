"""The round loop (paper, "Iterative optimization and its initialization"): every round trains the
MIL, SS and IS branches in turn, and every stage reads and writes named artifacts in the round's
folder, so a run can stop anywhere and ``resume`` continues from the last finished stage.

Round 1: cues (classifier → PRM peaks, PSA labels and map O) → ss → proposals → mil (bags of Eq. 4,
WSDDN of Eq. 2) → ccgr (Eq. 3) → pseudo_labels → is_train → evaluate.
Round k > 1: cues = the previous IS model's predictions on the train split (their boxes become the
bags, the union of their masks per class the SS labels), then the same stages.
``supervision="full"`` (the paper's upper bound) is one round of is_train + evaluate on true masks.

A finished stage leaves ``round_<k>/stages/<stage>.json`` (its artifacts, wall time and ``notes``: what
the stage had to fall back on, also logged as warnings and kept in ``summary.json``); a stage with that
marker is never run again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wsis_core import run_layout
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.io import read_json, write_json
from wsis_core.progress import Progress
from wsis_core.round_context import RoundContext, RunConfig, write_config
from wsis_core.run_layout import marker_name
from wsis_core.stages import STAGES as STAGE_RUNNERS
from wsis_core.workdir import WorkDir

# The round contract (see services.workers.backend): the ordered stage names, those of a fully supervised run and
# the stages that want a GPU.
STAGES = tuple(STAGE_RUNNERS)
FULL_SUPERVISION_STAGES = ("is_train", "evaluate")
GPU_STAGES = frozenset({"cues", "ss", "mil", "ccgr", "is_train", "evaluate"})

# The unit of the steps a single-phase stage reports (the others name their phases' units: see
# ``wsis_core.progress.phases``).
# Round 1's cues, ss and mil have phases; round k > 1's cues predict the train split in batches.
STAGE_UNITS = {"cues": "batch", "proposals": "img", "ccgr": "chunk", "pseudo_labels": "img", "is_train": "it",
               "evaluate": "batch"}


def stages_of(config: RunConfig) -> tuple[str, ...]:
    """The stages of every round of a run with ``config``, in order."""
    return FULL_SUPERVISION_STAGES if config.supervision == "full" else STAGES


def stage_done(work: WorkDir, stage: str) -> bool:
    """The stage finished and every artifact it reported is still there (a deleted one makes it run again)."""
    if not work.path(marker_name(stage)).exists():
        return False
    return all(work.path(name).exists() for name in work.read_json(marker_name(stage))["artifacts"].values())


def run_stage_in(ctx: RoundContext, stage: str, on_progress: Progress = None) -> dict[str, Path]:
    """Run one stage of ``ctx``'s round unless its marker says it finished; returns its artifacts."""
    if stage not in STAGE_RUNNERS:
        raise WsisInputError(f"unknown stage {stage!r} (choose from {', '.join(STAGES)})")
    if stage_done(ctx.work, stage):
        marker = ctx.work.read_json(marker_name(stage))
        return {kind: ctx.work.path(name) for kind, name in marker["artifacts"].items()}
    started = time.perf_counter()
    ctx.notes = []
    artifacts = STAGE_RUNNERS[stage](ctx, on_progress)
    seconds = time.perf_counter() - started
    relative = {kind: os.path.relpath(path, ctx.work.root) for kind, path in artifacts.items()}
    marker = {"artifacts": relative, "seconds": seconds, "notes": ctx.notes, "message": "; ".join(ctx.notes)}
    ctx.work.write_json(marker_name(stage), marker)
    return artifacts


def run_stage(
    stage: str, *, data: Path, run_dir: Path, round_number: int, config: dict, device: str = "auto",
    on_progress: Progress = None,
) -> dict[str, Path]:
    """Worker entry point: one stage of round ``round_number`` of the run in ``run_dir``.

    ``config`` is a :class:`RunConfig` dict (``data`` is taken from the argument). Idempotent: a
    finished stage returns its artifacts without recomputing.
    """
    run_config = RunConfig.from_dict({**config, "data": str(data)})
    write_config(run_dir, run_config)
    ctx = RoundContext(Path(run_dir), round_number, run_config, resolve_device(device))
    return run_stage_in(ctx, stage, on_progress)


def stage_message(run_dir: Path, round_number: int, stage: str) -> str:
    """What a finished stage said (e.g. why no metrics were computed); "" when it said nothing."""
    path = run_layout.round_dir(run_dir, round_number) / marker_name(stage)
    return read_json(path).get("message", "") if path.exists() else ""


def round_evaluation(run_dir: Path, round_number: int) -> dict:
    """The round's ``evaluation.json`` (split, images, evaluated images, message; {} before evaluate)."""
    path = run_layout.round_dir(run_dir, round_number) / run_layout.EVALUATION
    return read_json(path) if path.exists() else {}


def round_metrics(run_dir: Path, round_number: int) -> dict[str, float | None]:
    """The round's ``metrics.json`` ({} until its evaluate stage finished)."""
    path = run_layout.round_dir(run_dir, round_number) / run_layout.METRICS
    return read_json(path) if path.exists() else {}


def stage_seconds(work: WorkDir, stages: tuple[str, ...]) -> dict[str, float]:
    return {s: work.read_json(marker_name(s))["seconds"] for s in stages if stage_done(work, s)}


def stage_notes(work: WorkDir, stages: tuple[str, ...]) -> dict[str, list[str]]:
    """The notes of the finished stages that have any (markers written before notes existed have none)."""
    notes = {s: work.read_json(marker_name(s)).get("notes", []) for s in stages if stage_done(work, s)}
    return {s: n for s, n in notes.items() if n}


def write_summary(run_dir: Path, config: RunConfig, rounds: int) -> dict:
    """``RUN/summary.json``: config, per-round metrics, per-stage wall times (seconds) and stage notes."""
    per_round = []
    for number in range(1, rounds + 1):
        work = WorkDir(run_layout.round_dir(run_dir, number))
        per_round.append({
            "round": number,
            "metrics": round_metrics(run_dir, number),
            "evaluation": round_evaluation(run_dir, number),
            "stage_seconds": stage_seconds(work, stages_of(config)),
            "notes": stage_notes(work, stages_of(config)),
        })
    summary = {"config": config.to_dict(), "rounds": per_round}
    write_json(Path(run_dir) / run_layout.SUMMARY, summary)
    return summary


def run_rounds(
    run_dir: Path, config: RunConfig, rounds: int, device: torch.device,
    progress_for: Callable[[str], Progress] = lambda _label: None,
) -> dict:
    """Run (or resume) ``rounds`` rounds; stages already finished are skipped. Returns the summary."""
    rounds = 1 if config.supervision == "full" else rounds
    write_config(run_dir, config)
    for number in range(1, rounds + 1):
        ctx = RoundContext(run_dir, number, config, device)
        for stage in stages_of(config):
            run_stage_in(ctx, stage, progress_for(f"round {number} {stage}"))
        write_summary(run_dir, config, rounds)
    return write_summary(run_dir, config, rounds)

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

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from wsis_core.data.dataset import WeakDataset, open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.io import read_json, write_json
from wsis_core.profiles import Profile, get_profile
from wsis_core.workdir import WorkDir

Progress = Callable[[int, int], None] | None
logger = logging.getLogger(__name__)

STAGES = ("cues", "ss", "proposals", "mil", "ccgr", "pseudo_labels", "is_train", "evaluate")
FULL_SUPERVISION_STAGES = ("is_train", "evaluate")
GPU_STAGES = frozenset({"cues", "ss", "mil", "ccgr", "is_train", "evaluate"})
SUPERVISIONS = ("weak", "full")
BOX_SOURCES = ("mil", "seg")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; stored as ``RUN/config.json``."""

    data: str
    classes: tuple[str, ...]
    profile: str = "tiny"
    overrides: dict = field(default_factory=dict)  # profile fields changed from the command line
    supervision: str = "weak"
    ccgr: bool = True
    box_source: str = "mil"
    proposals: str = "selective-search"  # or a folder of precomputed proposal files
    train_split: str = "train"
    val_split: str | None = "val"  # None: no val split, no evaluation
    seed: int = 0

    def __post_init__(self):
        if self.supervision not in SUPERVISIONS:
            raise WsisInputError(f"supervision must be one of {SUPERVISIONS}, got {self.supervision!r}")
        if self.box_source not in BOX_SOURCES:
            raise WsisInputError(f"box source must be one of {BOX_SOURCES}, got {self.box_source!r}")
        if not isinstance(self.overrides, dict):
            raise WsisInputError(f"profile overrides must be a mapping, got {type(self.overrides).__name__}")
        for name, how in (("seed", "the run's seed (--seed, config.seed)"), ("name", "--profile (config.profile)")):
            if name in self.overrides:
                raise WsisInputError(f"profile field {name}: set it with {how}, not as an override")
        if self.proposals != "selective-search" and not Path(self.proposals).is_dir():
            raise WsisInputError(f"{self.proposals}: proposal folder not found")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return cls(**{**data, "classes": tuple(data["classes"])})

    @property
    def stages(self) -> tuple[str, ...]:
        return FULL_SUPERVISION_STAGES if self.supervision == "full" else STAGES

    def build_profile(self) -> Profile:
        return get_profile(self.profile, **self.overrides, seed=self.seed)


class RoundContext:
    """One round of a run: its folders, config, profile, device and (lazily) its datasets."""

    def __init__(self, run_dir: Path, number: int, config: RunConfig, device: torch.device, round_dir: Path | None = None):
        self.run_dir = Path(run_dir)
        self.number = number
        self.config = config
        self.profile = config.build_profile()
        self.device = device
        self.work = WorkDir(round_dir if round_dir is not None else self.run_dir / f"round_{number}")
        self.notes: list[str] = []  # the running stage's notes (see :meth:`note`)

    def note(self, text: str) -> None:
        """Record (and log) what the running stage wants its user to read, e.g. a fallback on weak evidence or
        why no metrics were computed; the stage's marker keeps it (its ``message`` joins the notes)."""
        self.notes.append(text)
        logger.warning("round %d: %s", self.number, text)

    def previous(self) -> WorkDir:
        """The previous round's folder (rounds > 1)."""
        return WorkDir(self.run_dir / f"round_{self.number - 1}")

    def first(self) -> WorkDir:
        """Round 1's folder (its classifier, peaks and proposals serve every round)."""
        return self.work if self.number == 1 else WorkDir(self.run_dir / "round_1")

    @cached_property
    def train_set(self) -> WeakDataset:
        return open_weak_dataset(self.config.data, self.config.train_split)

    @cached_property
    def val_set(self) -> WeakDataset:
        return open_weak_dataset(self.config.data, self.config.val_split)


@dataclass(frozen=True)
class Phase:
    """One phase of a stage: its name, the unit its steps count (``it``: training iterations, ``img``: images,
    ``batch``: inference batches) and its share of the stage's progress."""

    name: str
    unit: str
    weight: float


# The unit of the steps a single-phase stage reports (the others name their phases' units: see ``phases``).
# Round 1's cues, ss and mil have phases; round k > 1's cues predict the train split in batches.
STAGE_UNITS = {"cues": "batch", "proposals": "img", "ccgr": "chunk", "pseudo_labels": "img", "is_train": "it",
               "evaluate": "batch"}


def phases(on_progress: Progress, *parts: Phase) -> list[Progress]:
    """Split one stage's ``on_progress`` over consecutive phases whose step counts are not known in
    advance.

    A callback with a ``phase(name, unit)`` method (the command line's progress bars) gets one callback per
    phase from it, counting that phase's own steps in its unit. Any other callback (a worker's job progress)
    sees one progress: phase i reports its own (done, total) and moves the stage's progress over its share
    ``weight / sum(weights)``, in per mille of the stage.
    """
    if on_progress is None:
        return [None] * len(parts)
    if hasattr(on_progress, "phase"):
        return [on_progress.phase(part.name, part.unit) for part in parts]
    weights = [part.weight for part in parts]
    scale = 1000 / sum(weights)
    offsets = [sum(weights[:i]) for i in range(len(weights))]
    return [
        lambda done, total, offset=offset, weight=weight: on_progress(
            round((offset + weight * min(done, total) / max(total, 1)) * scale), 1000
        )
        for offset, weight in zip(offsets, weights)
    ]


def marker_name(stage: str) -> str:
    return f"stages/{stage}.json"


def stage_done(work: WorkDir, stage: str) -> bool:
    """The stage finished and every artifact it reported is still there (a deleted one makes it run again)."""
    if not work.path(marker_name(stage)).exists():
        return False
    return all(work.path(name).exists() for name in work.read_json(marker_name(stage))["artifacts"].values())


def run_stage_in(ctx: RoundContext, stage: str, on_progress: Progress = None) -> dict[str, Path]:
    """Run one stage of ``ctx``'s round unless its marker says it finished; returns its artifacts."""
    from wsis_core import stages

    if stage not in STAGES:
        raise WsisInputError(f"unknown stage {stage!r} (choose from {', '.join(STAGES)})")
    if stage_done(ctx.work, stage):
        marker = ctx.work.read_json(marker_name(stage))
        return {kind: ctx.work.path(name) for kind, name in marker["artifacts"].items()}
    started = time.perf_counter()
    ctx.notes = []
    artifacts = getattr(stages, f"stage_{stage}")(ctx, on_progress)
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
    path = Path(run_dir) / f"round_{round_number}" / marker_name(stage)
    return read_json(path).get("message", "") if path.exists() else ""


def round_evaluation(run_dir: Path, round_number: int) -> dict:
    """The round's ``evaluation.json`` (split, images, evaluated images, message; {} before evaluate)."""
    path = Path(run_dir) / f"round_{round_number}" / "evaluation.json"
    return read_json(path) if path.exists() else {}


def round_metrics(run_dir: Path, round_number: int) -> dict[str, float | None]:
    """The round's ``metrics.json`` ({} until its evaluate stage finished)."""
    path = Path(run_dir) / f"round_{round_number}" / "metrics.json"
    return read_json(path) if path.exists() else {}


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Write ``RUN/config.json``; an existing one must describe the same run."""
    path = Path(run_dir) / "config.json"
    if path.exists():
        if read_json(path) != config.to_dict():
            raise WsisInputError(f"{path}: the run was started with a different configuration")
        return
    write_json(path, config.to_dict())


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise WsisInputError(f"{run_dir}: not a run folder (no config.json)")
    return RunConfig.from_dict(read_json(path))


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
        work = WorkDir(Path(run_dir) / f"round_{number}")
        per_round.append({
            "round": number,
            "metrics": round_metrics(run_dir, number),
            "evaluation": round_evaluation(run_dir, number),
            "stage_seconds": stage_seconds(work, config.stages),
            "notes": stage_notes(work, config.stages),
        })
    summary = {"config": config.to_dict(), "rounds": per_round}
    write_json(Path(run_dir) / "summary.json", summary)
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
        for stage in config.stages:
            run_stage_in(ctx, stage, progress_for(f"round {number} {stage}"))
        write_summary(run_dir, config, rounds)
    return write_summary(run_dir, config, rounds)

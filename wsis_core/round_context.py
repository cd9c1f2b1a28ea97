"""A run's configuration and one round of it, as every stage sees them (:mod:`wsis_core.stages` runs the
stages, :mod:`wsis_core.rounds` orders and resumes them)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from wsis_core import run_layout
from wsis_core.choices import BOX_SOURCES, SUPERVISIONS
from wsis_core.data.dataset import WeakDataset, open_weak_dataset
from wsis_core.errors import WsisInputError
from wsis_core.io import read_json, write_json
from wsis_core.profiles import Profile, get_profile
from wsis_core.workdir import WorkDir

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; stored as ``RUN/config.json`` (see :mod:`wsis_core.run_layout`)."""

    data: str
    classes: tuple[str, ...]
    profile: str = "tiny"
    overrides: dict = field(default_factory=dict)  # dotted profile fields changed, e.g. {"instance.lr": 0.01}
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

    def build_profile(self) -> Profile:
        return get_profile(self.profile, {**self.overrides, "seed": self.seed})


class RoundContext:
    """One round of a run: its folders, config, profile, device and (lazily) its datasets."""

    def __init__(self, run_dir: Path, number: int, config: RunConfig, device: torch.device, round_dir: Path | None = None):
        self.run_dir = Path(run_dir)
        self.number = number
        self.config = config
        self.profile = config.build_profile()
        self.device = device
        self.work = WorkDir(round_dir if round_dir is not None else run_layout.round_dir(self.run_dir, number))
        self.notes: list[str] = []  # the running stage's notes (see :meth:`note`)

    def note(self, text: str) -> None:
        """Record (and log) what the running stage wants its user to read, e.g. a fallback on weak evidence or
        why no metrics were computed; the stage's marker keeps it (its ``message`` joins the notes)."""
        self.notes.append(text)
        logger.warning("round %d: %s", self.number, text)

    def previous(self) -> WorkDir:
        """The previous round's folder (rounds > 1)."""
        return WorkDir(run_layout.round_dir(self.run_dir, self.number - 1))

    def first(self) -> WorkDir:
        """Round 1's folder (its classifier, peaks and proposals serve every round)."""
        return self.work if self.number == 1 else WorkDir(run_layout.round_dir(self.run_dir, 1))

    @cached_property
    def train_set(self) -> WeakDataset:
        return open_weak_dataset(self.config.data, self.config.train_split)

    @cached_property
    def val_set(self) -> WeakDataset:
        return open_weak_dataset(self.config.data, self.config.val_split)


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Write ``RUN/config.json``; an existing one must describe the same run."""
    path = Path(run_dir) / run_layout.CONFIG
    if path.exists():
        if read_json(path) != config.to_dict():
            raise WsisInputError(f"{path}: the run was started with a different configuration")
        return
    write_json(path, config.to_dict())


def read_config(run_dir: Path) -> RunConfig:
    """``RUN/config.json``, checked: a configuration whose profile cannot be built (e.g. flat field names of
    before issue 21) is a one-line error naming the file."""
    path = Path(run_dir) / run_layout.CONFIG
    if not path.exists():
        raise WsisInputError(f"{run_dir}: not a run folder (no {run_layout.CONFIG})")
    config = RunConfig.from_dict(read_json(path))
    try:  # e.g. the flat profile field names of runs started before issue 21 (cls_epochs, now cls.epochs)
        config.build_profile()
    except WsisInputError as exc:
        raise WsisInputError(f"{path}: {exc}") from None
    return config

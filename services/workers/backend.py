"""The one seam between the services and the algorithm: the module that implements the round contract.

It is ``wsis_core.rounds`` unless ``WSIS_STAGE_BACKEND`` names another module (tests name a fake)::

    STAGES: tuple[str, ...]          ordered stage names of a round
    FULL_SUPERVISION_STAGES          the same for a ``supervision="full"`` run
    GPU_STAGES: frozenset[str]       stages routed to the ``gpu`` queue
    run_stage(stage, *, data, run_dir, round_number, config, device="auto", on_progress=None) -> {kind: path}
        (``config``: the run's config plus ``classes``, ``train_split``, ``val_split``)
    round_metrics(run_dir, round_number) -> {name: value}
    stage_message(run_dir, round_number, stage) -> str
        what a finished stage said (e.g. "no ground truth for split val: metrics not computed"); "" if nothing
"""

from __future__ import annotations

import importlib
from types import ModuleType

from services.common.settings import get_settings


def load() -> ModuleType:
    """The stage backend module named by the settings."""
    return importlib.import_module(get_settings().stage_backend)

"""The one way models are saved and loaded: state_dict + config + class list in a single torch file.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a reader
never sees half a checkpoint, and loaded with ``weights_only=True`` (no pickled code is executed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wsis_core.errors import WsisInputError
from wsis_core.io import atomic_file

FORMAT = "wsis-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: dict
    classes: list[str]


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, classes: Sequence[str]) -> Path:
    """Write ``model``'s weights (on CPU), ``config`` (plain values) and ``classes`` to ``path``."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config),
        "classes": list(classes),
    }
    with atomic_file(path) as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a file written by :func:`save_checkpoint` (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WsisInputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise WsisInputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WsisInputError(f"{path}: not a wsis checkpoint (expected format {FORMAT})")
    return Checkpoint(payload["state_dict"], payload["config"], payload["classes"])

"""Confinement of user-given and stored paths to a root folder (``WSIS_DATA_ROOT``, ``WSIS_ARTIFACT_ROOT``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from wsis_core.errors import WsisInputError

if TYPE_CHECKING:
    from services.common.settings import Settings


class OutsideRootError(ValueError):
    """A path that resolves outside its root folder (``..``, an absolute path, a symlink out)."""


class UnresolvablePathError(OutsideRootError):
    """A path whose symlinks cannot be resolved (a symlink loop)."""


def resolve_inside(root: Path, relative: str | Path) -> Path:
    """``root / relative`` with symlinks resolved; raises OutsideRootError if it is not under ``root``."""
    text = str(relative)
    if "\x00" in text:
        raise OutsideRootError(f"{text!r}: contains a NUL character")
    try:
        root = Path(root).resolve()
        path = (root / text).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (before Python 3.13)
        raise UnresolvablePathError(f"{text}: cannot be resolved (a symlink loop?)") from None
    if not path.is_relative_to(root):
        raise OutsideRootError(f"{text}: outside the root folder")
    return path


def relative_inside(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` (POSIX form); raises OutsideRootError if it is not under ``root``."""
    resolved = resolve_inside(root, path)
    return resolved.relative_to(Path(root).resolve()).as_posix()


def weights_file(settings: Settings, name: str) -> Path:
    """The backbone weights file ``name`` (relative to ``WSIS_WEIGHTS_ROOT``) with symlinks resolved;
    WsisInputError (naming only ``name``) unless it is a file inside that folder."""
    try:
        path = resolve_inside(settings.weights_root, name)
    except OutsideRootError:
        raise WsisInputError(f"backbone_weights {name!r}: outside WSIS_WEIGHTS_ROOT") from None
    if not path.is_file():
        raise WsisInputError(f"backbone_weights {name!r}: not found in WSIS_WEIGHTS_ROOT")
    return path

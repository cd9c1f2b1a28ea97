"""Confinement of the files a dataset names (classes, split lists, images, annotations, masks, COCO
``file_name``) to the dataset's folder, and defensive reads of its small text files.

Every path is resolved with its symlinks before the check, so neither ``..``, an absolute name nor a
symlink can lead a reader out of the folder. Messages name the file relative to the dataset folder
and never quote what a file holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from wsis_core.errors import WsisInputError

MAX_TEXT_BYTES = 64 << 20  # classes.txt, split lists, XML annotations: far above any real one


def inside(root: Path | str, candidate: Path | str, what: str) -> Path:
    """``candidate`` (relative to ``root``, or absolute) with symlinks resolved; WsisInputError unless it
    lies inside ``root``. ``what`` names the file in the message (e.g. ``"image"``)."""
    text = os.fspath(candidate)
    if "\x00" in text:
        raise WsisInputError(f"{what} name contains a NUL character")
    try:
        base = Path(root).resolve()
        path = (base / text).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise WsisInputError(f"{_shown(root, text)}: {what} path cannot be resolved (symlink loop?)") from None
    if not path.is_relative_to(base):
        raise WsisInputError(f"{_shown(root, text)}: {what} outside the dataset folder")
    return path


def read_text_inside(root: Path | str, candidate: Path | str, what: str, max_bytes: int | None = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a confined file (see :func:`inside`); one-line WsisInputError if it is missing,
    not a regular file, larger than ``max_bytes`` (None: no limit) or not UTF-8."""
    path = inside(root, candidate, what)
    shown = _shown(root, candidate)
    try:
        if not path.is_file():
            raise WsisInputError(f"{shown}: {what} not found")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise WsisInputError(f"{shown}: {what} larger than {max_bytes >> 20} MiB")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise WsisInputError(f"{shown}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise WsisInputError(f"{shown}: {what} cannot be read ({type(exc).__name__})") from None


def _shown(root: Path | str, candidate: Path | str) -> str:
    """``candidate`` as the dataset named it, below ``root`` unless it is absolute."""
    return os.fspath(Path(root) / candidate)

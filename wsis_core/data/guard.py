"""Label-leak guard: weakly supervised training may read images and image-level labels only.

Inside ``weak_supervision()`` two things raise :class:`LabelLeakError`:
building a ground-truth view (:class:`wsis_core.data.dataset.GroundTruth`), and opening any file
under a ground-truth folder (``SegmentationObject``/``SegmentationClass``) or a tagged folder's
``ground_truth.json``, caught by a Python audit hook so that no code path, however indirect, can
read training masks.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

from wsis_core.errors import LabelLeakError

GROUND_TRUTH_FOLDERS = ("SegmentationObject", "SegmentationClass")
GROUND_TRUTH_FILES = ("ground_truth.json",)

_state = threading.local()
_hook_installed = False


def _active() -> bool:
    return getattr(_state, "depth", 0) > 0


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _active() and isinstance(args[0], (str, bytes, os.PathLike)):
        parts = os.fsdecode(args[0]).replace("\\", "/").split("/")
        if any(folder in parts for folder in GROUND_TRUTH_FOLDERS) or parts[-1] in GROUND_TRUTH_FILES:
            raise LabelLeakError(f"weak supervision must not open ground truth: {os.fsdecode(args[0])}")


@contextmanager
def weak_supervision():
    """Run the enclosed code with ground-truth access forbidden (nestable, per thread)."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def ensure_ground_truth_allowed(what: str) -> None:
    """Raise LabelLeakError when called inside ``weak_supervision()``."""
    if _active():
        raise LabelLeakError(f"weak supervision must not read ground truth ({what})")

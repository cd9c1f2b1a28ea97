"""The work folder of one round: every stage reads and writes explicit, named artifacts here.

```
WORK/peaks.json                class peaks per image (PRM): {image_id: [{class, x, y, score}, ...]}
WORK/semantic_labels/<n>.png   semantic pseudo labels (palette PNG, 255 = ignore)
WORK/score_maps/<n>.npz        SS softmax score maps "scores" [C+1, H, W] float16
WORK/propagated/<n>.npz        random-walk propagated maps "scores" [C+1, H, W] float16 (O of Eq. 4)
WORK/models/<stage>.pt         checkpoints (state_dict + config + classes)
WORK/mil_boxes.json            MIL-selected boxes (COCO annotations over the train split)
WORK/ccgr_boxes.json           CCGR-refined boxes (COCO annotations)
WORK/pseudo_labels.json        pseudo instance labels (COCO annotations with RLE masks)
WORK/model.pt                  the trained IS branch; WORK/metrics.json its val metrics
WORK/stages/<stage>.json       marker of a finished stage
```
``<n>`` is the image file's stem. Writes are atomic (temp file + rename). The run around the rounds
(``RUN/config.json``, the proposal cache ``RUN/proposals/`` shared by every round) and every name above are
in :mod:`wsis_core.run_layout`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsis_core.data.palette import read_label_png, save_label_png
from wsis_core.errors import WsisInputError
from wsis_core.io import atomic_file, read_json, write_json


class WorkDir:
    """Paths and readers/writers of a round's artifacts."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def require(self, name: str) -> Path:
        """Path of an artifact an earlier stage must have written (one-line error otherwise)."""
        path = self.path(name)
        if not path.exists():
            raise WsisInputError(f"{path}: not found (run the stage that writes it first)")
        return path

    def write_json(self, name: str, obj) -> Path:
        write_json(self.path(name), obj)
        return self.path(name)

    def read_json(self, name: str):
        return read_json(self.require(name))

    def write_label(self, folder: str, stem: str, label: np.ndarray) -> None:
        with atomic_file(self.path(folder) / f"{stem}.png") as handle:
            save_label_png(handle, label)

    def read_label(self, folder: str, stem: str) -> np.ndarray:
        return read_label_png(self.require(f"{folder}/{stem}.png"))

    def write_scores(self, folder: str, stem: str, scores: np.ndarray) -> None:
        with atomic_file(self.path(folder) / f"{stem}.npz") as handle:
            np.savez_compressed(handle, scores=scores.astype(np.float16))

    def read_scores(self, folder: str, stem: str) -> np.ndarray:
        with np.load(self.require(f"{folder}/{stem}.npz")) as data:
            return data["scores"].astype(np.float32)


"""A fake of ``wsis_core.rounds`` for the service tests: the same contract, instant stages, real files.

Selected with ``WSIS_STAGE_BACKEND=integration.fake_rounds`` (``tests/`` on the import path).
``pseudo_labels`` writes a COCO file that pycocotools loads (one whole-image instance per image
label of the train split); ``evaluate`` writes fixed metrics. Like the real stages it is idempotent
(``COMPUTED`` lists the stages it actually computed in this process), reports progress per image,
and ``mil`` decodes every train image with the real loader (a corrupt image fails it with the
loader's message). Files in the dataset folder inject faults: ``fail_<stage>`` makes that stage
raise WsisInputError, ``hold_<stage>`` parks it half-way (progress 0.5) until the file is removed, and
``spin_<stage>`` keeps it busy while the file exists, reporting progress that never moves (one step of a
billion), like a stage configured with a million epochs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsis_core.data.dataset import open_weak_dataset
from wsis_core.data.images import load_rgb
from wsis_core.errors import WsisInputError
from wsis_core.io import read_json, write_json

STAGES = ("cues", "mil", "pseudo_labels", "evaluate")
FULL_SUPERVISION_STAGES = ("evaluate",)
GPU_STAGES = frozenset({"cues", "mil"})
METRICS = {"mAP_r@0.25": 41.5, "mAP_r@0.5": 22.0, "mAP_r@0.75": 5.25, "mAP_b@0.5": 30.0, "coco_segm_AP": None}
OUTPUTS = {"cues": ("score_maps", "score_maps"), "mil": ("mil_boxes", "mil_boxes.json"),
           "pseudo_labels": ("pseudo_labels", "pseudo_labels.json"), "evaluate": ("metrics", "metrics.json")}
COMPUTED: list[tuple[str, int]] = []
HOLD_POLL_S = 0.05


def run_stage(stage: str, *, data: Path, run_dir: Path, round_number: int, config: dict,
              device: str = "auto", on_progress=None) -> dict[str, Path]:
    kind, name = OUTPUTS[stage]
    out = Path(run_dir) / f"round_{round_number}" / name
    if out.exists():
        return {kind: out}
    if (Path(data) / f"fail_{stage}").exists():
        raise WsisInputError(f"{stage}: failure injected by the dataset folder")
    dataset = open_weak_dataset(data, config["train_split"])
    _spin(Path(data) / f"spin_{stage}", on_progress)
    for done in range(1, len(dataset) + 1):
        if on_progress is not None:
            on_progress(done, len(dataset))
        if done == len(dataset) // 2:
            _hold(Path(data) / f"hold_{stage}")
    COMPUTED.append((stage, round_number))
    {"cues": _score_maps, "mil": _boxes, "pseudo_labels": _pseudo_labels, "evaluate": _metrics}[stage](dataset, out)
    return {kind: out}


def round_metrics(run_dir: Path, round_number: int) -> dict[str, float | None]:
    path = Path(run_dir) / f"round_{round_number}" / "metrics.json"
    return read_json(path) if path.exists() else {}


def stage_message(run_dir: Path, round_number: int, stage: str) -> str:
    return ""


def _hold(marker: Path) -> None:
    """Wait while ``marker`` exists (the test removes it to let the stage go on)."""
    while marker.exists():
        time.sleep(HOLD_POLL_S)


def _spin(marker: Path, on_progress) -> None:
    """Report the first of a billion steps again and again while ``marker`` exists."""
    while marker.exists():
        if on_progress is not None:
            on_progress(1, 10**9)
        time.sleep(HOLD_POLL_S)


def _annotations(dataset, with_masks: bool) -> list[dict]:
    annotations = []
    for info in dataset.images:
        for label in info.labels:
            annotation = {"id": len(annotations) + 1, "image_id": info.id, "category_id": int(label),
                          "bbox": [0, 0, info.width, info.height], "area": info.width * info.height, "iscrowd": 0}
            if with_masks:
                rle = mask_utils.encode(np.asfortranarray(np.ones((info.height, info.width), np.uint8)))
                annotation["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            annotations.append(annotation)
    return annotations


def _score_maps(dataset, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for info in dataset.images:
        np.savez(tmp / f"{Path(info.path).stem}.npz", scores=np.zeros((2, 4, 4), np.float16))
    tmp.rename(out)


def _boxes(dataset, out: Path) -> None:
    for info in dataset.images:
        load_rgb(info.path)
    write_json(out, _annotations(dataset, with_masks=False))


def _pseudo_labels(dataset, out: Path) -> None:
    write_json(out, {
        "images": [{"id": info.id, "file_name": info.file_name, "width": info.width, "height": info.height}
                   for info in dataset.images],
        "categories": [{"id": i, "name": name} for i, name in enumerate(dataset.classes, start=1)],
        "annotations": _annotations(dataset, with_masks=True),
    })


def _metrics(_dataset, out: Path) -> None:
    write_json(out, METRICS)

"""The folders and file names of a run, in one place (rounds, stages, predictions, exports and the workers
read and write through these names)::

    RUN/config.json                    the run's configuration (``RunConfig``)
    RUN/summary.json                   per-round metrics, stage wall times and notes
    RUN/proposals/                     the selective-search cache, shared by every round
    RUN/<split>_gt.json                the ground truth of an evaluated split (COCO)
    RUN/round_<k>/                     round k's work folder (see :mod:`wsis_core.workdir`)
    RUN/round_<k>/stages/<stage>.json  marker of a finished stage: its artifacts, wall time and notes
"""

from __future__ import annotations

from pathlib import Path

CONFIG, SUMMARY, PROPOSALS = "config.json", "summary.json", "proposals"
ROUND_PREFIX = "round_"

# The artifacts of a round, relative to its folder.
CLASSIFIER, AFFINITY, SEGMENTATION, MIL = "models/classifier.pt", "models/affinity.pt", "models/segmentation.pt", "models/mil.pt"
PEAKS, TRAIN_PREDICTIONS, CUE_INSTANCES = "peaks.json", "train_predictions.json", "cue_instances.json"
MIL_BOXES, CCGR_BOXES, PSEUDO_LABELS = "mil_boxes.json", "ccgr_boxes.json", "pseudo_labels.json"
MODEL, METRICS, VAL_PREDICTIONS, EVALUATION = "model.pt", "metrics.json", "val_predictions.json", "evaluation.json"
SEMANTIC_LABELS, SCORE_MAPS, PROPAGATED = "semantic_labels", "score_maps", "propagated"


def round_dir(run_dir: str | Path, number: int) -> Path:
    """The folder of round ``number`` of the run in ``run_dir``."""
    return Path(run_dir) / f"{ROUND_PREFIX}{number}"


def rounds_with(run_dir: str | Path, name: str) -> list[int]:
    """The numbers of the rounds whose folder holds the artifact ``name`` (e.g. :data:`MODEL`)."""
    return [int(p.parent.name.split("_")[1]) for p in Path(run_dir).glob(f"{ROUND_PREFIX}*/{name}")]


def image_stem(info) -> str:
    """The name of an image's per-image artifacts (``semantic_labels/<n>.png``, ...): its file's stem."""
    return Path(info.file_name).stem


def marker_name(stage: str) -> str:
    """The marker a finished ``stage`` leaves in its round folder."""
    return f"stages/{stage}.json"


def ground_truth_name(split: str) -> str:
    """The COCO ground truth of ``split`` that the evaluate stage writes once per run."""
    return f"{split}_gt.json"

"""Inference with a trained run: the IS branch only (no proposals, no CCGR), as in the paper."""

from __future__ import annotations

from pathlib import Path

from wsis_core import run_layout
from wsis_core.data.dataset import open_image_folder, open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.instance_seg.engine import predict_instances
from wsis_core.instance_seg.model import load_mask_rcnn
from wsis_core.round_context import read_config


def last_round(run_dir: Path) -> int:
    """The highest round number whose IS model exists."""
    finished = run_layout.rounds_with(run_dir, run_layout.MODEL)
    if not finished:
        raise WsisInputError(f"{run_dir}: no round has a trained model yet")
    return max(finished)


def _model_path(run_dir: Path, round_number: int | None) -> Path:
    round_number = last_round(run_dir) if round_number is None else round_number
    model_path = run_layout.round_dir(run_dir, round_number) / run_layout.MODEL
    if not model_path.exists():
        raise WsisInputError(f"{run_dir}: round {round_number} has no trained model")
    return model_path


def _predict(run_dir: Path, round_number: int | None, dataset, device: str, on_progress) -> list[dict]:
    config = read_config(run_dir)
    model_path = _model_path(run_dir, round_number)
    profile = config.build_profile()
    model = load_mask_rcnn(model_path, len(config.classes) + 1, cfg=profile.instance, backbone=profile.backbone)
    return predict_instances(model, dataset, device=resolve_device(device), score_threshold=profile.instance.score_threshold,
                             batch_size=profile.infer_batch_size, on_progress=on_progress)


def predict_run(run_dir: Path, round_number: int | None, data, split: str, device: str = "auto", on_progress=None) -> list[dict]:
    """COCO results of a run's IS model (``round_number`` or the last round) on a dataset split."""
    config = read_config(run_dir)
    dataset = open_weak_dataset(data, split)
    if tuple(dataset.classes) != tuple(config.classes):
        raise WsisInputError(f"{data}: its classes {dataset.classes} differ from the run's {list(config.classes)}")
    return _predict(run_dir, round_number, dataset, device, on_progress)


def predict_images(run_dir: Path, round_number: int | None, folder, device: str = "auto", on_progress=None) -> dict:
    """A run's IS model on every image under ``folder`` (no tags needed): a COCO file whose ``images`` map
    the ids 1..N to file names (relative to ``folder``, sorted), ``categories`` name the run's classes and
    ``annotations`` are the COCO results (with ``score``)."""
    config = read_config(run_dir)
    _model_path(run_dir, round_number)  # fail before reading every image header
    dataset = open_image_folder(folder)
    results = _predict(run_dir, round_number, dataset, device, on_progress)
    images = [{"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in dataset.images]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(config.classes)]
    return {"images": images, "categories": categories,
            "annotations": [{"id": n, **r} for n, r in enumerate(results, start=1)]}

"""Inference with a trained run: the IS branch only (no proposals, no CCGR), as in the paper."""

from __future__ import annotations

from pathlib import Path

from wsis_core.data.dataset import open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.instance_seg import load_mask_rcnn, predict_instances
from wsis_core.rounds import read_config


def last_round(run_dir: Path) -> int:
    """The highest round number whose IS model exists."""
    finished = [int(p.parent.name.split("_")[1]) for p in run_dir.glob("round_*/model.pt")]
    if not finished:
        raise WsisInputError(f"{run_dir}: no round has a trained model yet")
    return max(finished)


def predict_run(run_dir: Path, round_number: int | None, data, split: str, device: str = "auto", on_progress=None) -> list[dict]:
    """COCO results of a run's IS model (``round_number`` or the last round) on a dataset split."""
    config = read_config(run_dir)
    round_number = last_round(run_dir) if round_number is None else round_number
    model_path = run_dir / f"round_{round_number}" / "model.pt"
    if not model_path.exists():
        raise WsisInputError(f"{run_dir}: round {round_number} has no trained model")
    dataset = open_weak_dataset(data, split)
    if tuple(dataset.classes) != tuple(config.classes):
        raise WsisInputError(f"{data}: its classes {dataset.classes} differ from the run's {list(config.classes)}")
    profile = config.build_profile()
    model = load_mask_rcnn(profile, len(config.classes) + 1, model_path)
    return predict_instances(model, dataset, device=resolve_device(device), score_threshold=profile.is_score_threshold,
                             batch_size=profile.infer_batch_size, on_progress=on_progress)

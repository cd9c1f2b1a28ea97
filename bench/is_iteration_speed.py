"""Time per iteration of the IS stage (wsis_core.instance_seg.engine.train_instance_segmentation) against a bare
torchvision Mask R-CNN training loop on the same batches.

Both sides get the same model (same config, same initial weights), the same batches in the same order,
the same optimizer and lr schedule (SGD momentum 0.9, warm-up + steps) and the same torch seed, so both
run the very same computation and only the loop around it differs. The bare loop is the torchvision
``references/detection`` inner loop on batches materialised in memory beforehand (no image decoding,
no RLE decoding); the IS stage reads images and decodes the RLE masks inside its timed loop. Flips are
off on both sides. The two alternate for ``--rounds`` rounds of ``--epochs`` epochs of ``--iters``
iterations (``iters x batch`` synthetic images), taking turns at going first, so that drift in the load
of a shared machine hits both alike. Reported: the median steady-state iteration (the headline) and the
median round's wall time per iteration, which adds the start-up (DataLoader workers, first batch). On a GPU the IS stage loads
its batches in DataLoader workers (``--workers``), as it should be run there; in one process, image and
RLE decoding (~20 ms a batch of four 160 px images) would cost as much as the GPU's iteration.

    PYTHONPATH=. python bench/is_iteration_speed.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wsis_core.choices import PRECISIONS
from wsis_core.data.convert import ground_truth_to_coco
from wsis_core.data.dataset import open_ground_truth, open_weak_dataset
from wsis_core.data.synth import generate_dataset
from wsis_core.device import forward_precision, resolve_device, resolve_precision
from wsis_core.instance_seg.engine import seeded_rng, sgd_schedule, train_instance_segmentation
from wsis_core.instance_seg.model import build_mask_rcnn
from wsis_core.instance_seg.targets import InstanceTargets, group_by_image, instance_loader, to_device
from wsis_core.profiles import InstanceConfig

WEIGHT_DECAY = 1e-4


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_torchvision_round(
    model, batches, *, lr: float, seed: int, device: torch.device, precision: str, tick: Callable[[], None]
) -> None:
    """One round of the torchvision reference loop over in-memory batches (same optimizer, schedule and
    autocast as the IS stage); ``tick()`` after each iteration."""
    optimizer, scheduler = sgd_schedule(model, len(batches), lr=lr, weight_decay=WEIGHT_DECAY)
    model.train()
    with seeded_rng(seed, device):
        for images, targets in batches:
            with forward_precision(device, precision):
                loss = sum(model(*to_device(images, targets, device)).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()
            tick()


def summary(rounds: list[list[float]]) -> dict[str, float]:
    """Per-iteration seconds from each round's timestamps (round start first): the median steady-state
    iteration (each round's first iteration, which pays for start-up, left out) and the median round's
    wall time per iteration (start-up included)."""
    steps = [b - a for stamps in rounds for a, b in zip(stamps[1:], stamps[2:])]
    return {
        "steady": statistics.median(steps),
        "round": statistics.median((stamps[-1] - stamps[0]) / (len(stamps) - 1) for stamps in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--size", type=int, default=160, help="synthetic image side (px); also min/max size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=20, help="iterations per round (one epoch)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per round (worker start-up is paid once a round)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each loop")
    parser.add_argument("--workers", type=int, default=-1, help="IS stage DataLoader workers (-1: 4 on GPU, 0 on CPU)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--proposals", type=int, default=300, help="RPN proposals per training image")
    parser.add_argument("--rois", type=int, default=64, help="RoIs sampled per image")
    parser.add_argument("--mask-channels", type=int, default=256)
    parser.add_argument("--fpn-channels", type=int, default=256)
    parser.add_argument("--box-head-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="of both loops' forward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    workers = args.workers if args.workers >= 0 else (0 if device.type == "cpu" else 4)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "synth"
        generate_dataset(data, n_train=args.iters * args.batch, n_val=0, size=args.size, seed=args.seed)
        dataset = open_weak_dataset(data, "train")
        annotations = ground_truth_to_coco(open_ground_truth(data, "train"))["annotations"]
        loader = instance_loader(InstanceTargets(dataset, group_by_image(annotations)), args.batch, seed=args.seed)
        batches = [batch for _ in range(args.epochs) for batch in loader]  # the stage's epochs, same shuffles

        torch.manual_seed(args.seed)
        stage_model = build_mask_rcnn(
            len(dataset.classes) + 1, args.backbone, min_size=args.size, max_size=args.size,
            proposals_per_image=args.proposals, rois_per_image=args.rois, mask_head_channels=args.mask_channels,
            fpn_channels=args.fpn_channels, box_head_size=args.box_head_size,
        ).to(device)
        bare_model = copy.deepcopy(stage_model)
        cfg = InstanceConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, weight_decay=WEIGHT_DECAY,
                             precision=precision)

        def stage_round(tick: Callable[[], None]) -> None:
            train_instance_segmentation(
                stage_model, dataset, annotations, cfg=cfg, device=device, num_workers=workers, flip=False,
                seed=args.seed, on_progress=lambda done, total: tick(),
            )

        def bare_round(tick: Callable[[], None]) -> None:
            bare_torchvision_round(
                bare_model, batches, lr=args.lr, seed=args.seed, device=device, precision=precision, tick=tick
            )

        stamps: dict[str, list[list[float]]] = {"is_stage": [], "bare_torchvision": []}
        loops = [("is_stage", stage_round), ("bare_torchvision", bare_round)]
        for round_index in range(args.rounds):
            for name, run in loops[:: 1 if round_index % 2 == 0 else -1]:  # alternate which goes first
                synchronize(device)
                round_stamps = [time.perf_counter()]
                run(lambda: round_stamps.append(time.perf_counter()))  # both sync on the loss every iteration
                stamps[name].append(round_stamps)

    times = {name: summary(rounds) for name, rounds in stamps.items()}
    report = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "is_stage_workers": workers,
        "precision": precision,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "iterations_per_round": len(batches),
        "seconds_per_iteration": times,
        "overhead_percent": {
            kind: 100 * (times["is_stage"][kind] / times["bare_torchvision"][kind] - 1) for kind in ("steady", "round")
        },
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

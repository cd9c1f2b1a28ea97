"""The IS branch's engine: lr schedule, training, prediction and COCO conversion of its results.

:func:`train_instance_segmentation` is the torchvision ``references/detection`` loop. The paper trains
the IS branch with lr 1e-2 at batch size 16 ("Implementation details"), which is Detectron's SGD
setting for Mask R-CNN (for Adam, which the paper names as its solver, 1e-2 is two orders of magnitude
above its usual range), so this loop uses SGD (momentum 0.9) with the references' linear warm-up
from 1e-3 x lr, here over the first 10 % of the iterations (at most 1000), and Detectron's step
schedule (lr x 0.1 after 2/3 and 8/9 of the iterations). Scale lr with the batch size (1e-2 at 16).
``precision="bf16"`` runs the forward pass under bfloat16 autocast (``torch.autocast``), the usual
mixed-precision recipe: on 2 CPU cores with AVX-512 BF16 it takes a quarter off the ``tiny`` IS stage at
the same mAP (bench/results/is_precision_cpu.md); ``"auto"`` uses it where the device has bf16 natively.

Determinism: training draws from torch's RNG forked and seeded with ``seed`` (sampling of anchors and
RoIs, flips, shuffling), so a seed gives the same losses on the CPU; CUDA's RoIAlign backward
accumulates atomically, so GPU runs can differ in the last bits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN

from wsis_core import masks
from wsis_core.data.guard import weak_supervision
from wsis_core.device import forward_precision, resolve_precision
from wsis_core.errors import WsisInputError
from wsis_core.instance_seg.model import model_num_classes
from wsis_core.instance_seg.targets import (
    InstanceTargets,
    Target,
    group_by_image,
    image_tensor,
    instance_loader,
    to_device,
)
from wsis_core.profiles import InstanceConfig
from wsis_core.progress import Progress

_MOMENTUM = 0.9
_WARMUP_START = 1e-3  # lr factor of the first warm-up iteration (torchvision references)
_MAX_WARMUP_ITERS = 1000
_WARMUP_FRACTION_INV = 10  # warm-up over the first 1/10 of the iterations
_LR_DROPS = (2 / 3, 8 / 9)  # fractions of the iterations after which the lr is divided by 10


def lr_factor(total_iters: int, warmup_iters: int) -> Callable[[int], float]:
    """Multiplier of the base lr at each iteration: linear warm-up from 1e-3, then x0.1 at 2/3 and 8/9."""
    milestones = [math.floor(fraction * total_iters) for fraction in _LR_DROPS]

    def factor(iteration: int) -> float:
        warmup = 1.0
        if iteration < warmup_iters:
            warmup = _WARMUP_START + (1 - _WARMUP_START) * iteration / warmup_iters
        return warmup * 0.1 ** sum(iteration >= m for m in milestones)

    return factor


def sgd_schedule(
    model: nn.Module, total_iters: int, *, lr: float, weight_decay: float
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (momentum 0.9) on the trainable parameters and its per-iteration :func:`lr_factor` schedule,
    warming up over the first 10 % of the iterations (at most 1000)."""
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=_MOMENTUM, weight_decay=weight_decay
    )
    warmup = min(_MAX_WARMUP_ITERS, total_iters // _WARMUP_FRACTION_INV)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(total_iters, warmup))


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """torch's RNG (CPU and ``device``) forked and seeded with ``seed`` inside the block, restored after it."""
    accelerators = [] if device.type == "cpu" else [device.index if device.index is not None else 0]
    with torch.random.fork_rng(devices=accelerators, device_type=device.type):
        torch.manual_seed(seed)
        yield


def train_instance_segmentation(
    model: MaskRCNN,
    dataset,
    annotations: Sequence[dict],
    *,
    cfg: InstanceConfig,
    device: torch.device,
    num_workers: int = 0,
    flip: bool = True,
    seed: int = 0,
    epoch_images: int | None = None,
    on_progress: Progress = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``dataset``'s images with the COCO ``annotations`` (the pseudo labels), with the
    epochs, batch size, lr, weight decay and precision of ``cfg`` (``profile.instance``).

    :func:`sgd_schedule` over all ``cfg.epochs`` (each of at most ``epoch_images`` images, a fresh random subset;
    None: all): SGD (momentum 0.9, ``cfg.weight_decay``), lr ``cfg.lr`` warmed up
    over the first 10 % of the iterations and x0.1 after 2/3 and 8/9 of them. Returns the history, one value per
    iteration, of ``loss`` (L_IS), each torchvision loss term (``loss_classifier``, ``loss_box_reg``,
    ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``) and ``lr``. The model ends on ``device`` in
    eval mode. ``cfg.precision`` ``"bf16"`` runs the forward pass under bfloat16 autocast (weights, gradients
    and the optimizer stay float32), ``"fp32"`` in float32, ``"auto"`` bf16 where ``device`` computes it
    natively (:func:`wsis_core.device.resolve_precision`). ``on_progress(done, total)`` is called after every
    iteration.
    """
    precision = resolve_precision(cfg.precision, device)
    targets = InstanceTargets(dataset, group_by_image(annotations), flip=flip)
    classes = {int(ann["category_id"]) for _, anns in targets.items for ann in anns}
    num_classes = model_num_classes(getattr(model, "module", model))  # a DDP-wrapped model holds it as .module
    if classes and not (min(classes) >= 1 and max(classes) < num_classes):
        raise WsisInputError(
            f"category ids {sorted(classes)} outside 1..{num_classes - 1} (the model's classes)"
        )
    if len(targets) == 0:
        raise WsisInputError("no image has an instance annotation: nothing to train the IS branch on")
    loader = instance_loader(
        targets, cfg.batch_size, seed=seed, epoch_images=epoch_images, num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    optimizer, scheduler = sgd_schedule(model, cfg.epochs * len(loader), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: dict[str, list[float]] = defaultdict(list)
    model.to(device).train()
    with weak_supervision(), seeded_rng(seed, device):
        for _ in range(cfg.epochs):
            for images, batch_targets in loader:
                with forward_precision(device, precision):
                    loss_terms = model(*to_device(images, batch_targets, device))
                loss = sum(loss_terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                history["lr"].append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
                values = torch.stack([loss.detach(), *(v.detach() for v in loss_terms.values())]).tolist()
                if not math.isfinite(values[0]):
                    raise FloatingPointError(f"IS loss is {values[0]} at iteration {len(history['loss']) + 1}: lower lr")
                for name, value in zip(("loss", *loss_terms), values):
                    history[name].append(value)
                if on_progress is not None:
                    on_progress(len(history["loss"]), cfg.epochs * len(loader))
    model.eval()
    return dict(history)


def predict_instances(
    model: MaskRCNN,
    dataset,
    *,
    device: torch.device,
    score_threshold: float = 0.05,
    mask_threshold: float = 0.5,
    batch_size: int = 8,
    on_progress: Progress = None,
) -> list[dict]:
    """COCO results of the IS branch alone on every image of ``dataset`` (paper, "Overview").

    One result per detection scoring above ``score_threshold``: ``image_id``, ``category_id``,
    ``segmentation`` (the mask probability > ``mask_threshold``, RLE with str counts, at the image's
    resolution), ``bbox`` (the detected box, [x, y, w, h]) and ``score``. Detections whose mask is empty
    are left out (they could only be false positives).
    """
    model.to(device).eval()
    results: list[dict] = []
    starts = range(0, len(dataset.images), batch_size)
    model_threshold = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = score_threshold  # filtered before the masks are pasted
    try:
        with torch.inference_mode():
            for done, start in enumerate(starts, start=1):
                positions = range(start, min(start + batch_size, len(dataset.images)))
                outputs = model([image_tensor(dataset.load_image(i)).to(device) for i in positions])
                for i, output in zip(positions, outputs):
                    results.extend(coco_results(dataset.images[i].id, output, mask_threshold))
                if on_progress is not None:
                    on_progress(done, len(starts))
    finally:
        model.roi_heads.score_thresh = model_threshold
    return results


def coco_results(image_id: int, output: Target, mask_threshold: float) -> list[dict]:
    """One image's Mask R-CNN output (eval mode) as COCO results."""
    binary = (output["masks"][:, 0] > mask_threshold).cpu().numpy()
    boxes, labels, scores = (output[key].tolist() for key in ("boxes", "labels", "scores"))
    return [
        {
            "image_id": image_id,
            "category_id": int(label),
            "segmentation": masks.encode(mask),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
        }
        for mask, (x1, y1, x2, y2), label, score in zip(binary, boxes, labels, scores)
        if mask.any()
    ]

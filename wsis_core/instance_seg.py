"""The instance segmentation (IS) branch: torchvision Mask R-CNN trained on the pseudo instance labels.

Paper, "Instance segmentation branch": the IS branch is Mask R-CNN (He et al. 2017) with the loss
L_IS = L_cls + L_box + L_mask, whose mask targets are the pseudo labels made by CCGR (no annotated
mask is used). At test time "the inference only needs to take a forward pass through the IS branch"
(paper, "Overview"): :func:`predict_instances` uses neither proposals nor CCGR.

* :func:`build_mask_rcnn`: Mask R-CNN with an FPN on ResNet-18 (``tiny``) or ResNet-50 (the paper's
  backbone, "Implementation details"), ``num_classes`` = C + 1 (background). The IS branch owns its copy
  of the backbone; it starts from random weights or a local torchvision ResNet ``state_dict`` (never
  downloaded). As in torchvision's ``maskrcnn_resnet50_fpn``, pretrained weights get frozen batch norm
  and 3 trainable stages, random weights get ordinary batch norm and all 5 stages trainable.
  Training from random weights is kept stable by two standard initialisations: zero-initialised last
  batch norm of every residual block (Goyal et al. 2017), and the mask predictor's logits layer drawn
  with std 1e-3 as in Detectron2 (torchvision's Kaiming init starts the mask loss at ~9 and made every
  tried lr diverge). ``mask_head_channels`` (He et al.: 256) can thin the mask head, which dominates
  the CPU cost of an iteration since its four 3x3 convolutions run on every positive RoI.
  Anchors: torchvision's FPN anchors are 32..512 px on P2..P6 for an 800 px short side; they are scaled
  with ``min_size`` but kept at least 16 px on P2 (4x its stride), so 160 px images get 16..256 px
  anchors (objects of the synthetic data are ~15-100 px), and 800 px images torchvision's own.
* :class:`InstanceTargets`: the weak dataset + COCO pseudo labels as torchvision detection targets.
  Images without any pseudo instance are **skipped**, not kept as negatives: every training image has
  at least one class (its image-level labels), so an image without pseudo label is one where the cue
  stages found nothing, and training it as background would teach the model to miss its objects.
* :func:`train_instance_segmentation`: the torchvision ``references/detection`` loop. The paper trains
  the IS branch with lr 1e-2 at batch size 16 ("Implementation details"), which is Detectron's SGD
  setting for Mask R-CNN (for Adam, which the paper names as its solver, 1e-2 is two orders of magnitude
  above its usual range), so this loop uses SGD (momentum 0.9) with the references' linear warm-up
  from 1e-3 x lr, here over the first 10 % of the iterations (at most 1000), and Detectron's step
  schedule (lr x 0.1 after 2/3 and 8/9 of the iterations). Scale lr with the batch size (1e-2 at 16).
  ``precision="bf16"`` runs the forward pass under bfloat16 autocast (``torch.autocast``), the usual
  mixed-precision recipe: on 2 CPU cores with AVX-512 BF16 it takes a quarter off the ``tiny`` IS stage at
  the same mAP (bench/results/is_precision_cpu.md); ``"auto"`` uses it where the device has bf16 natively.
* Rounds (paper, "Iterative optimization"): the IS branch is retrained every round on the new pseudo
  labels. Pass the previous round's model (same ``num_classes``) to warm-start it; the warm-up still
  runs, so the new labels do not meet the full lr at once.

Determinism: training draws from torch's RNG forked and seeded with ``seed`` (sampling of anchors and
RoIs, flips, shuffling), so a seed gives the same losses on the CPU; CUDA's RoIAlign backward
accumulates atomically, so GPU runs can differ in the last bits.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from wsis_core import masks
from wsis_core.backbone import BACKBONES, _load_weights
from wsis_core.checkpoint import load_checkpoint
from wsis_core.data.guard import weak_supervision
from wsis_core.device import forward_precision, resolve_precision
from wsis_core.errors import WsisInputError
from wsis_core.profiles import PRECISIONS

Progress = Callable[[int, int], None] | None
Target = dict[str, torch.Tensor]

_ASPECT_RATIOS = (0.5, 1.0, 2.0)
_FPN_LEVELS = 5  # P2..P6
_BOX_ROI_SIDE = 7  # torchvision's box RoIAlign output (7 x 7)
_MASK_HEAD_CONVS = 4  # He et al. 2017: four 3x3 convolutions before the 2x deconvolution
_TORCHVISION_MIN_SIZE = 800
_TORCHVISION_SMALLEST_ANCHOR = 32
_SMALLEST_ANCHOR_FLOOR = 16
_MASK_LOGITS_INIT_STD = 1e-3  # Detectron2's mask predictor init
_MOMENTUM = 0.9
_WARMUP_START = 1e-3  # lr factor of the first warm-up iteration (torchvision references)
_MAX_WARMUP_ITERS = 1000
_WARMUP_FRACTION_INV = 10  # warm-up over the first 1/10 of the iterations
_LR_DROPS = (2 / 3, 8 / 9)  # fractions of the iterations after which the lr is divided by 10


# ------------------------------------------------------------------------------------------ model
def anchor_sizes(min_size: int) -> tuple[int, ...]:
    """Anchor side per FPN level P2..P6: torchvision's 32..512 scaled by ``min_size / 800``, at least 16..256."""
    smallest = max(_SMALLEST_ANCHOR_FLOOR, round(_TORCHVISION_SMALLEST_ANCHOR * min_size / _TORCHVISION_MIN_SIZE))
    return tuple(smallest * 2**level for level in range(_FPN_LEVELS))


def build_mask_rcnn(
    num_classes: int,
    backbone: str = "resnet18",
    *,
    backbone_weights: str | Path | None = None,
    backbone_weights_sha256: str | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    trainable_layers: int | None = None,
    proposals_per_image: int = 2000,
    rois_per_image: int = 512,
    mask_head_channels: int = 256,
    fpn_channels: int = 256,
    box_head_size: int = 1024,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone; ``num_classes`` counts the background (C + 1).

    ``min_size`` / ``max_size``: images are resized so that the short side is ``min_size`` unless the
    long side would exceed ``max_size`` (torchvision's defaults 800 / 1333 are the paper's Mask R-CNN).
    ``trainable_layers``: ResNet stages fine-tuned (0-5); default 3 with ``backbone_weights``, else 5.
    ``proposals_per_image``: RPN proposals kept per image in training (half of it at test time;
    torchvision: 2000). ``rois_per_image``: RoIs sampled per image for the box and mask losses
    (torchvision: 512; at most a quarter of them are positives, which also feed the mask head).
    ``mask_head_channels``: width of the mask head's four convolutions (He et al.: 256). Small images
    have few objects: lowering these three cuts most of an iteration's cost. ``fpn_channels``: width of
    the FPN outputs, which the RPN head's 3x3 convolution, the box head and the mask head read (Lin et
    al. 2017 and torchvision: 256). ``box_head_size``: width of the box head's two fully connected
    layers (torchvision: 1024).
    """
    if backbone not in BACKBONES:
        raise WsisInputError(f"unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)})")
    if num_classes < 2:
        raise WsisInputError(f"num_classes counts the background and must be at least 2, got {num_classes}")
    if trainable_layers is None:
        trainable_layers = 5 if backbone_weights is None else 3
    if not 0 <= trainable_layers <= 5:
        raise WsisInputError(f"trainable_layers must be between 0 and 5, got {trainable_layers}")
    norm_layer = nn.BatchNorm2d if backbone_weights is None else FrozenBatchNorm2d
    resnet: torchvision.models.ResNet = BACKBONES[backbone](
        weights=None, norm_layer=norm_layer, zero_init_residual=backbone_weights is None
    )
    if backbone_weights is not None:
        _load_weights(resnet, Path(backbone_weights), backbone, backbone_weights_sha256)
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in anchor_sizes(min_size)), aspect_ratios=(_ASPECT_RATIOS,) * _FPN_LEVELS
    )
    mask_predictor = MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes)
    nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=_MASK_LOGITS_INIT_STD)
    nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)
    test_proposals = max(1, proposals_per_image // 2)
    return MaskRCNN(
        _fpn_backbone(resnet, trainable_layers, fpn_channels),
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=proposals_per_image,
        rpn_post_nms_top_n_train=proposals_per_image,
        rpn_pre_nms_top_n_test=test_proposals,
        rpn_post_nms_top_n_test=test_proposals,
        box_batch_size_per_image=rois_per_image,
        box_head=TwoMLPHead(fpn_channels * _BOX_ROI_SIDE**2, box_head_size),
        box_predictor=FastRCNNPredictor(box_head_size, num_classes),
        mask_head=MaskRCNNHeads(fpn_channels, (mask_head_channels,) * _MASK_HEAD_CONVS, dilation=1),
        mask_predictor=mask_predictor,
    )


def _fpn_backbone(resnet: torchvision.models.ResNet, trainable_layers: int, channels: int):
    """torchvision's ResNet-FPN (its stage freezing, P2..P6) with ``channels`` FPN outputs instead of 256."""
    backbone = _resnet_fpn_extractor(resnet, trainable_layers)
    if channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = channels
    return backbone


def mask_rcnn_for(profile, num_classes: int) -> MaskRCNN:
    """The IS branch a :class:`wsis_core.profiles.Profile` asks for, with C + 1 outputs (``num_classes``
    counts the background). Checkpoints of a run are rebuilt with the same call."""
    return build_mask_rcnn(
        num_classes, profile.backbone, backbone_weights=profile.backbone_weights,
        backbone_weights_sha256=profile.backbone_weights_sha256, min_size=profile.is_min_size,
        max_size=profile.is_max_size, proposals_per_image=profile.is_proposals, rois_per_image=profile.is_rois,
        mask_head_channels=profile.is_mask_channels, fpn_channels=profile.is_fpn_channels,
        box_head_size=profile.is_box_head_size,
    )


# Profile fields that shape the IS branch's weights: a model is rebuilt with the values saved in its checkpoint,
# whatever the defaults are now. Checkpoints saved before the two width fields existed used torchvision's widths.
ARCHITECTURE_FIELDS = ("backbone", "is_mask_channels", "is_fpn_channels", "is_box_head_size")
_WIDTHS_OF_OLDER_CHECKPOINTS = {"is_fpn_channels": 256, "is_box_head_size": 1024}


def load_mask_rcnn(profile, num_classes: int, path: Path) -> MaskRCNN:
    """A trained IS branch from its checkpoint: the architecture fields of the profile saved with it
    (:data:`ARCHITECTURE_FIELDS`), the rest from ``profile``; the local backbone weights are not needed again."""
    checkpoint = load_checkpoint(path)
    saved = {**_WIDTHS_OF_OLDER_CHECKPOINTS,
             **{name: checkpoint.config[name] for name in ARCHITECTURE_FIELDS if name in checkpoint.config}}
    model = mask_rcnn_for(dataclasses.replace(profile, backbone_weights=None, backbone_weights_sha256=None, **saved),
                          num_classes)
    model.load_state_dict(checkpoint.state_dict)
    return model


def model_num_classes(model: MaskRCNN) -> int:
    """Number of classes of the model's box predictor, background included."""
    return model.roi_heads.box_predictor.cls_score.out_features


# ------------------------------------------------------------------------------------------- data
def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → float [3, H, W] in 0..1 (Mask R-CNN normalises and resizes itself)."""
    return torch.tensor(image, dtype=torch.float32).permute(2, 0, 1).div_(255)


def group_by_image(annotations: Iterable[dict]) -> dict[int, list[dict]]:
    """COCO annotations grouped by ``image_id``."""
    grouped: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations:
        grouped[int(ann["image_id"])].append(ann)
    return dict(grouped)


class InstanceTargets(Dataset):
    """Images of a weak dataset with their COCO (pseudo) instances as torchvision detection targets.

    Item ``k``: (float [3, H, W] image in 0..1, {``boxes`` float [N, 4] x1y1x2y2 from the annotation
    ``bbox``, ``labels`` int64 [N] (``category_id``), ``masks`` uint8 [N, H, W] from the RLE}).
    Only images with at least one instance are items (see the module docstring); annotations whose box
    has no width or height are dropped (torchvision rejects them). With ``flip``, each item is mirrored
    horizontally with probability 1/2, drawn from torch's RNG (in a DataLoader worker, the worker's).
    """

    def __init__(self, dataset, annotations_by_image: Mapping[int, Sequence[dict]], *, flip: bool = False):
        positions = {info.id: index for index, info in enumerate(dataset.images)}
        unknown = sorted(set(annotations_by_image) - set(positions))
        if unknown:
            raise WsisInputError(f"annotations refer to image ids not in the dataset: {unknown[:5]}")
        self.dataset = dataset
        self.flip = flip
        self.items: list[tuple[int, list[dict]]] = []
        for image_id in sorted(annotations_by_image, key=positions.__getitem__):
            info = dataset.images[positions[image_id]]
            kept = [ann for ann in annotations_by_image[image_id] if ann["bbox"][2] > 0 and ann["bbox"][3] > 0]
            for ann in kept:
                if list(ann["segmentation"]["size"]) != [info.height, info.width]:
                    raise WsisInputError(
                        f"image {image_id}: mask size {ann['segmentation']['size']} is not the image's "
                        f"{[info.height, info.width]}"
                    )
            if kept:
                self.items.append((positions[image_id], kept))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, Target]:
        index, anns = self.items[k]
        image = image_tensor(self.dataset.load_image(index))
        instance_masks = torch.from_numpy(np.stack([masks.decode(ann["segmentation"]) for ann in anns])).to(torch.uint8)
        xywh = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32)
        boxes = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1)
        labels = torch.tensor([ann["category_id"] for ann in anns], dtype=torch.int64)
        if self.flip and torch.rand(()) < 0.5:
            width = image.shape[-1]
            image, instance_masks = image.flip(-1), instance_masks.flip(-1)
            boxes = torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1)
        return image, {"boxes": boxes, "labels": labels, "masks": instance_masks}


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists of images and targets (images of different sizes cannot be stacked)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def instance_loader(
    targets: InstanceTargets,
    batch_size: int,
    *,
    seed: int,
    epoch_images: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled training batches of ``targets``, at most ``epoch_images`` images (a fresh random subset) per
    pass over the loader (None: all); the order (and the workers' RNG) follow ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    subset = epoch_images is not None and epoch_images < len(targets)
    # shuffle=True when the epoch is every image: RandomSampler with num_samples set draws one extra permutation.
    sampler = RandomSampler(targets, num_samples=epoch_images, generator=generator) if subset else None
    return DataLoader(
        targets,
        batch_size=batch_size,
        shuffle=not subset,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=generator,
    )


def to_device(
    images: Sequence[torch.Tensor], targets: Sequence[Target], device: torch.device
) -> tuple[list[torch.Tensor], list[Target]]:
    return (
        [image.to(device, non_blocking=True) for image in images],
        [{key: value.to(device, non_blocking=True) for key, value in target.items()} for target in targets],
    )


# --------------------------------------------------------------------------------------- training
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
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    device: torch.device,
    num_workers: int = 0,
    flip: bool = True,
    seed: int = 0,
    epoch_images: int | None = None,
    precision: str = "fp32",
    on_progress: Progress = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``dataset``'s images with the COCO ``annotations`` (the pseudo labels).

    :func:`sgd_schedule` over all ``epochs`` (each of at most ``epoch_images`` images, a fresh random subset;
    None: all): SGD (momentum 0.9, ``weight_decay``), lr ``lr`` warmed up
    over the first 10 % of the iterations and x0.1 after 2/3 and 8/9 of them. Returns the history, one value per
    iteration, of ``loss`` (L_IS), each torchvision loss term (``loss_classifier``, ``loss_box_reg``,
    ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``) and ``lr``. The model ends on ``device`` in
    eval mode. ``precision`` ``"bf16"`` runs the forward pass under bfloat16 autocast (weights, gradients
    and the optimizer stay float32), ``"fp32"`` in float32, ``"auto"`` bf16 where ``device`` computes it
    natively (:func:`wsis_core.device.resolve_precision`). ``on_progress(done, total)`` is called after every
    iteration.
    """
    if precision not in PRECISIONS:
        raise WsisInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    precision = resolve_precision(precision, device)
    targets = InstanceTargets(dataset, group_by_image(annotations), flip=flip)
    classes = {int(ann["category_id"]) for _, anns in targets.items for ann in anns}
    if classes and not (min(classes) >= 1 and max(classes) < model_num_classes(model)):
        raise WsisInputError(
            f"category ids {sorted(classes)} outside 1..{model_num_classes(model) - 1} (the model's classes)"
        )
    if len(targets) == 0:
        raise WsisInputError("no image has an instance annotation: nothing to train the IS branch on")
    loader = instance_loader(
        targets, batch_size, seed=seed, epoch_images=epoch_images, num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    optimizer, scheduler = sgd_schedule(model, epochs * len(loader), lr=lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = defaultdict(list)
    model.to(device).train()
    with weak_supervision(), seeded_rng(seed, device):
        for _ in range(epochs):
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
                    on_progress(len(history["loss"]), epochs * len(loader))
    model.eval()
    return dict(history)


# -------------------------------------------------------------------------------------- inference
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

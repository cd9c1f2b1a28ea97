"""The semantic segmentation (SS) branch of the paper: an FCN with PSPNet's pyramid pooling module.

Paper, "Semantic segmentation branch": on the shared backbone, the feature map is average-pooled into
1x1, 2x2, 3x3 and 6x6 bins (Zhao et al. 2017), each level is bilinearly upsampled back to the feature
size, everything is concatenated into the pyramid pooling feature, and a 1x1 convolution gives the
segmentation score map (C + 1 channels, 0 = background). L_SS is the multi-class cross entropy against
pseudo labels (ignore value 255): PSA labels in the first iteration (:mod:`wsis_core.affinity`), the
union of the instance masks of each class in the later ones (same :func:`train_segmentation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsis_core.backbone import Backbone, branch_schedule, fit, iterate_images, load_batch, present_classes, random_flip
from wsis_core.data.guard import weak_supervision
from wsis_core.data.types import VOID
from wsis_core.errors import WsisInputError
from wsis_core.profiles import SegmentationConfig
from wsis_core.progress import Progress


class PyramidPooling(nn.Module):
    """PSP pyramid pooling: per bin size, adaptive average pooling and a 1x1 conv (+ReLU) reducing the
    channels to ``channels / len(bins)``; levels upsampled bilinearly and concatenated with the input."""

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        reduced = channels // len(bins)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, reduced, kernel_size=1), nn.ReLU(inplace=True))
            for b in bins
        )
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat(
            [x, *(F.interpolate(level(x), size=size, mode="bilinear", align_corners=False) for level in self.levels)],
            dim=1,
        )


class SegmentationModel(nn.Module):
    """Backbone → pyramid pooling → 1x1 conv: logits [B, C + 1, h, w] at the backbone's output stride."""

    def __init__(self, backbone: Backbone, num_classes: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.backbone = backbone
        self.pyramid = PyramidPooling(backbone.channels[-1], bins)
        self.classifier = nn.Conv2d(self.pyramid.out_channels, num_classes + 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pyramid(self.backbone(images)[-1]))


def scores_at(logits: torch.Tensor, size: Sequence[int], present: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, K, h, w] bilinearly upsampled to ``size`` and turned into per-pixel class probabilities;
    with ``present`` (bool [B, K - 1]) over background and the present classes only (see
    :func:`only_present_classes`)."""
    logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return (logits if present is None else only_present_classes(logits, present)).softmax(dim=1)


def only_present_classes(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Logits [B, C + 1, h, w] with the channels of classes absent from each image (bool [B, C]) at -inf;
    background (channel 0) stays."""
    keep = torch.cat((present.new_ones(len(present), 1), present), dim=1)
    return logits.masked_fill(~keep[:, :, None, None], float("-inf"))


def build_segmentation_model(num_classes: int, backbone: Backbone, *, cfg: SegmentationConfig) -> SegmentationModel:
    """SS branch for ``num_classes`` object classes on ``backbone`` (shared: the classifier's, or
    :func:`wsis_core.backbone.backbone_for`), with the pyramid bins of ``cfg`` (``profile.seg``)."""
    return SegmentationModel(backbone, num_classes, cfg.psp_bins)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_SS: cross entropy of logits [B, K, h, w] upsampled to labels [B, H, W], VOID pixels ignored
    (zero, still differentiable, when every pixel is ignored)."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits, labels, ignore_index=VOID, reduction="sum")
    return total / (labels != VOID).sum().clamp_min(1)


def _label_batch(labels: Sequence[np.ndarray], positions: Sequence[int], size: int) -> torch.Tensor:
    """Pseudo labels at ``positions`` resized (nearest) to the input size: long [B, size, size]."""
    stacked = [
        F.interpolate(torch.from_numpy(np.ascontiguousarray(labels[i]))[None, None].float(), size=(size, size))[0, 0]
        for i in positions
    ]
    return torch.stack(stacked).long()


def _check_labels(dataset, labels: Sequence[np.ndarray]) -> None:
    if len(labels) != len(dataset):
        raise WsisInputError(f"{len(labels)} pseudo label maps for {len(dataset)} images")
    num_classes = len(dataset.classes)
    for info, label in zip(dataset.images, labels):
        if label.shape != (info.height, info.width):
            raise WsisInputError(
                f"{info.file_name}: pseudo label is {label.shape[1]}x{label.shape[0]}, "
                f"image is {info.width}x{info.height}"
            )
        largest = int(np.max(label, where=label != VOID, initial=0))
        if largest > num_classes:
            raise WsisInputError(f"{info.file_name}: pseudo label has class {largest}, there are {num_classes} classes")


def train_segmentation(
    dataset,
    labels: Sequence[np.ndarray],
    model: SegmentationModel,
    device: torch.device,
    *,
    cfg: SegmentationConfig,
    input_size: int,
    seed: int = 0,
    epoch_images: int | None = None,
    on_progress: Progress = None,
) -> SegmentationModel:
    """Train the SS branch ``model`` (:func:`build_segmentation_model`; later rounds continue training it) on
    pseudo labels (uint8 [H, W] per dataset image, 255 = ignore) with the schedule of ``cfg`` (``profile.seg``).
    Returns the model in eval mode.
    """
    _check_labels(dataset, labels)
    model = model.to(device)

    def batch_loss(positions: list[int], generator: torch.Generator) -> torch.Tensor:
        images = load_batch(dataset, positions, input_size).to(device)
        targets = _label_batch(labels, positions, input_size).to(device)
        images, targets = random_flip(generator, images, targets)
        return segmentation_loss(model(images), targets)

    with weak_supervision():
        fit(model, len(dataset), batch_loss, branch_schedule(cfg, seed=seed, epoch_images=epoch_images), device,
            on_progress)
    return model


@torch.no_grad()
def predict_score_maps(
    model: SegmentationModel,
    dataset,
    device: torch.device,
    *,
    cfg: SegmentationConfig,
    input_size: int,
    batch_size: int,
    indices: Sequence[int] | None = None,
    on_progress: Progress = None,
) -> list[np.ndarray]:
    """Score maps S of the images (all, or those at ``indices``): float32 [C + 1, H, W] per image at
    its original resolution, summing to 1 over classes at every pixel. With ``cfg.image_classes``
    the softmax runs over background and the image's own labelled classes only (the image-level labels
    are the training supervision): a pixel another class would have taken goes to a class the image has
    or to background, and the channels of absent classes are 0."""
    model = model.to(device).eval()
    indices = range(len(dataset)) if indices is None else indices
    results: list[np.ndarray] = []
    for positions, images, sizes in iterate_images(
        dataset, indices, input_size, batch_size, device, on_progress
    ):
        logits = model(images)
        present = present_classes(dataset, positions).to(logits.device) if cfg.image_classes else None
        results.extend(
            scores_at(logits[b : b + 1], size, None if present is None else present[b : b + 1])[0].float().cpu().numpy()
            for b, size in enumerate(sizes)
        )
    return results

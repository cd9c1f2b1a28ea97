"""Multi-label image classifier with class response maps, trained from image-level labels only.

The classifier is fully convolutional as in PRM (Zhou et al. 2018): a 1x1 convolution on the shared
backbone's last stage gives one response map per class, and a spatial pooling turns each map into the
class logit, trained with binary cross entropy against the image-level labels. The rectified,
max-normalised response maps are the class activation maps (CAM, Zhou et al. 2016) that PSA (Ahn &
Kwak 2018) turns into seeds, and their local maxima are PRM's peaks (:mod:`wsis_core.peaks`).

Pooling (``profile.cls.pooling``):

* ``gap`` (default): global average pooling, as CAM and PSA.
* ``lse``: log-sum-exp pooling ``(1/r) log mean exp(r x)`` (Pinheiro & Collobert, "From image-level to
  pixel-level labeling with convolutional networks", CVPR 2015), between average (r → 0) and max
  (r → ∞) pooling: the gradient goes to the cells in proportion to ``softmax(r x)``, favouring the few
  cells with the strongest evidence. Measured with ``bench/cues_quality.py`` (random init, synthetic
  data, 1,200 images) it made the CAMs too peaky: the PSA labels collapsed to background, so it is
  not the default; it stays for pretrained backbones and further study.

Training also rescales each batch by a random factor (``cls.min_scale`` … ``cls.max_scale`` of the input
size; whole images, so the image-level labels stay true): objects then appear at several sizes
relative to the receptive field, as with the multi-scale training and inference of PSA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wsis_core.backbone import Backbone, backbone_for, cue_schedule, fit, load_batch, present_classes, random_flip
from wsis_core.choices import POOLINGS
from wsis_core.data.guard import weak_supervision
from wsis_core.profiles import BackboneConfig, ClassifierConfig
from wsis_core.progress import Progress


class Classifier(nn.Module):
    """Backbone → 1x1 conv (one response map per class) → spatial pooling → class logits.

    ``pooling``: ``"gap"`` (global average) or ``"lse"`` (log-sum-exp with sharpness ``lse_r``); it has
    no parameters, so a checkpoint loads whatever pooling the model is built with.
    """

    def __init__(self, backbone: Backbone, num_classes: int, pooling: str = "gap", lse_r: float = 5.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.channels[-1], num_classes, kernel_size=1)
        self.pooling = pooling
        self.lse_r = lse_r

    def response_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Class response maps [B, C, h, w] at the backbone's output stride (channel k = class k + 1)."""
        return self.head(self.backbone(images)[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C]."""
        return pool_maps(self.response_maps(images), self.pooling, self.lse_r)


def pool_maps(maps: torch.Tensor, pooling: str, lse_r: float) -> torch.Tensor:
    """Maps [B, C, h, w] → logits [B, C]: the mean, or ``(1/r) log mean exp(r x)`` (log-sum-exp)."""
    if pooling == "gap":
        return maps.mean(dim=(2, 3))
    flat = maps.flatten(2)
    return (torch.logsumexp(lse_r * flat, dim=2) - math.log(flat.shape[2])) / lse_r


def build_classifier(num_classes: int, *, cfg: ClassifierConfig, backbone: BackboneConfig) -> Classifier:
    """A new classifier on a new backbone (``profile.backbone``) with the pooling of ``cfg`` (``profile.cls``)."""
    return Classifier(backbone_for(backbone), num_classes, cfg.pooling, cfg.lse_r)


def random_scale(generator: torch.Generator, images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The batch bilinearly resized by one random factor in [low, high] (side at least 32 pixels)."""
    if low == high == 1.0:
        return images
    factor = low + (high - low) * torch.rand((), generator=generator).item()
    side = max(32, round(images.shape[-1] * factor))
    if side == images.shape[-1]:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)


def classification_loss(model: Classifier, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Multi-label binary cross entropy between the logits and the image-level labels [B, C]."""
    return F.binary_cross_entropy_with_logits(model(images), present.float())


def train_classifier(
    dataset,
    model: Classifier,
    device: torch.device,
    *,
    cfg: ClassifierConfig,
    input_size: int,
    seed: int = 0,
    epoch_images: int | None = None,
    on_progress: Progress = None,
) -> Classifier:
    """Train ``model`` (:func:`build_classifier`) on ``dataset`` (images + ``ImageInfo.labels`` only) with the
    schedule, precision and rescaling of ``cfg`` (``profile.cls``); returns it in eval mode."""
    model = model.to(device)

    def batch_loss(positions: list[int], generator: torch.Generator) -> torch.Tensor:
        (images,) = random_flip(generator, load_batch(dataset, positions, input_size).to(device))
        images = random_scale(generator, images, cfg.min_scale, cfg.max_scale)
        return classification_loss(model, images, present_classes(dataset, positions).to(device))

    schedule = cue_schedule(cfg, device, seed=seed, epoch_images=epoch_images)
    with weak_supervision():
        fit(model, len(dataset), batch_loss, schedule, device, on_progress)
    return model


@torch.no_grad()
def compute_cams(
    model: Classifier, images: torch.Tensor, present: torch.Tensor, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Normalised CAMs [B, C, h, w] as in PSA: rectified response maps (bilinearly resized to ``size``
    when given) divided by each map's maximum, and zero for the classes absent from the image
    (``present``: bool [B, C] image-level labels)."""
    cams = F.relu(model.response_maps(images))
    if size is not None:
        cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)
    return cams * present[:, :, None, None].to(cams.device)

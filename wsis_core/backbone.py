"""The shared convolutional layers (paper, Fig. 2) and the plumbing every stage trainer shares.

* :func:`build_backbone`: torchvision ResNet-50 (the paper's backbone, "Implementation details") or
  ResNet-18 (the fast CPU default), randomly initialised or loaded from a local torchvision state_dict
  file (never downloaded). The output stride is set by dilating the last stages instead of striding
  them, as PSPNet (Zhao et al. 2017) and PSA (Ahn & Kwak 2018) do.
* Input pipeline: images resized to the profile's square input size and ImageNet-normalised; results
  are mapped back to each image's own resolution by the stages.
* :func:`fit`: the Adam loop of the paper (lr and weight decay from the profile) over shuffled batches,
  as long and in the precision its :class:`Schedule` says.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from wsis_core.choices import BACKBONE_NAMES, OUTPUT_STRIDES
from wsis_core.device import forward_precision, resolve_precision
from wsis_core.errors import WsisInputError
from wsis_core.profiles import BackboneConfig, ScheduleConfig
from wsis_core.progress import Progress

BACKBONES: dict[str, Callable[[], torchvision.models.ResNet]] = {
    name: getattr(torchvision.models, name) for name in BACKBONE_NAMES
}
# Dilation of (layer3, layer4) per output stride: each dilated stage keeps its input resolution.
_DILATIONS = {32: (1, 1), 16: (1, 2), 8: (2, 4)}

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class Backbone(nn.Module):
    """ResNet stem + four stages; ``forward`` returns the four stage outputs (strides 4, 8, 16|8, OS).

    ``channels`` gives the channel count of each stage output. With ``freeze_bn`` the batch-norm layers
    keep their (pretrained) statistics in training mode, which batch size 1 (the paper's) requires.
    """

    def __init__(self, resnet: torchvision.models.ResNet, freeze_bn: bool):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.channels = tuple(
            [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features for stage in self.stages
        )
        self.freeze_bn = freeze_bn

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


def build_backbone(
    name: str, output_stride: int = 16, weights: str | Path | None = None, freeze_bn: bool = False,
    weights_sha256: str | None = None,
) -> Backbone:
    """A torchvision ResNet backbone with the given output stride (8, 16 or 32).

    ``weights`` is a local file holding a torchvision ``state_dict`` of the same architecture (the
    ``fc.*`` entries are ignored), whose sha256 must be ``weights_sha256`` when given; without it the
    network is randomly initialised.
    """
    if name not in BACKBONES:
        raise WsisInputError(f"unknown backbone {name!r} (choose from {', '.join(BACKBONES)})")
    if output_stride not in OUTPUT_STRIDES:
        raise WsisInputError(f"output stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    resnet = BACKBONES[name](weights=None)
    if weights is not None:
        _load_weights(resnet, Path(weights), name, weights_sha256)
    for stage, dilation in zip((resnet.layer3, resnet.layer4), _DILATIONS[output_stride]):
        if dilation > 1:
            _dilate(stage, dilation)
    return Backbone(resnet, freeze_bn)


def backbone_for(cfg: BackboneConfig) -> Backbone:
    """The backbone a profile's ``backbone`` section asks for."""
    return build_backbone(cfg.name, cfg.output_stride, cfg.weights, cfg.freeze_bn, cfg.weights_sha256)


def _dilate(stage: nn.Sequential, dilation: int) -> None:
    """Replace the stage's stride-2 downsampling by dilated 3x3 convolutions (same weights)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


def _load_weights(resnet: torchvision.models.ResNet, path: Path, name: str, sha256: str | None = None) -> None:
    """Load a torchvision state_dict file into ``resnet``; its sha256 must be ``sha256`` when given. Messages
    never quote the file's bytes."""
    if not path.is_file():
        raise WsisInputError(f"{path}: backbone weights file not found")
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise WsisInputError(f"{path}: sha256 {digest.hexdigest()} is not the expected {sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a state_dict
        raise WsisInputError(f"{path}: not a torch state_dict file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WsisInputError(f"{path}: not a torchvision state_dict (expected a dict of tensors)")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WsisInputError(f"{path}: weights do not fit {name} ({str(exc).splitlines()[-1].strip()})") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WsisInputError(
            f"{path}: not a torchvision {name} state_dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


# ----------------------------------------------------------------------------------------- inputs
def to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → float [3, size, size], resized (antialiased bilinear) and ImageNet-normalised."""
    x = torch.tensor(image).permute(2, 0, 1).float().div_(255)
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def load_batch(dataset, indices: Sequence[int], size: int) -> torch.Tensor:
    """The dataset images at ``indices`` as one [B, 3, size, size] input batch (CPU)."""
    return torch.stack([to_input(dataset.load_image(i), size) for i in indices])


def present_classes(dataset, indices: Sequence[int]) -> torch.Tensor:
    """Bool [B, C] image-level labels (channel k = class k + 1) from ``ImageInfo.labels`` only."""
    present = torch.zeros(len(indices), len(dataset.classes), dtype=torch.bool)
    for row, i in enumerate(indices):
        present[row, [c - 1 for c in dataset.images[i].labels]] = True
    return present


def iterate_images(
    dataset, indices: Sequence[int], size: int, batch_size: int, device: torch.device, on_progress: Progress = None
) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, int]]]]:
    """Inference batches: (dataset positions, input batch on ``device``, original (H, W) of each image)."""
    total = num_batches(len(indices), batch_size)
    for done, start in enumerate(range(0, len(indices), batch_size), start=1):
        chunk = list(indices[start : start + batch_size])
        arrays = [dataset.load_image(i) for i in chunk]
        yield chunk, torch.stack([to_input(a, size) for a in arrays]).to(device), [a.shape[:2] for a in arrays]
        if on_progress is not None:
            on_progress(done, total)


def random_flip(generator: torch.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flip the same random half of the batch horizontally in every tensor (images and their targets)."""
    flip = torch.rand(tensors[0].shape[0], generator=generator) < 0.5
    return tuple(
        torch.where(flip.to(t.device).view(-1, *[1] * (t.dim() - 1)), t.flip(-1), t) for t in tensors
    )


# -------------------------------------------------------------------------------------- training
def num_batches(items: int, batch_size: int) -> int:
    return math.ceil(items / batch_size)


@dataclass(frozen=True)
class Schedule:
    """How a branch trains in :func:`fit`: ``epochs`` of shuffled ``batch_size`` batches, Adam with ``lr`` and
    ``weight_decay``, order and augmentation seeded by ``seed``. An epoch draws at most ``epoch_items`` items
    (a fresh random subset each epoch; None: all), so a profile's step count stops growing with the data.
    ``precision`` ``"bf16"`` runs each batch's forward pass under bfloat16 autocast, ``"fp32"`` in float32."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int = 0
    epoch_items: int | None = None
    precision: str = "fp32"

    def epoch_size(self, num_items: int) -> int:
        return num_items if self.epoch_items is None else min(num_items, self.epoch_items)

    def steps(self, num_items: int) -> int:
        return self.epochs * num_batches(self.epoch_size(num_items), self.batch_size)


def branch_schedule(
    cfg: ScheduleConfig, *, seed: int = 0, epoch_images: int | None = None, precision: str = "fp32"
) -> Schedule:
    """The schedule of a branch section (``profile.cls``, ``.aff`` or ``.seg``: epochs, batch size, lr, weight
    decay) with the run's ``seed`` and ``epoch_images``, in ``precision``."""
    return Schedule(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, seed, epoch_images, precision)


def cue_schedule(cfg: ScheduleConfig, device: torch.device, *, seed: int = 0, epoch_images: int | None = None) -> Schedule:
    """:func:`branch_schedule` of a round-1 cue network (``profile.cls`` or ``profile.aff``) in its section's
    ``precision`` resolved for ``device``."""
    return branch_schedule(cfg, seed=seed, epoch_images=epoch_images,
                           precision=resolve_precision(cfg.precision, device))


def fit(
    model: nn.Module,
    num_items: int,
    batch_loss: Callable[[list[int], torch.Generator], torch.Tensor],
    schedule: Schedule,
    device: torch.device,
    on_progress: Progress = None,
) -> list[float]:
    """Train ``model`` with Adam (paper, "Implementation details") over shuffled mini-batches (``schedule``).

    ``batch_loss(positions, generator)`` loads the batch at those dataset positions and returns its
    loss; the generator drives the augmentation. Returns the loss of every step; leaves the model in
    eval mode.
    """
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=schedule.lr, weight_decay=schedule.weight_decay
    )
    generator = torch.Generator().manual_seed(schedule.seed)
    epoch_size = schedule.epoch_size(num_items)
    total = schedule.steps(num_items)
    losses: list[float] = []
    model.train()
    for _ in range(schedule.epochs):
        order = torch.randperm(num_items, generator=generator).tolist()[:epoch_size]
        for start in range(0, epoch_size, schedule.batch_size):
            with forward_precision(device, schedule.precision):
                loss = batch_loss(order[start : start + schedule.batch_size], generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_progress is not None:
                on_progress(len(losses), total)
    model.eval()
    return losses


def split_progress(on_progress: Progress, *phase_totals: int) -> list[Progress]:
    """One ``on_progress(done, total)`` spread over consecutive phases with known step counts."""
    if on_progress is None:
        return [None] * len(phase_totals)
    grand_total = sum(phase_totals)
    offsets = [0, *accumulate(phase_totals)][:-1]
    return [lambda done, _total, offset=offset: on_progress(offset + done, grand_total) for offset in offsets]

"""Round-1 semantic pseudo labels with PSA (Ahn & Kwak 2018), as the paper's SS branch needs them.

The paper trains its SS branch in the first iteration on the output of PSA ("Iterative optimization and
its initialization"), and ranks the MCG proposals of a peak with PSA's score map O (Eq. 4). PSA:

1. CAMs of the image-level classes, normalised to [0, 1]; confident foreground seeds where the best CAM
   exceeds ``cam_fg_threshold`` (class = its argmax), confident background where it stays below
   ``cam_bg_threshold``, the rest unlabelled (:func:`seed_labels`).
2. AffinityNet predicts a feature map f at stride 8; the affinity of two pixels is
   ``a_ij = exp(-||f_i - f_j||_1)`` (mean over channels). It is trained on seed pairs closer than
   ``aff_radius``: same-label pairs towards 1 (background and foreground pairs weighted 1/4 each),
   different-label pairs towards 0 (weight 1/2) (:func:`affinity_loss`).
3. Random walk: ``T = D^-1 A^beta`` (``A`` the affinities within the radius, ``D`` the degree), and the
   CAMs plus the background score ``(1 - max CAM)^power`` are propagated by ``T^t``
   (:func:`random_walk`). The propagated maps, upsampled to the image and normalised over classes, are
   the score map O; their argmax is the pseudo label, ignored where the top score is below
   ``label_min_score``. PSA's dense CRF is left out.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsis_core.backbone import (
    Backbone,
    branch_schedule,
    cue_schedule,
    fit,
    iterate_images,
    load_batch,
    num_batches,
    present_classes,
    random_flip,
    split_progress,
)
from wsis_core.classifier import Classifier, compute_cams
from wsis_core.data.guard import weak_supervision
from wsis_core.data.types import VOID
from wsis_core.profiles import AffinityConfig
from wsis_core.progress import Progress


class AffinityNet(nn.Module):
    """PSA's AffinityNet on the shared backbone: the last three stages, each reduced by a 1x1 conv
    (64, 128, 256 channels) and brought to stride 8, are concatenated and fused by a 1x1 conv (ELUs
    after each conv, as in PSA)."""

    def __init__(self, backbone: Backbone, dims: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        self.backbone = backbone
        self.reduce = nn.ModuleList(
            nn.Conv2d(channels, dim, kernel_size=1, bias=False) for channels, dim in zip(backbone.channels[1:], dims)
        )
        self.fuse = nn.Conv2d(sum(dims), sum(dims), kernel_size=1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Affinity features [B, D, h, w] at stride 8."""
        stages = self.backbone(images)[1:]
        size = stages[0].shape[-2:]
        reduced = [
            F.interpolate(F.elu(conv(x)), size=size, mode="bilinear", align_corners=False)
            for conv, x in zip(self.reduce, stages)
        ]
        return F.elu(self.fuse(torch.cat(reduced, dim=1)))

    @torch.no_grad()
    def feature_size(self, input_size: int, device: torch.device) -> tuple[int, int]:
        """(h, w) of the affinity features for square inputs of ``input_size``."""
        was_training = self.training
        size = tuple(self.eval()(torch.zeros(1, 3, input_size, input_size, device=device)).shape[-2:])
        self.train(was_training)
        return size


def radius_pairs(height: int, width: int, radius: float, device: torch.device | None = None) -> torch.Tensor:
    """Pixel pairs [2, P] (row-major indices i < j) of an ``height x width`` map closer than ``radius``."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    return torch.triu(torch.cdist(coords, coords) < radius, diagonal=1).nonzero().T


def pair_distances(features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean L1 distances [B, P] between the pixel pairs [2, P] of features [B, D, h, w];
    the affinity is ``exp(-distance)``. Only the pairs are computed, as in PSA (memory B x D x P)."""
    flat = features.flatten(2)
    return (flat[:, :, pairs[0]] - flat[:, :, pairs[1]]).abs().mean(dim=1)


def dense_affinity(distances: torch.Tensor, pairs: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Affinity matrices [B, N, N] from pair distances [B, P]: ``exp(-distance)`` on the pairs (both
    directions), 1 on the diagonal, 0 for pixels farther apart than the radius."""
    affinity = torch.eye(num_pixels, device=distances.device).repeat(distances.shape[0], 1, 1)
    affinity[:, pairs[0], pairs[1]] = torch.exp(-distances)
    affinity[:, pairs[1], pairs[0]] = torch.exp(-distances)
    return affinity


def seed_labels(cams: torch.Tensor, fg_threshold: float, bg_threshold: float) -> torch.Tensor:
    """Confident seeds [B, h, w] (uint8) from normalised CAMs [B, C, h, w]: class index where the best CAM
    is at least ``fg_threshold``, 0 (background) where it is below ``bg_threshold``, VOID elsewhere."""
    best, arg = cams.max(dim=1)
    seeds = torch.full_like(arg, VOID, dtype=torch.uint8)
    seeds[best >= fg_threshold] = (arg[best >= fg_threshold] + 1).to(torch.uint8)
    seeds[best < bg_threshold] = 0
    return seeds


def affinity_loss(distances: torch.Tensor, seeds: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """PSA's affinity loss on pair distances [B, P] of the pixel pairs [2, P], given seeds [B, N].

    ``-log a = distance`` for same-label pairs (background and foreground halves, 1/4 each) and
    ``-log(1 - a)`` for different-label pairs (1/2); pairs with an unlabelled pixel are left out.
    """
    first, second = seeds[:, pairs[0]], seeds[:, pairs[1]]
    labelled = (first != VOID) & (second != VOID)
    same = first == second
    background = first == 0
    negative_log = -torch.log(-torch.expm1(-distances.clamp_min(1e-5)))
    return (
        _masked_mean(distances, labelled & same & background) / 4
        + _masked_mean(distances, labelled & same & ~background) / 4
        + _masked_mean(negative_log, labelled & ~same) / 2
    )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1)


def random_walk(scores: torch.Tensor, affinity: torch.Tensor, beta: float, steps: int) -> torch.Tensor:
    """Propagate scores [..., K, N] with the affinities [..., N, N]: ``scores @ T^steps`` with the
    column-stochastic transition matrix ``T = A^beta / colsum(A^beta)`` (PSA's CAM revision)."""
    powered = affinity.pow(beta)
    transition = powered / powered.sum(dim=-2, keepdim=True)
    return scores @ torch.linalg.matrix_power(transition, steps)


@dataclass(frozen=True)
class PseudoLabel:
    """PSA result for one image at its original resolution.

    ``labels``: uint8 [H, W], 0 background, c class c, VOID (255) ignore. ``scores``: float32
    [K + 1, H, W], the propagated score map O normalised over ``classes`` = (0, *image-level classes).
    """

    labels: np.ndarray
    classes: tuple[int, ...]
    scores: np.ndarray

    def score_map(self, class_index: int) -> np.ndarray:
        """O for one class (0 = background): float32 [H, W], zero for a class absent from the image."""
        if class_index not in self.classes:
            return np.zeros(self.labels.shape, np.float32)
        return self.scores[self.classes.index(class_index)]


@dataclass
class SemanticLabels:
    """Output of :func:`make_semantic_labels`: the trained AffinityNet (to checkpoint) and the labels."""

    affinity_net: AffinityNet
    labels: list[PseudoLabel]  # one per dataset image, in dataset order


@torch.no_grad()
def _dataset_seeds(
    classifier: Classifier,
    dataset,
    cfg: AffinityConfig,
    size: tuple[int, int],
    device: torch.device,
    input_size: int,
    batch_size: int,
    on_progress: Progress,
) -> torch.Tensor:
    """Seeds [N_images, h, w] (uint8, CPU) of every image at the affinity-feature resolution."""
    batches = iterate_images(dataset, range(len(dataset)), input_size, batch_size, device, on_progress)
    return torch.cat(
        [
            seed_labels(
                compute_cams(classifier, images, present_classes(dataset, positions), size),
                cfg.cam_fg_threshold, cfg.cam_bg_threshold,
            ).cpu()
            for positions, images, _ in batches
        ]
    )


def _affinity_steps(num_images: int, cfg: AffinityConfig, batch_size: int, epoch_images: int | None) -> tuple[int, int]:
    """Progress steps of :func:`train_affinity`: seed batches, then training steps."""
    return num_batches(num_images, batch_size), branch_schedule(cfg, epoch_images=epoch_images).steps(num_images)


def train_affinity(
    classifier: Classifier,
    dataset,
    device: torch.device,
    *,
    cfg: AffinityConfig,
    input_size: int,
    batch_size: int,
    seed: int = 0,
    epoch_images: int | None = None,
    model: AffinityNet | None = None,
    on_progress: Progress = None,
) -> AffinityNet:
    """Train AffinityNet on the CAM seeds of ``dataset`` (image-level labels only) with the seeds, radius and
    schedule of ``cfg`` (``profile.aff``; seeds computed in batches of ``batch_size``); returns it in eval mode.

    A new AffinityNet starts from a copy of the classifier's backbone (the shared convolutional layers
    of the paper's Fig. 2) unless ``model`` is given.
    """
    classifier = classifier.to(device).eval()
    model = (model if model is not None else AffinityNet(copy.deepcopy(classifier.backbone))).to(device)
    seed_progress, fit_progress = split_progress(
        on_progress, *_affinity_steps(len(dataset), cfg, batch_size, epoch_images))
    height, width = model.feature_size(input_size, device)
    pairs = radius_pairs(height, width, cfg.radius, device)

    with weak_supervision():
        all_seeds = _dataset_seeds(classifier, dataset, cfg, (height, width), device, input_size, batch_size,
                                   seed_progress)

        def batch_loss(positions: list[int], generator: torch.Generator) -> torch.Tensor:
            images = load_batch(dataset, positions, input_size).to(device)
            images, seeds = random_flip(generator, images, all_seeds[positions].to(device))
            return affinity_loss(pair_distances(model(images), pairs), seeds.flatten(1), pairs)

        schedule = cue_schedule(cfg, device, seed=seed, epoch_images=epoch_images)
        fit(model, len(dataset), batch_loss, schedule, device, fit_progress)
    return model


@torch.no_grad()
def propagate_labels(
    classifier: Classifier,
    affinity_net: AffinityNet,
    dataset,
    device: torch.device,
    *,
    cfg: AffinityConfig,
    input_size: int,
    batch_size: int,
    indices: Sequence[int] | None = None,
    on_progress: Progress = None,
) -> list[PseudoLabel]:
    """PSA pseudo labels and score maps O of the images (all, or those at ``indices``) by random walk with
    the settings of ``cfg`` (``profile.aff``), in batches of ``batch_size``.

    With ``cfg.rw_t`` 0 the walk is the identity (T^0 = I): the affinities are not computed and O is the CAMs
    with their background score."""
    classifier = classifier.to(device).eval()
    affinity_net = affinity_net.to(device).eval()
    walk = cfg.rw_t > 0
    map_size = None if walk else affinity_net.feature_size(input_size, device)
    indices = range(len(dataset)) if indices is None else indices
    results: list[PseudoLabel] = []
    for positions, images, sizes in iterate_images(
        dataset, indices, input_size, batch_size, device, on_progress
    ):
        features = affinity_net(images) if walk else None
        height, width = features.shape[-2:] if walk else map_size
        cams = compute_cams(classifier, images, present_classes(dataset, positions), (height, width))
        background = (1 - cams.amax(dim=1, keepdim=True)).pow(cfg.rw_bg_power)
        walked = torch.cat([background, cams], dim=1)
        if walk:
            pairs = radius_pairs(height, width, cfg.radius, device)
            affinity = dense_affinity(pair_distances(features, pairs), pairs, height * width)
            walked = random_walk(walked.flatten(2), affinity, cfg.rw_beta, cfg.rw_t).view_as(walked)
        for position, maps, size in zip(positions, walked, sizes):
            classes = (0, *sorted(dataset.images[position].labels))
            results.append(_label_image(maps[list(classes)], classes, size, cfg.label_min_score))
    return results


def _label_image(maps: torch.Tensor, classes: tuple[int, ...], size: tuple[int, int], min_score: float) -> PseudoLabel:
    scores = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    scores = scores / scores.sum(dim=0, keepdim=True).clamp_min(1e-12)
    top, arg = scores.max(dim=0)
    labels = torch.tensor(classes, dtype=torch.uint8, device=arg.device)[arg]
    labels[top < min_score] = VOID
    return PseudoLabel(labels.cpu().numpy(), classes, scores.float().cpu().numpy())


def make_semantic_labels(
    classifier: Classifier,
    dataset,
    device: torch.device,
    *,
    cfg: AffinityConfig,
    input_size: int,
    batch_size: int,
    seed: int = 0,
    epoch_images: int | None = None,
    on_progress: Progress = None,
) -> SemanticLabels:
    """Round-1 cues of the SS branch: train AffinityNet on the CAM seeds, then label every image (``cfg``:
    ``profile.aff``)."""
    train_progress, label_progress = split_progress(
        on_progress, sum(_affinity_steps(len(dataset), cfg, batch_size, epoch_images)),
        num_batches(len(dataset), batch_size),
    )
    shared = {"cfg": cfg, "input_size": input_size, "batch_size": batch_size}
    affinity_net = train_affinity(classifier, dataset, device, **shared, seed=seed, epoch_images=epoch_images,
                                  on_progress=train_progress)
    return SemanticLabels(
        affinity_net, propagate_labels(classifier, affinity_net, dataset, device, **shared, on_progress=label_progress)
    )

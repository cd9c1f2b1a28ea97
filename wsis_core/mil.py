"""MIL branch: WSDDN (Bilen & Vedaldi 2016) over peak / box bags, Eq. 2 of the paper.

Paper, section "Multiple instance learning branch". For a bag B with R proposals, ROIAlign (He et
al. 2017) pools each proposal from the shared backbone features; two fully connected streams give
x^cls and x^det in R^{C x R}; then

    [sigma_cls(x^cls)]_ij = exp(x^cls_ij) / sum_k=1..C exp(x^cls_kj)   (softmax over classes)
    [sigma_det(x^det)]_ij = exp(x^det_ij) / sum_k=1..R exp(x^det_ik)   (softmax over the bag's proposals)
    x^B = sigma_cls(x^cls) (.) sigma_det(x^det),   phi_B(c) = sum_r x^B_cr,
    L(B) = -sum_c L_B(c) log phi_B(c) + (1 - L_B(c)) log(1 - phi_B(c)),

and L_MIL is the sum of the bag losses. C counts the foreground classes: 1-based class c is column
c - 1. Tensors here are proposal-major, [bags, R, C] (the transpose of the paper's C x R per bag).

All bags of an image go through one forward pass: bags are padded to a common R with a mask
(:func:`pack_bags`), each proposal used by any bag is pooled once, and sigma_det is a masked
softmax, so padding gets zero weight. Training is per image (all its bags in one step) with the
shared Adam loop :func:`wsis_core.backbone.fit` (paper: lr 1e-4, weight decay 1e-4). The MIL box of
a bag is its proposal with the highest x^B for the bag's class. Several peaks of one object give several
bags whose boxes are the same object: :func:`distinct_boxes` keeps one of them (class-wise NMS, as every
detector's output; the paper's one box per bag is ``nms_iou=1``).

The backbone is any module mapping ``transform(image)`` [1, 3, H', W'] to one feature map
[1, Cf, h, w] covering the whole image (wrap a multi-level backbone to pick a level); proposal boxes
stay in original image pixels and are mapped with the per-axis scales w / W and h / H, so any input
resize and any stride work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from wsis_core.backbone import Schedule, fit
from wsis_core.bags import Bag
from wsis_core.profiles import MilConfig
from wsis_core.progress import Progress

Transform = Callable[[np.ndarray], torch.Tensor]  # uint8 [H, W, 3] RGB -> normalised [1, 3, H', W']
PHI_EPS = 1e-6


def pack_bags(bags: list[Bag]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad bags to a common R: (proposal indices [B, R] long, padded with 0; mask [B, R] bool, True
    for real proposals; labels [B] long, 1-based)."""
    indices = nn.utils.rnn.pad_sequence([bag.proposal_indices for bag in bags], batch_first=True)
    lengths = torch.tensor([len(bag.proposal_indices) for bag in bags])
    mask = torch.arange(indices.shape[1]) < lengths.unsqueeze(1)
    labels = torch.tensor([bag.label for bag in bags])
    return indices, mask, labels


def bag_scores(x_cls: torch.Tensor, x_det: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 scores. x_cls, x_det: [B, R, C]; mask: [B, R] (False = padding; every bag needs one True).

    Returns (phi [B, C], the bag class scores; x^B [B, R, C], the per-proposal scores, 0 at padding).
    """
    sigma_cls = x_cls.softmax(dim=2)
    sigma_det = x_det.masked_fill(~mask.unsqueeze(2), float("-inf")).softmax(dim=1)
    proposal_scores = sigma_cls * sigma_det
    return proposal_scores.sum(dim=1), proposal_scores


def mil_loss(phi: torch.Tensor, labels: torch.Tensor, eps: float = PHI_EPS) -> torch.Tensor:
    """Eq. 2 loss summed over bags: binary cross-entropy of phi [B, C] against one-hot 1-based
    ``labels`` [B]; phi is clamped to (eps, 1 - eps) so the logs stay finite."""
    target = F.one_hot(labels - 1, phi.shape[1]).to(phi.dtype)
    return F.binary_cross_entropy(phi.clamp(eps, 1 - eps), target, reduction="sum")


class WSDDNHead(nn.Module):
    """ROIAlign + two shared FC layers + the classification and detection streams of WSDDN.

    in_channels: channels Cf of the backbone features; num_classes: C foreground classes;
    roi_size: ROIAlign output side; hidden: width of the two FC layers.
    """

    def __init__(
        self, in_channels: int, num_classes: int, roi_size: int = 7, hidden: int = 1024, dropout: float = 0.5
    ):
        super().__init__()
        self.roi_size = roi_size
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * roi_size * roi_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.cls_stream = nn.Linear(hidden, num_classes)
        self.det_stream = nn.Linear(hidden, num_classes)

    def forward(
        self,
        features: torch.Tensor,
        boxes: torch.Tensor,
        bag_indices: torch.Tensor,
        mask: torch.Tensor,
        image_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of all bags of one image (Eq. 2), see :func:`bag_scores` for the outputs.

        features: [1, Cf, h, w] of an image of ``image_size`` (H, W); boxes: the image's proposals
        [N, 4] in image pixels; bag_indices / mask: [B, R] from :func:`pack_bags`. Boxes are mapped to
        feature coordinates with the per-axis scales w / W and h / H, so any backbone stride works.
        """
        height, width = image_size
        scale = boxes.new_tensor([features.shape[3] / width, features.shape[2] / height]).repeat(2)
        # Each proposal used by any bag is pooled once (the padding index 0 too; the mask drops it).
        used, position = torch.unique(bag_indices, return_inverse=True)
        pooled = roi_align(
            features, [boxes[used] * scale], self.roi_size, spatial_scale=1.0, sampling_ratio=2, aligned=True
        )
        hidden = self.fc(pooled)
        return bag_scores(self.cls_stream(hidden)[position], self.det_stream(hidden)[position], mask)


@dataclass(frozen=True)
class MILBox:
    """The MIL box of one bag: its best proposal for the bag's class (1-based ``label``)."""

    image_id: int
    label: int
    box: tuple[float, float, float, float]
    score: float  # x^B of that proposal and class (sigma_cls * sigma_det)
    proposal_index: int


def distinct_boxes(boxes: list[MILBox], nms_iou: float) -> list[int]:
    """Indices (ascending) of the boxes of one image left after class-wise non-maximum suppression: of two
    boxes of one class overlapping by IoU > ``nms_iou`` the lower-scoring goes (``nms_iou >= 1``: all stay)."""
    if nms_iou >= 1 or len(boxes) < 2:
        return list(range(len(boxes)))
    kept = batched_nms(
        torch.tensor([b.box for b in boxes], dtype=torch.float32), torch.tensor([b.score for b in boxes]),
        torch.tensor([b.label for b in boxes]), nms_iou,
    )
    return sorted(kept.tolist())


def _image_scores(backbone, head, dataset, index: int, bags: list[Bag], proposals, device, transform):
    """Forward one image and all its bags: (phi, x^B, mask, labels, bag_indices, boxes), on ``device``."""
    image = dataset.load_image(index)
    boxes, _ = proposals.proposals_for(dataset.images[index].id)
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=device)
    bag_indices, mask, labels = (t.to(device) for t in pack_bags(bags))
    features = backbone(transform(image).to(device))
    phi, proposal_scores = head(features, boxes, bag_indices, mask, image.shape[:2])
    return phi, proposal_scores, mask, labels, bag_indices, boxes


def _positions(dataset, bags_by_image: Mapping[int, list[Bag]]) -> list[int]:
    """Dataset positions of the images that have bags, in dataset order."""
    return [i for i, info in enumerate(dataset.images) if bags_by_image.get(info.id)]


def train_mil(
    backbone: nn.Module,
    head: WSDDNHead,
    dataset,
    bags_by_image: Mapping[int, list[Bag]],
    proposals,
    *,
    transform: Transform,
    cfg: MilConfig,
    device: str | torch.device = "cpu",
    seed: int = 0,
    epoch_images: int | None = None,
    on_progress: Progress = None,
) -> list[float]:
    """Stage: train backbone + head on the bags with L_MIL (Eq. 2), one image (all its bags) per step, for the
    epochs, lr and weight decay of ``cfg`` (``profile.mil``).

    Adam over every parameter with ``requires_grad`` (freeze backbone layers by turning it off), images
    with bags in a fresh seeded order each epoch, at most ``epoch_images`` of them per epoch (None: all).
    ``on_progress(done, total)`` after each step. Returns the loss of every step; leaves both modules in eval mode.
    """
    model = nn.ModuleList([backbone, head]).to(device)
    positions = _positions(dataset, bags_by_image)

    def image_loss(batch: list[int], _generator: torch.Generator) -> torch.Tensor:
        index = positions[batch[0]]
        bags = bags_by_image[dataset.images[index].id]
        phi, _, _, labels, _, _ = _image_scores(backbone, head, dataset, index, bags, proposals, device, transform)
        return mil_loss(phi, labels)

    schedule = Schedule(cfg.epochs, 1, cfg.lr, cfg.weight_decay, seed, epoch_images)
    return fit(model, len(positions), image_loss, schedule, torch.device(device), on_progress)


@torch.no_grad()
def select_boxes(
    backbone: nn.Module,
    head: WSDDNHead,
    dataset,
    bags_by_image: Mapping[int, list[Bag]],
    proposals,
    *,
    transform: Transform,
    device: str | torch.device = "cpu",
    on_progress: Progress = None,
) -> dict[int, list[MILBox]]:
    """Stage: the MIL box of every bag (in bag order), per image id; models run in eval mode.

    For bag b of class c the chosen proposal is argmax_r x^B[b, r, c - 1] over its real proposals.
    """
    backbone.to(device).eval()
    head.to(device).eval()
    positions = _positions(dataset, bags_by_image)
    selected = {}
    for done, index in enumerate(positions, start=1):
        image_id = dataset.images[index].id
        bags = bags_by_image[image_id]
        _, scores, mask, labels, bag_indices, boxes = _image_scores(
            backbone, head, dataset, index, bags, proposals, device, transform
        )
        class_scores = scores.gather(2, (labels - 1).view(-1, 1, 1).expand(-1, scores.shape[1], 1)).squeeze(2)
        best_score, best = class_scores.masked_fill(~mask, -1.0).max(dim=1)
        chosen = bag_indices.gather(1, best.unsqueeze(1)).squeeze(1)
        selected[image_id] = [
            MILBox(image_id, int(label), tuple(box), float(score), int(proposal))
            for label, box, score, proposal in zip(
                labels.tolist(), boxes[chosen].tolist(), best_score.tolist(), chosen.tolist()
            )
        ]
        if on_progress:
            on_progress(done, len(positions))
    return selected

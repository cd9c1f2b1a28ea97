"""WSDDN MIL branch (Eq. 2): hand-computed scores and loss, batching with padding, training, selection."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from wsis_core.bags import Bag
from wsis_core.mil import MILBox, WSDDNHead, bag_scores, distinct_boxes, mil_loss, pack_bags, select_boxes, train_mil
from wsis_core.profiles import MilConfig

LN2, LN3 = math.log(2), math.log(3)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: intra-op threads only add synchronisation (50x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
# One bag, 3 proposals (rows), 2 classes (columns).
X_CLS = torch.tensor([[0.0, 0.0], [LN3, 0.0], [0.0, LN3]])  # sigma_cls rows: (.5, .5), (.75, .25), (.25, .75)
X_DET = torch.tensor([[0.0, 0.0], [0.0, LN2], [0.0, 0.0]])  # sigma_det columns: (1/3, 1/3, 1/3), (.25, .5, .25)
PHI = torch.tensor([(0.5 + 0.75 + 0.25) / 3, 0.5 * 0.25 + 0.25 * 0.5 + 0.75 * 0.25])  # (0.5, 0.4375)


def test_eq2_hand_computed_two_classes_three_proposals():
    phi, scores = bag_scores(X_CLS[None], X_DET[None], torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(phi[0], PHI)
    torch.testing.assert_close(scores[0, :, 1], torch.tensor([0.125, 0.125, 0.1875]))
    loss = mil_loss(phi, torch.tensor([1]))  # bag of class 1: L = -log 0.5 - log(1 - 0.4375)
    assert loss.item() == pytest.approx(-math.log(0.5) - math.log(0.5625), rel=1e-6)


def test_padding_is_ignored_and_bags_are_independent():
    x_cls = torch.stack((torch.cat((X_CLS, torch.tensor([[9.0, -9.0]]))), torch.randn(4, 2)))
    x_det = torch.stack((torch.cat((X_DET, torch.tensor([[7.0, 7.0]]))), torch.randn(4, 2)))
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    phi, scores = bag_scores(x_cls, x_det, mask)
    torch.testing.assert_close(phi[0], PHI)
    assert torch.all(scores[0, 3] == 0)
    torch.testing.assert_close(phi[1], bag_scores(x_cls[1:], x_det[1:], mask[1:])[0][0])


def test_mil_loss_clamps_phi():
    loss = mil_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([2]))
    assert torch.isfinite(loss) and loss.item() > 10


def test_pack_bags_pads_with_mask():
    bags = [Bag(1, 2, torch.tensor([4, 1, 3]), (1.0, 1.0)), Bag(1, 1, torch.tensor([2]), (5.0, 5.0))]
    indices, mask, labels = pack_bags(bags)
    assert indices.tolist() == [[4, 1, 3], [2, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert labels.tolist() == [2, 1]


class TinyBackbone(nn.Module):
    """Stride-4 conv net standing in for the shared backbone."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        )

    def forward(self, x):
        return self.net(x)


def to_input(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1


@dataclass(frozen=True)
class Info:
    id: int


class SquaresDataset:
    """Two 32x32 images: a bright square on the left (class 1 bag) and a dark one on the right (class 2)."""

    def __init__(self):
        self.images = [Info(1), Info(2)]

    def load_image(self, index):
        image = np.full((32, 32, 3), 128, np.uint8)
        image[8:20, 2 + index : 14 + index] = 250
        image[8:20, 18:30] = 5
        return image


class FixedProposals:
    BOXES = np.array([[2, 8, 14, 20], [0, 0, 16, 32], [18, 8, 30, 20], [16, 0, 32, 32], [0, 0, 32, 32]], np.float32)

    def proposals_for(self, image_id):
        return self.BOXES, np.ones(len(self.BOXES), np.float32)


def make_bags():
    return {
        image_id: [
            Bag(image_id, 1, torch.tensor([0, 1, 4]), (8.0, 14.0)),
            Bag(image_id, 2, torch.tensor([2, 3]), (24.0, 14.0)),
        ]
        for image_id in (1, 2)
    }


def test_head_batches_bags_of_an_image():
    torch.manual_seed(0)
    head = WSDDNHead(8, 2, roi_size=3, hidden=16).eval()
    features = TinyBackbone()(torch.randn(1, 3, 32, 32))
    boxes = torch.as_tensor(FixedProposals.BOXES)
    bags = make_bags()[1]
    indices, mask, _ = pack_bags(bags)
    phi, scores = head(features, boxes, indices, mask, (32, 32))
    assert phi.shape == (2, 2) and scores.shape == (2, 3, 2)
    assert torch.all((phi > 0) & (phi < 1)) and torch.all(scores[1, 2] == 0)
    alone = pack_bags(bags[1:])
    torch.testing.assert_close(head(features, boxes, alone[0], alone[1], (32, 32))[0][0], phi[1])


def test_train_mil_lowers_the_loss_and_select_boxes_picks_the_argmax():
    torch.manual_seed(0)
    backbone, head = TinyBackbone(), WSDDNHead(8, 2, roi_size=3, hidden=32, dropout=0.0)
    dataset, proposals, bags = SquaresDataset(), FixedProposals(), make_bags()
    calls = []
    history = train_mil(
        backbone, head, dataset, bags, proposals, transform=to_input, cfg=MilConfig(epochs=12, lr=3e-3),
        on_progress=lambda *args: calls.append(args),
    )
    assert calls[-1] == (24, 24) and len(history) == 24
    assert sum(history[-2:]) < 0.1 * sum(history[:2])
    assert backbone.net[0].weight.grad is not None and not head.training

    capped = train_mil(backbone, head, dataset, bags, proposals, transform=to_input, cfg=MilConfig(epochs=3),
                       epoch_images=1)
    assert len(capped) == 3  # one of the two images with bags per epoch

    selected = select_boxes(backbone, head, dataset, bags, proposals, transform=to_input)
    assert sorted(selected) == [1, 2] and [box.label for box in selected[1]] == [1, 2]
    indices, mask, labels = pack_bags(bags[1])
    with torch.no_grad():
        features = backbone(to_input(dataset.load_image(0)))
        _, scores = head(features, torch.as_tensor(FixedProposals.BOXES), indices, mask, (32, 32))
    for b, box in enumerate(selected[1]):
        real = scores[b, mask[b], box.label - 1]
        assert box.score == pytest.approx(real.max().item())
        assert box.proposal_index == indices[b, real.argmax()].item()
        assert box.box == tuple(FixedProposals.BOXES[box.proposal_index].tolist())


def test_distinct_boxes_keeps_the_best_of_overlapping_same_class_boxes():
    boxes = [MILBox(1, 1, (0, 0, 10, 10), 0.4, 0), MILBox(1, 1, (1, 0, 11, 10), 0.9, 1),
             MILBox(1, 2, (1, 0, 11, 10), 0.2, 2), MILBox(1, 1, (30, 30, 40, 40), 0.1, 3)]
    assert distinct_boxes(boxes, 0.5) == [1, 2, 3]  # box 0 overlaps the better box 1 of its class; other class stays
    assert distinct_boxes(boxes, 1.0) == [0, 1, 2, 3]  # the paper's one box per bag
    assert distinct_boxes([], 0.5) == []

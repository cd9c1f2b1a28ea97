"""PSA pieces: seeds, pair mask, affinity loss, random walk on toy affinities, and the labelling stage."""

from __future__ import annotations

import math

import numpy as np
import torch

from wsis_core.affinity import (
    AffinityNet,
    affinity_loss,
    dense_affinity,
    make_semantic_labels,
    pair_distances,
    propagate_labels,
    radius_pairs,
    random_walk,
    seed_labels,
)
from wsis_core.backbone import present_classes, to_input
from wsis_core.classifier import build_classifier, compute_cams
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.data.types import VOID
from wsis_core.profiles import get_profile


def test_random_walk_averages_within_connected_components():
    affinity = torch.zeros(5, 5)
    affinity[:3, :3] = 1
    affinity[3:, 3:] = 1
    scores = torch.tensor([[3.0, 0.0, 0.0, 0.0, 4.0], [0.0, 0.0, 0.0, 1.0, 1.0]])
    walked = random_walk(scores, affinity, beta=8, steps=5)
    assert torch.allclose(walked, torch.tensor([[1.0, 1, 1, 2, 2], [0, 0, 0, 1, 1]]))


def test_random_walk_on_two_nodes_follows_the_transition_matrix():
    affinity = torch.tensor([[1.0, 0.5], [0.5, 1.0]])  # T = [[2/3, 1/3], [1/3, 2/3]] for beta = 1
    one_step = random_walk(torch.tensor([[1.0, 0.0]]), affinity, beta=1, steps=1)
    assert torch.allclose(one_step, torch.tensor([[2 / 3, 1 / 3]]))
    two_steps = random_walk(torch.tensor([[1.0, 0.0]]), affinity, beta=1, steps=2)
    assert torch.allclose(two_steps, torch.tensor([[5 / 9, 4 / 9]]))
    assert torch.allclose(random_walk(torch.tensor([[1.0, 0.0]]), affinity, 1, 256), torch.tensor([[0.5, 0.5]]))
    # beta sharpens: 0.5^2 = 0.25 → T = [[0.8, 0.2], [0.2, 0.8]]
    assert torch.allclose(random_walk(torch.tensor([[1.0, 0.0]]), affinity, 2, 1), torch.tensor([[0.8, 0.2]]))


def test_random_walk_of_zero_steps_keeps_the_scores():
    affinity = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.7]])
    assert torch.equal(random_walk(scores, affinity, beta=8, steps=0), scores)


def test_random_walk_is_batched():
    affinity = torch.stack([torch.eye(3), torch.ones(3, 3)])
    scores = torch.tensor([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]])
    assert torch.allclose(random_walk(scores, affinity, 8, 4), torch.tensor([[[1.0, 2, 3]], [[2.0, 2, 2]]]))


def test_radius_pairs_are_strict_and_listed_once():
    four = radius_pairs(3, 3, 1.1)
    assert four.shape == (2, 12) and (four[0] < four[1]).all()  # 12 horizontal/vertical neighbour pairs
    assert ((four == 4).any(0)).sum() == 4  # the centre has 4 neighbours
    assert radius_pairs(3, 3, 1.5).shape == (2, 20)  # + 8 diagonal pairs
    assert radius_pairs(2, 2, 1.0).shape == (2, 0)


def test_dense_affinity_is_symmetric_with_unit_diagonal():
    pairs = torch.tensor([[0, 1], [1, 2]])  # (0, 1) and (1, 2) of 3 pixels
    affinity = dense_affinity(torch.tensor([[0.0, math.log(2)]]), pairs, 3)
    assert torch.allclose(affinity, torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.0, 0.5, 1.0]]]))


def test_seed_labels_from_cams():
    cams = torch.tensor([[[[0.9, 0.1, 0.0]], [[0.2, 0.3, 0.05]]]])  # [1, 2 classes, 1, 3]
    seeds = seed_labels(cams, fg_threshold=0.28, bg_threshold=0.08)
    assert seeds.dtype == torch.uint8 and seeds.tolist() == [[[1, 2, 0]]]
    assert seed_labels(cams, 0.5, 0.08).tolist() == [[[1, VOID, 0]]]


def test_affinity_loss_terms():
    d = torch.tensor([[0.7]])
    pair = torch.tensor([[0], [1]])
    seeds = lambda a, b: torch.tensor([[a, b]], dtype=torch.uint8)  # noqa: E731
    assert torch.isclose(affinity_loss(d, seeds(2, 2), pair), torch.tensor(0.7 / 4))
    assert torch.isclose(affinity_loss(d, seeds(0, 0), pair), torch.tensor(0.7 / 4))
    assert torch.isclose(affinity_loss(d, seeds(0, 1), pair), torch.tensor(-math.log(1 - math.exp(-0.7)) / 2))
    assert affinity_loss(d, seeds(1, VOID), pair) == 0


def test_pair_distances_are_mean_l1():
    features = torch.tensor([[[[0.0, 1.0, 5.0]], [[0.0, 3.0, 5.0]]]])  # 2 channels, 1 x 3 pixels
    assert torch.allclose(pair_distances(features, radius_pairs(1, 3, 1.5)), torch.tensor([[2.0, 3.0]]))


def test_affinity_net_features_are_at_stride_8():
    from wsis_core.backbone import build_backbone

    net = AffinityNet(build_backbone("resnet18", 16)).eval()
    assert net(torch.zeros(1, 3, 64, 48)).shape == (1, 448, 8, 6)
    assert net.feature_size(64, torch.device("cpu")) == (8, 8)


def test_make_semantic_labels_end_to_end(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "aff.epochs": 1, "aff.batch_size": 4, "infer_batch_size": 4,
                                   "aff.rw_t": 16, "aff.label_min_score": 0.5})
    torch.manual_seed(0)
    classifier = build_classifier(len(dataset.classes), cfg=profile.cls, backbone=profile.backbone).eval()
    calls = []
    result = make_semantic_labels(classifier, dataset, torch.device("cpu"), cfg=profile.aff, input_size=32, batch_size=4,
                                  epoch_images=profile.epoch_images, on_progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1] == (len(calls), len(calls))
    assert len(result.labels) == len(dataset)
    for info, label in zip(dataset.images, result.labels):
        assert label.labels.shape == (info.height, info.width) and label.labels.dtype == np.uint8
        assert set(np.unique(label.labels)) <= {0, VOID, *info.labels}
        assert label.classes == (0, *sorted(info.labels))
        assert label.scores.shape == (len(label.classes), info.height, info.width)
        np.testing.assert_allclose(label.scores.sum(0), 1, atol=1e-5)
        # Eq. (4)'s O of a present class, zero for an absent one
        assert label.score_map(info.labels[0]).shape == (info.height, info.width)
        absent = next(c for c in range(1, len(dataset.classes) + 1) if c not in info.labels)
        assert not label.score_map(absent).any()
        confident = label.labels != VOID
        assert (label.scores.max(0)[confident] >= 0.5).all()



def test_no_walk_labels_are_the_cams_own_and_skip_the_affinity_features(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "infer_batch_size": 4, "aff.rw_t": 0, "aff.rw_bg_power": 1.0,
                                   "aff.label_min_score": 0.5})
    torch.manual_seed(0)
    classifier = build_classifier(len(dataset.classes), cfg=profile.cls, backbone=profile.backbone).eval()
    affinity_net = AffinityNet(classifier.backbone).eval()
    forwards = []
    affinity_net.fuse.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    labels = propagate_labels(classifier, affinity_net, dataset, torch.device("cpu"), cfg=profile.aff, input_size=32,
                              batch_size=4)
    assert forwards == [1]  # only feature_size's probe, no image batch
    positions = list(range(len(dataset)))
    images = torch.stack([to_input(dataset.load_image(i), profile.input_size) for i in positions])
    with torch.no_grad():
        size = affinity_net.feature_size(profile.input_size, torch.device("cpu"))
        cams = compute_cams(classifier, images, present_classes(dataset, positions), size)
    start = torch.cat([1 - cams.amax(dim=1, keepdim=True), cams], dim=1)
    for position, label in zip(positions, labels):
        classes = (0, *sorted(dataset.images[position].labels))
        scores = torch.nn.functional.interpolate(start[position][list(classes)][None], size=label.labels.shape,
                                                 mode="bilinear", align_corners=False)[0]
        scores = scores / scores.sum(0, keepdim=True).clamp_min(1e-12)
        np.testing.assert_allclose(label.scores, scores.numpy(), atol=1e-5)

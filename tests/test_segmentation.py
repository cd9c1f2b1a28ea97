"""SS branch: PSP shapes, softmax score maps, the ignore label, and the train / predict stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsis_core.backbone import backbone_for, build_backbone
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.data.types import VOID
from wsis_core.errors import WsisInputError
from wsis_core.profiles import get_profile
from wsis_core.segmentation import (
    PyramidPooling,
    SegmentationModel,
    build_segmentation_model,
    predict_score_maps,
    scores_at,
    segmentation_loss,
    train_segmentation,
)


def test_pyramid_pooling_concatenates_upsampled_levels():
    ppm = PyramidPooling(32, bins=(1, 2, 3, 6))
    features = torch.randn(2, 32, 7, 9)
    out = ppm(features)
    assert out.shape == (2, 32 + 4 * 8, 7, 9) and ppm.out_channels == 64
    assert torch.equal(out[:, :32], features)
    # the 1x1 bin is constant over the map (global pooling, upsampled)
    level1 = out[:, 32:40]
    assert torch.allclose(level1, level1[:, :, :1, :1].expand_as(level1))


def test_segmentation_model_shapes_and_softmax():
    model = SegmentationModel(build_backbone("resnet18", 16), num_classes=5).eval()
    images = torch.randn(2, 3, 64, 48)
    assert model(images).shape == (2, 6, 4, 3)
    with torch.no_grad():
        scores = scores_at(model(images), images.shape[-2:])
    assert scores.shape == (2, 6, 64, 48)
    assert torch.allclose(scores.sum(1), torch.ones(2, 64, 48), atol=1e-5) and (scores >= 0).all()


def test_loss_ignores_void_pixels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), VOID, dtype=torch.long)
    labels[0, 1, 2] = 2
    labels[0, 3, 0] = 0
    expected = F.cross_entropy(logits[0, :, [1, 3], [2, 0]].T, torch.tensor([2, 0]))
    assert torch.isclose(segmentation_loss(logits, labels), expected)
    changed = logits.detach().clone()
    changed[0, :, 0, 0] += 100  # a void pixel
    assert torch.isclose(segmentation_loss(changed, labels), expected)
    segmentation_loss(logits, labels).backward()
    assert logits.grad[0, :, 0, 0].abs().sum() == 0 and logits.grad[0, :, 1, 2].abs().sum() > 0
    all_void = segmentation_loss(logits, torch.full((1, 4, 4), VOID, dtype=torch.long))
    assert all_void == 0 and all_void.requires_grad


def _model(profile, dataset) -> SegmentationModel:
    return build_segmentation_model(len(dataset.classes), backbone_for(profile.backbone), cfg=profile.seg)


def test_train_and_predict_at_original_resolution(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "seg.epochs": 1, "seg.batch_size": 4, "infer_batch_size": 4})
    cfg, cpu = profile.seg, torch.device("cpu")
    rng = np.random.default_rng(0)
    labels = []
    for info in dataset.images:
        label = rng.choice([0, VOID, *info.labels], size=(info.height, info.width)).astype(np.uint8)
        labels.append(label)
    calls = []
    torch.manual_seed(0)
    model = train_segmentation(dataset, labels, _model(profile, dataset), cpu, cfg=cfg, input_size=32,
                               epoch_images=profile.epoch_images, on_progress=lambda *a: calls.append(a))
    assert calls == [(1, 2), (2, 2)] and not model.training
    image_classes = cfg.model_copy(update={"image_classes": True})
    maps = predict_score_maps(model, dataset, cpu, cfg=image_classes, input_size=32, batch_size=4, indices=[0, 5])
    for info, scores in zip([dataset.images[0], dataset.images[5]], maps):
        assert scores.shape == (len(dataset.classes) + 1, info.height, info.width) and scores.dtype == np.float32
        np.testing.assert_allclose(scores.sum(0), 1, atol=1e-5)
        absent = [c for c in range(1, len(dataset.classes) + 1) if c not in info.labels]
        assert absent and np.all(scores[absent] == 0)  # S covers background and the image's own classes
    every_class = cfg.model_copy(update={"image_classes": False})
    every_class = predict_score_maps(model, dataset, cpu, cfg=every_class, input_size=32, batch_size=4, indices=[0])[0]
    assert every_class[absent].max() > 0
    # later rounds continue training the same model on other labels
    again = train_segmentation(dataset, labels, model, cpu, cfg=cfg.model_copy(update={"epochs": 0}), input_size=32)
    assert again is model


def test_pseudo_labels_are_checked(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "seg.epochs": 0})
    model, train = _model(profile, dataset), {"cfg": profile.seg, "input_size": 32}
    good = [np.zeros((i.height, i.width), np.uint8) for i in dataset.images]
    with pytest.raises(WsisInputError, match="pseudo label maps"):
        train_segmentation(dataset, good[:-1], model, torch.device("cpu"), **train)
    with pytest.raises(WsisInputError, match="pseudo label is"):
        train_segmentation(dataset, [np.zeros((5, 5), np.uint8)] + good[1:], model, torch.device("cpu"), **train)
    bad = [g.copy() for g in good]
    bad[2][0, 0] = len(dataset.classes) + 1
    with pytest.raises(WsisInputError, match="class"):
        train_segmentation(dataset, bad, model, torch.device("cpu"), **train)

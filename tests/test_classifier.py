"""Backbone factory, classifier/CAMs, and the small shared pieces: profiles, device, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision

from wsis_core.backbone import Schedule, build_backbone, cue_schedule, fit, load_batch, present_classes
from wsis_core.checkpoint import load_checkpoint, save_checkpoint
from wsis_core.classifier import (
    Classifier,
    build_classifier,
    classification_loss,
    compute_cams,
    pool_maps,
    random_scale,
    train_classifier,
)
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.device import resolve_device
from wsis_core.errors import WsisInputError
from wsis_core.profiles import PROFILES, Profile, get_profile


@pytest.mark.parametrize(("name", "stride"), [("resnet18", 8), ("resnet18", 16), ("resnet18", 32), ("resnet50", 8)])
def test_output_stride(name, stride):
    backbone = build_backbone(name, stride).eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == list(backbone.channels)
    assert features[-1].shape[-2:] == (64 // stride, 64 // stride)
    assert features[1].shape[-2:] == (8, 8)


def test_backbone_weights_load_from_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", 16, weights=path)
    assert torch.equal(backbone.stem[0].weight, reference.conv1.weight)
    assert torch.equal(backbone.stages[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert backbone.stages[3][0].conv1.dilation == (2, 2)  # dilation keeps the loaded weights

    with pytest.raises(WsisInputError, match="not found"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WsisInputError, match="junk.pth"):
        build_backbone("resnet18", weights=tmp_path / "junk.pth")
    with pytest.raises(WsisInputError, match="resnet50"):
        build_backbone("resnet50", weights=path)
    with pytest.raises(WsisInputError, match="output stride"):
        build_backbone("resnet18", 4)


def test_frozen_batch_norm_stays_in_eval_mode():
    backbone = build_backbone("resnet18", 32, freeze_bn=True).train()
    assert backbone.training and not backbone.stem[1].training


def test_cams_are_normalised_and_only_for_present_classes():
    torch.manual_seed(0)
    model = Classifier(build_backbone("resnet18", 16), num_classes=4).eval()
    images = torch.randn(2, 3, 64, 64)
    present = torch.tensor([[True, False, True, False], [False, False, False, True]])
    assert model.response_maps(images).shape == (2, 4, 4, 4) and model(images).shape == (2, 4)
    cams = compute_cams(model, images, present)
    assert cams.shape == (2, 4, 4, 4) and cams.min() >= 0 and cams.max() <= 1
    assert not cams[~present].any()
    assert compute_cams(model, images, present, size=(16, 12)).shape == (2, 4, 16, 12)


def test_pooling_between_average_and_max():
    maps = torch.randn(2, 3, 5, 4)
    mean, top = maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))
    assert torch.allclose(pool_maps(maps, "gap", 5.0), mean)
    lse = pool_maps(maps, "lse", 5.0)
    assert (lse >= mean - 1e-6).all() and (lse <= top + 1e-6).all()
    assert torch.allclose(pool_maps(maps.double(), "lse", 1e-3), mean.double(), atol=1e-2)
    assert torch.allclose(pool_maps(maps, "lse", 1e3), top, atol=1e-2)
    model = Classifier(build_backbone("resnet18", 32), num_classes=3, pooling="lse", lse_r=2.0).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(images), pool_maps(model.response_maps(images), "lse", 2.0))
    with pytest.raises(ValueError, match="pooling"):
        Classifier(build_backbone("resnet18", 32), num_classes=3, pooling="max")


def test_random_scale_resizes_the_whole_batch():
    images = torch.randn(2, 3, 40, 40)
    generator = torch.Generator().manual_seed(0)
    assert random_scale(generator, images, 1.0, 1.0) is images
    sides = {random_scale(generator, images, 0.8, 1.2).shape[-1] for _ in range(20)}
    assert min(sides) >= 32 and max(sides) <= 48 and len(sides) > 1
    assert random_scale(generator, images, 2.0, 2.0).shape == (2, 3, 80, 80)


def test_training_steps_reduce_the_loss(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    profile = get_profile("tiny", {"input_size": 32, "cls.epochs": 2, "cls.batch_size": len(dataset), "cls.lr": 1e-3})
    torch.manual_seed(0)
    model = build_classifier(len(dataset.classes), cfg=profile.cls, backbone=profile.backbone)
    positions = list(range(len(dataset)))
    images, present = load_batch(dataset, positions, 32), present_classes(dataset, positions)

    def loss() -> float:
        model.train()  # batch statistics, as during training
        with torch.no_grad():
            return classification_loss(model, images, present).item()

    before = loss()
    calls = []
    trained = train_classifier(dataset, model, torch.device("cpu"), cfg=profile.cls, input_size=profile.input_size,
                               seed=profile.seed, epoch_images=profile.epoch_images,
                               on_progress=lambda *a: calls.append(a))
    assert trained is model and not model.training and calls == [(1, 2), (2, 2)]
    assert loss() < before


def _recording_fit(schedule: Schedule, num_items: int):
    """Run fit on a one-weight model; returns the positions of every batch and whether autocast was on."""
    model = torch.nn.Linear(1, 1)
    batches, autocast = [], []

    def batch_loss(positions, _generator):
        batches.append(positions)
        autocast.append(torch.is_autocast_enabled("cpu"))
        return model(torch.ones(len(positions), 1)).sum()

    calls = []
    losses = fit(model, num_items, batch_loss, schedule, torch.device("cpu"), lambda *a: calls.append(a))
    assert len(losses) == len(batches) == schedule.steps(num_items) and calls[-1] == (len(batches),) * 2
    return batches, autocast


def test_fit_draws_at_most_epoch_items_per_epoch():
    batches, _ = _recording_fit(Schedule(epochs=3, batch_size=2, lr=0.1, weight_decay=0, epoch_items=4), 10)
    epochs = [sum(batches[i : i + 2], []) for i in range(0, 6, 2)]
    assert len(batches) == 6 and all(len(set(e)) == 4 and set(e) <= set(range(10)) for e in epochs)
    assert len({tuple(sorted(e)) for e in epochs}) > 1  # a fresh subset each epoch
    batches, _ = _recording_fit(Schedule(epochs=2, batch_size=4, lr=0.1, weight_decay=0, epoch_items=50), 10)
    assert [sorted(sum(batches[i : i + 3], [])) for i in (0, 3)] == [list(range(10))] * 2  # cap above the data


def test_fit_runs_the_forward_pass_in_the_schedules_precision():
    for precision, expected in (("fp32", False), ("bf16", True)):
        _, autocast = _recording_fit(Schedule(epochs=1, batch_size=2, lr=0.1, weight_decay=0, precision=precision), 4)
        assert autocast == [expected, expected]


def test_cue_schedule_reads_the_profile(monkeypatch):
    profile = get_profile("tiny", {"aff.epochs": 3, "aff.batch_size": 5, "aff.lr": 0.5, "seed": 7, "epoch_images": 9})
    cpu, run = torch.device("cpu"), {"seed": profile.seed, "epoch_images": profile.epoch_images}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert cue_schedule(profile.aff, cpu, **run) == Schedule(3, 5, 0.5, 1e-4, 7, 9, "bf16")
    assert cue_schedule(profile.aff, cpu, **run).steps(100) == 3 * 2  # 3 epochs of 9 images, batch 5
    assert cue_schedule(get_profile("tiny", {"cls.precision": "fp32"}).cls, cpu).precision == "fp32"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {})
    assert cue_schedule(profile.cls, cpu, **run).precision == "fp32"


def test_present_classes_use_image_level_labels(synth_dataset):
    dataset = open_weak_dataset(synth_dataset, "train")
    present = present_classes(dataset, [0, 1])
    for row, info in enumerate(dataset.images[:2]):
        assert {c + 1 for c in present[row].nonzero().flatten().tolist()} == set(info.labels)


def test_checkpoint_round_trip(tmp_path):
    profile = get_profile("tiny", {"input_size": 32})
    model = build_classifier(3, cfg=profile.cls, backbone=profile.backbone)
    path = save_checkpoint(tmp_path / "ckpt" / "classifier.pt", model, profile.to_dict(), ["a", "b", "c"])
    assert [p.name for p in path.parent.iterdir()] == ["classifier.pt"]  # no temporary file left
    checkpoint = load_checkpoint(path)
    saved = Profile.model_validate(checkpoint.config)
    assert checkpoint.classes == ["a", "b", "c"] and saved == profile
    restored = build_classifier(len(checkpoint.classes), cfg=saved.cls, backbone=saved.backbone)
    restored.load_state_dict(checkpoint.state_dict)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    with pytest.raises(WsisInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(WsisInputError, match="not a wsis checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_profiles_and_overrides():
    assert PROFILES["tiny"].backbone.name == "resnet18" and PROFILES["paper"].backbone.name == "resnet50"
    paper = PROFILES["paper"]
    assert (paper.cls.lr, paper.seg.lr, paper.seg.weight_decay, paper.seg.batch_size) == (1e-4, 1e-4, 1e-4, 1)
    profile = get_profile("tiny", {"cls.epochs": "2", "seg.psp_bins": "1,2", "backbone.freeze_bn": "true",
                                   "backbone.weights": "none", "instance.lr": "0.01", "backbone.output_stride": "16"})
    assert (profile.cls.epochs, profile.seg.psp_bins, profile.backbone.freeze_bn) == (2, (1, 2), True)
    assert profile.backbone.weights is None and profile.instance.lr == 0.01 and profile.backbone.output_stride == 16
    assert PROFILES["tiny"].epoch_images == 200 and paper.epoch_images is None
    assert get_profile("paper", {"epoch_images": "300"}).epoch_images == 300
    assert get_profile("tiny", {"epoch_images": "none"}).epoch_images is None
    for name, overrides, message in [
        ("tiny", {"epoch_images": 0}, "epoch_images"),
        ("tiny", {"epoch_images": "many"}, "epoch_images"),
        ("tiny", {"epoch_images": True}, "epoch_images"),
        ("tiny", {"cls.precision": "fp16"}, "cls.precision"),
        ("huge", {}, "unknown profile 'huge'"),
        ("tiny", {"epochs": 3}, "unknown profile field"),
        ("tiny", {"cls": 3}, "unknown profile field"),
        ("tiny", {"cls.peak_window": 4}, "cls.peak_window"),
        ("tiny", {"backbone.output_stride": 4}, "backbone.output_stride"),
        ("tiny", {"cls.epochs": "many"}, "cls.epochs"),
        ("tiny", {"aff.cam_bg_threshold": 0.9}, "aff.cam_bg_threshold"),
        ("tiny", {"cls.pooling": "max"}, "cls.pooling"),
        ("tiny", {"cls.min_scale": 1.5, "cls.max_scale": 1.2}, "cls.max_scale"),
        ("tiny", {"cls.lse_r": 0}, "cls.lse_r"),
    ]:
        with pytest.raises(WsisInputError, match=message):
            get_profile(name, overrides)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(WsisInputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(WsisInputError, match="CUDA"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(WsisInputError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")

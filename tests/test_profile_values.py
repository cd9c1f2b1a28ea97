"""The nested profiles (issue 21) hold exactly the values the flat ones had, field by field, and old flat names
are one-line errors that name the new field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsis_core.errors import WsisInputError
from wsis_core.profiles import PROFILES, field_paths, get_profile

# Flat field (before issue 21) -> dotted field. cue_precision set both cue networks' precision.
RENAMED = {
    "name": ("name",), "seed": ("seed",), "input_size": ("input_size",), "infer_batch_size": ("infer_batch_size",),
    "epoch_images": ("epoch_images",),
    "backbone": ("backbone.name",), "backbone_weights": ("backbone.weights",),
    "backbone_weights_sha256": ("backbone.weights_sha256",), "output_stride": ("backbone.output_stride",),
    "freeze_bn": ("backbone.freeze_bn",),
    "cue_precision": ("cls.precision", "aff.precision"),
    "cls_epochs": ("cls.epochs",), "cls_batch_size": ("cls.batch_size",), "cls_lr": ("cls.lr",),
    "cls_weight_decay": ("cls.weight_decay",), "cls_pooling": ("cls.pooling",), "cls_lse_r": ("cls.lse_r",),
    "cls_min_scale": ("cls.min_scale",), "cls_max_scale": ("cls.max_scale",), "peak_window": ("cls.peak_window",),
    "peak_threshold": ("cls.peak_threshold",), "peak_min_score": ("cls.peak_min_score",),
    "cam_fg_threshold": ("aff.cam_fg_threshold",), "cam_bg_threshold": ("aff.cam_bg_threshold",),
    "aff_epochs": ("aff.epochs",), "aff_batch_size": ("aff.batch_size",), "aff_lr": ("aff.lr",),
    "aff_weight_decay": ("aff.weight_decay",), "aff_radius": ("aff.radius",), "rw_beta": ("aff.rw_beta",),
    "rw_t": ("aff.rw_t",), "rw_bg_power": ("aff.rw_bg_power",), "label_min_score": ("aff.label_min_score",),
    "seg_epochs": ("seg.epochs",), "seg_batch_size": ("seg.batch_size",), "seg_lr": ("seg.lr",),
    "seg_weight_decay": ("seg.weight_decay",), "psp_bins": ("seg.psp_bins",),
    "seg_image_classes": ("seg.image_classes",),
    "proposal_max": ("mil.proposal_max",), "proposal_workers": ("mil.proposal_workers",),
    "mil_top_k": ("mil.top_k",), "mil_lambda": ("mil.lam",), "mil_epochs": ("mil.epochs",), "mil_lr": ("mil.lr",),
    "mil_weight_decay": ("mil.weight_decay",), "mil_feature_stage": ("mil.feature_stage",),
    "mil_hidden": ("mil.hidden",), "mil_nms_iou": ("mil.nms_iou",),
    "ccgr_iters": ("ccgr.iters",), "ccgr_lr": ("ccgr.lr",), "ccgr_context_scale": ("ccgr.context_scale",),
    "ccgr_gap": ("ccgr.gap",), "ccgr_moves": ("ccgr.moves",), "ccgr_chunk_images": ("ccgr.chunk_images",),
    "crop_mode": ("pseudo.crop_mode",), "crop_threshold": ("pseudo.crop_threshold",),
    "min_instance_pixels": ("pseudo.min_instance_pixels",),
    "is_epochs": ("instance.epochs",), "is_batch_size": ("instance.batch_size",), "is_lr": ("instance.lr",),
    "is_weight_decay": ("instance.weight_decay",), "is_min_size": ("instance.min_size",),
    "is_max_size": ("instance.max_size",), "is_proposals": ("instance.proposals",), "is_rois": ("instance.rois",),
    "is_mask_channels": ("instance.mask_channels",), "is_fpn_channels": ("instance.fpn_channels",),
    "is_box_head_size": ("instance.box_head_size",), "is_precision": ("instance.precision",),
    "is_score_threshold": ("instance.score_threshold",), "is_label_score": ("instance.label_score",),
}
FLAT = json.loads((Path(__file__).parent / "data" / "flat_profiles_before_issue21.json").read_text())
# Fields added after issue 21, and defaults changed since, with their value per profile (docs/decisions.md).
ADDED = {
    "devices": {"tiny": 1, "paper": 1},
    "cls.peak_min_ratio": {"tiny": 0.5, "paper": 0.0},
    "pseudo.grabcut_iters": {"tiny": 5, "paper": 5},
    "pseudo.grabcut_min_fill": {"tiny": 0.2, "paper": 0.2},
    "pseudo.workers": {"tiny": 2, "paper": 2},
    "mil.objectness": {"tiny": "straddling", "paper": "source"},
    "mil.superpixel_scale": {"tiny": 100.0, "paper": 100.0},
    "mil.later_boxes": {"tiny": "bags", "paper": "bags"},
    "ccgr.first_round": {"tiny": 1, "paper": 1},
    "pseudo.box": {"tiny": "mask", "paper": "refined"},
}
CHANGED = {"tiny": {"crop_mode": "grabcut"}, "paper": {}}


def _value(profile, path: str):
    for part in path.split("."):
        profile = getattr(profile, part)
    return profile


def test_every_field_is_renamed_once():
    assert set(RENAMED) == set(FLAT["tiny"])
    assert sorted([*(p for paths in RENAMED.values() for p in paths), *ADDED]) == sorted(p for p, _ in field_paths())


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_the_profiles_keep_their_values_field_by_field(name):
    profile = PROFILES[name]
    for old, new in RENAMED.items():
        for path in new:
            expected = CHANGED[name].get(old, FLAT[name][old])
            value = _value(profile, path)
            assert (list(value) if isinstance(value, tuple) else value) == expected, (old, path)
            assert type(value) is (tuple if isinstance(expected, list) else type(expected)), (old, path)
    for path, values in ADDED.items():
        assert _value(profile, path) == values[name] and type(_value(profile, path)) is type(values[name]), path


@pytest.mark.parametrize("old", ["cls_epochs", "is_lr", "ccgr_iters"])
def test_an_old_flat_name_is_a_one_line_error_naming_the_new_one(old):
    with pytest.raises(WsisInputError, match=f"unknown profile field.*{old}.*did you mean {RENAMED[old][0]}") as err:
        get_profile("tiny", {old: 1})
    assert "\n" not in str(err.value)

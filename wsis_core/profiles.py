"""Run profiles: every knob of every stage (cues, SS, proposals, MIL, CCGR, pseudo labels, IS branch) in one
plain dataclass.

``tiny`` runs end to end on a few hundred small images on a laptop CPU (ResNet-18, 128 px inputs, few
epochs; where it departs from the paper's recipe, the field's comment says why). ``paper`` follows the
paper's "Implementation details" (ResNet-50, Adam, lr 1e-4, weight decay 1e-4, SS batch size 1) and PSA
(Ahn & Kwak 2018) for the CAM/AffinityNet settings (448 px inputs, output stride 8, radius 5, beta 8,
t = 2^8, background power 16); it needs a GPU. Any field can be overridden with :func:`get_profile` (the CLI
exposes them all).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass

from wsis_core.errors import WsisInputError

# Names of torchvision ResNet constructors (wsis_core.backbone builds them) and their output strides.
# Kept here, without importing torch, so that the API validates run configurations cheaply.
BACKBONE_NAMES = ("resnet18", "resnet50")
OUTPUT_STRIDES = (8, 16, 32)
PRECISIONS = ("auto", "fp32", "bf16")  # training forward passes: bf16 autocast where native ("auto"), fp32, bf16


@dataclass(frozen=True)
class Profile:
    name: str = "tiny"
    # Shared backbone (paper: ResNet-50).
    backbone: str = "resnet18"
    backbone_weights: str | None = None  # local torchvision state_dict file; None = random init
    backbone_weights_sha256: str | None = None  # hex sha256 the weights file must have (None: not checked)
    output_stride: int = 8  # 16x16 maps at 128 px: stride 16 (8x8) left PSA below raw CAMs (bench/cues_quality.py)
    input_size: int = 128  # images are resized to input_size x input_size for the networks
    freeze_bn: bool = False  # keep batch-norm statistics fixed (needed for batch size 1)
    seed: int = 0
    infer_batch_size: int = 16
    # Images an epoch of every training loop draws (a fresh random subset each epoch; None: the whole train split).
    # tiny's epochs were set on 200 images: the cap keeps its step counts, and so its time per round, from growing
    # with the data (600 images: 3 rounds in 18.2 min on 2 CPU cores, bench/results/paper_tables_600_cpu.md).
    epoch_images: int | None = 200
    # Training forward pass of the round-1 cue networks (classifier and AffinityNet): "auto" = bf16 autocast where
    # the device has bf16 instructions, else fp32. On 2 CPU cores with AVX-512 BF16 it cut their training by 45 % /
    # 36 % at the same PSA label mIoU; the SS branch lost 0.8 / 4.5 mIoU points in bf16 (seeds 0 / 1), so it and the
    # MIL branch stay fp32 (bench/results/cue_precision_cpu.md).
    cue_precision: str = "auto"
    # Multi-label classifier (image-level labels, BCE): CAMs and PRM peaks.
    # Cue steps (epochs of epoch_images), bench/results/cue_steps_600_cpu.md; the classifier's 6 became 20 where a
    # small part tells the class and 6 left it (its peaks and CAMs) unfit (bench/results/parts_round1_stages.md).
    cls_epochs: int = 20
    cls_batch_size: int = 16
    cls_lr: float = 3e-4  # 1e-3 did not fit the synthetic set from random init; 3e-4 did
    cls_weight_decay: float = 1e-4
    cls_pooling: str = "gap"  # "gap" (CAM/PSA) or "lse" (log-sum-exp, Pinheiro & Collobert 2015)
    cls_lse_r: float = 5.0  # sharpness r of log-sum-exp pooling (r -> 0: average, r -> inf: max)
    cls_min_scale: float = 1.0  # training batches are resized by a random factor in [min, max]
    cls_max_scale: float = 1.0
    peak_window: int = 5  # odd side of the local-maximum window, in response-map cells (PRM: 3; 5: one per part)
    peak_threshold: float = 0.5  # a peak must reach this fraction of its map's range
    peak_min_score: float | None = 0.0  # a peak's response must exceed this (None: any response; PRM: positive)
    # PSA seeds from normalised CAMs. PSA's background (1 - max CAM)^alpha with alpha 4 / 32 marks a
    # pixel foreground / background exactly where max CAM > 0.28 / < 0.08, hence these defaults.
    cam_fg_threshold: float = 0.28
    cam_bg_threshold: float = 0.08
    # AffinityNet (stride-8 features) and random walk.
    aff_epochs: int = 0  # 0 with rw_t 0: tiny's SS labels come from the CAMs, AffinityNet is not trained
    aff_batch_size: int = 16
    aff_lr: float = 3e-4
    aff_weight_decay: float = 1e-4
    aff_radius: int = 5  # pixel pairs closer than this (in stride-8 cells) get an affinity
    rw_beta: float = 8.0  # affinities are raised to beta before normalisation
    # Random-walk steps (power of the transition matrix; PSA's 256 suit its 56x56 maps, they over-smooth tiny's
    # 16x16, bench/results/cues_quality_cpu.md) and background score (1 - max CAM)^power walked with the CAMs
    # (PSA: 16). On textured bodies 32 steps with power 4 flooded the objects with background, and every walk
    # lowered the labels against the CAMs themselves: rw_t 0 (no walk) with power 1 gave the best S, boxes and
    # pseudo masks on parts and easy (bench/results/parts_round1_stages.md).
    rw_t: int = 0
    rw_bg_power: float = 1.0
    label_min_score: float = 0.5  # pixels whose top propagated score is lower get the ignore label
    # SS branch (FCN + PSP pyramid pooling).
    seg_epochs: int = 3
    seg_batch_size: int = 16
    seg_lr: float = 3e-4
    seg_weight_decay: float = 1e-4
    psp_bins: tuple[int, ...] = (1, 2, 3, 6)
    seg_image_classes: bool = True  # S of a train image over background + its labelled classes only
    # Proposals (selective search; MCG files can be given instead) and bags (Eq. 4).
    proposal_max: int = 2000
    proposal_workers: int = 2
    mil_top_k: int = 10  # proposals kept per bag (paper: 10)
    mil_lambda: float = 0.1  # background penalty of Eq. 4 (paper: 0.1)
    # MIL branch (WSDDN, Eq. 2) on the shared backbone, one image per step (paper).
    mil_epochs: int = 3
    mil_lr: float = 1e-4
    mil_weight_decay: float = 1e-4
    mil_feature_stage: int = 2  # backbone stage (0-3) whose features ROIAlign pools
    mil_hidden: int = 256
    mil_nms_iou: float = 0.5  # of two MIL boxes of one class overlapping more, the weaker goes (1: keep all, paper)
    # CCGR (Eq. 3) and pseudo instance labels.
    ccgr_iters: int = 200
    ccgr_lr: float | None = None  # None: 1 % of the map's longer side per iteration
    ccgr_context_scale: float = 1.5
    ccgr_gap: str = "ring"
    # "outward": box sides only move out, a box only grows from its MIL box ("free": the paper; on our S maps free
    # boxes shrink onto the part S is strongest on, bench/results/parts_round1_stages.md).
    ccgr_moves: str = "outward"
    ccgr_chunk_images: int = 64  # images whose boxes are refined in one batched call
    crop_mode: str = "argmax"  # instance pixels: argmax of S is the box's class, or score > crop_threshold
    crop_threshold: float = 0.5
    min_instance_pixels: int = 10
    # IS branch (Mask R-CNN with FPN).
    is_epochs: int = 6
    is_batch_size: int = 4  # per device
    devices: int = 1  # IS training processes under DDP, one per device (wsis_core/instance_seg/distributed.py)
    is_lr: float = 0.005  # 0.01 at batch 2-3 was stable in short CPU runs, 0.02 diverged
    is_weight_decay: float = 1e-4
    is_min_size: int = 160
    is_max_size: int = 267
    is_proposals: int = 300  # RPN proposals kept per image in training (half at test time)
    is_rois: int = 64  # RoIs sampled per image for the box and mask losses
    is_mask_channels: int = 64  # the mask head's width dominates a CPU iteration (torchvision: 256)
    # FPN width, read by the RPN head, box head and mask head (torchvision: 256). 128 halves a CPU IS stage and
    # kept mAP_r@0.5 fully supervised, but weak round 1 lost 3.8-4.5 points (bench/results/is_fpn_width_cpu.md).
    is_fpn_channels: int = 256
    is_box_head_size: int = 1024  # the box head's fully connected width (torchvision: 1024)
    # IS training forward pass: "auto" = bf16 autocast where the device has bf16 instructions (2 CPU cores with
    # AVX-512 BF16: -24 % is_train at the same mAP, bench/results/is_precision_cpu.md), else fp32.
    is_precision: str = "auto"
    is_score_threshold: float = 0.05  # predictions kept for evaluation
    is_label_score: float = 0.5  # IS predictions that become the next round's bags and SS labels

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _HINTS[f.name])
        for name, maximum in MAXIMA.items():
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                _require(value is None or value <= maximum, name, values, f"at most {maximum:g}")
        _require(self.backbone_weights_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", self.backbone_weights_sha256)
                 is not None, "backbone_weights_sha256", self.backbone_weights_sha256, "64 lowercase hex digits")
        _require(self.backbone_weights is None or len(self.backbone_weights) <= MAX_PATH_CHARS, "backbone_weights",
                 f"{(self.backbone_weights or '')[:40]}...", f"at most {MAX_PATH_CHARS} characters")
        _require(self.backbone in BACKBONE_NAMES, "backbone", self.backbone, f"choose from {', '.join(BACKBONE_NAMES)}")
        _require(self.output_stride in OUTPUT_STRIDES, "output_stride", self.output_stride, f"one of {OUTPUT_STRIDES}")
        _require(self.input_size >= 32, "input_size", self.input_size, "at least 32")
        for name in ("infer_batch_size", "cls_batch_size", "aff_batch_size", "seg_batch_size", "aff_radius"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "at least 1")
        for name in ("cls_epochs", "aff_epochs", "seg_epochs", "rw_t"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "not negative")
        for name in ("cls_lr", "aff_lr", "seg_lr", "rw_beta", "rw_bg_power", "cls_lse_r", "cls_min_scale"):
            _require(getattr(self, name) > 0, name, getattr(self, name), "positive")
        for name in ("cls_weight_decay", "aff_weight_decay", "seg_weight_decay"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "not negative")
        for name in ("peak_threshold", "cam_fg_threshold", "cam_bg_threshold", "label_min_score"):
            _require(0 <= getattr(self, name) <= 1, name, getattr(self, name), "between 0 and 1")
        _require(self.cls_pooling in ("gap", "lse"), "cls_pooling", self.cls_pooling, "gap or lse")
        _require(
            self.cls_min_scale <= self.cls_max_scale, "cls_min_scale", self.cls_min_scale,
            f"at most cls_max_scale ({self.cls_max_scale})",
        )
        _require(self.peak_window >= 1 and self.peak_window % 2 == 1, "peak_window", self.peak_window, "odd, >= 1")
        _require(
            self.cam_bg_threshold <= self.cam_fg_threshold, "cam_bg_threshold", self.cam_bg_threshold,
            f"at most cam_fg_threshold ({self.cam_fg_threshold})",
        )
        _require(len(self.psp_bins) > 0 and min(self.psp_bins) >= 1, "psp_bins", self.psp_bins, "positive bin sizes")
        for name in ("proposal_max", "proposal_workers", "mil_top_k", "mil_hidden", "ccgr_chunk_images",
                     "is_batch_size", "devices", "is_min_size", "is_max_size", "is_proposals", "is_rois", "is_mask_channels",
                     "is_fpn_channels", "is_box_head_size"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "at least 1")
        for name in ("mil_epochs", "ccgr_iters", "is_epochs", "min_instance_pixels"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "not negative")
        _require(self.ccgr_lr is None or self.ccgr_lr > 0, "ccgr_lr", self.ccgr_lr, "positive or none")
        for name in ("mil_lr", "is_lr", "ccgr_context_scale"):
            _require(getattr(self, name) > 0, name, getattr(self, name), "positive")
        for name in ("crop_threshold", "is_score_threshold", "is_label_score", "mil_nms_iou"):
            _require(0 <= getattr(self, name) <= 1, name, getattr(self, name), "between 0 and 1")
        _require(self.ccgr_context_scale > 1, "ccgr_context_scale", self.ccgr_context_scale, "greater than 1")
        _require(self.ccgr_gap in ("ring", "paper"), "ccgr_gap", self.ccgr_gap, "ring or paper")
        _require(self.ccgr_moves in ("free", "outward"), "ccgr_moves", self.ccgr_moves, "free or outward")
        for name in ("cue_precision", "is_precision"):
            _require(getattr(self, name) in PRECISIONS, name, getattr(self, name), " or ".join(PRECISIONS))
        _require(self.epoch_images is None or self.epoch_images >= 1, "epoch_images", self.epoch_images, "at least 1 or none")
        _require(self.crop_mode in ("argmax", "threshold"), "crop_mode", self.crop_mode, "argmax or threshold")
        _require(0 <= self.mil_feature_stage <= 3, "mil_feature_stage", self.mil_feature_stage, "between 0 and 3")

    def to_dict(self) -> dict:
        """Plain fields, e.g. for a checkpoint's config; ``Profile(**d)`` rebuilds it."""
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(Profile)
# Upper bounds of the numeric fields (a tuple's elements each): far above any useful setting, low enough that no
# configuration keeps a worker busy for days or exhausts its memory before its first progress report.
MAXIMA: dict[str, float] = {
    "output_stride": 32, "input_size": 2048, "seed": 2**31 - 1, "infer_batch_size": 1024, "epoch_images": 10**7,
    "cls_epochs": 1000, "cls_batch_size": 1024, "cls_lr": 10.0, "cls_weight_decay": 1.0, "cls_lse_r": 1000.0,
    "cls_min_scale": 8.0, "cls_max_scale": 8.0, "peak_window": 63, "peak_threshold": 1.0, "peak_min_score": 1000.0,
    "cam_fg_threshold": 1.0, "cam_bg_threshold": 1.0,
    "aff_epochs": 1000, "aff_batch_size": 1024, "aff_lr": 10.0, "aff_weight_decay": 1.0, "aff_radius": 64,
    "rw_beta": 1000.0, "rw_t": 4096, "rw_bg_power": 1000.0, "label_min_score": 1.0,
    "seg_epochs": 1000, "seg_batch_size": 1024, "seg_lr": 10.0, "seg_weight_decay": 1.0, "psp_bins": 64,
    "proposal_max": 100_000, "proposal_workers": 64, "mil_top_k": 10_000, "mil_lambda": 1000.0,
    "mil_epochs": 1000, "mil_lr": 10.0, "mil_weight_decay": 1.0, "mil_feature_stage": 3, "mil_hidden": 8192, "mil_nms_iou": 1.0,
    "ccgr_iters": 10_000, "ccgr_lr": 1000.0, "ccgr_context_scale": 10.0, "ccgr_chunk_images": 4096,
    "crop_threshold": 1.0, "min_instance_pixels": 10**8,
    "is_epochs": 1000, "is_batch_size": 256, "devices": 64, "is_lr": 10.0, "is_weight_decay": 1.0, "is_min_size": 4096,
    "is_max_size": 4096, "is_proposals": 100_000, "is_rois": 100_000, "is_mask_channels": 4096,
    "is_fpn_channels": 4096, "is_box_head_size": 16_384, "is_score_threshold": 1.0, "is_label_score": 1.0,
}
MAX_PSP_BINS = 16  # pyramid levels of the SS branch (PSPNet: 4)
MAX_PATH_CHARS = 1000


def get_profile(name: str, /, **overrides) -> Profile:
    """Profile ``name`` with ``overrides`` applied; strings (from a command line) are converted."""
    if not isinstance(name, str) or name not in PROFILES:
        raise WsisInputError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    if "name" in overrides:
        raise WsisInputError("profile field name: choose the profile itself (--profile, config.profile), "
                             "not as an override")
    unknown = sorted(set(overrides) - set(_HINTS))
    if unknown:
        raise WsisInputError(f"unknown profile field(s): {', '.join(unknown)} (valid fields: "
                             f"{', '.join(sorted(set(_HINTS) - {'name', 'seed'}))}; `wsis profile show` describes them)")
    return dataclasses.replace(PROFILES[name], **{k: _parse(k, v) for k, v in overrides.items()})


def _parse(name: str, value):
    hint = _HINTS[name]
    if hint == tuple[int, ...] and isinstance(value, list):  # e.g. a config read back from JSON
        return tuple(value)
    if not isinstance(value, str) or hint is str:
        return value
    text = value.strip()
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if hint in (int, float):
            return hint(text)
        if hint in (float | None, int | None):
            return None if text.lower() in ("", "none") else hint.__args__[0](text)
        if hint == tuple[int, ...]:
            return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise WsisInputError(f"profile field {name}: cannot read {value!r} as {_type_name(hint)}") from None
    return None if text.lower() in ("", "none") else text  # str | None


def _check_type(name: str, value, hint) -> None:
    if hint in (float, float | None):
        ok = (value is None and hint != float) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint == tuple[int, ...]:
        ok = isinstance(value, tuple) and 0 < len(value) <= MAX_PSP_BINS and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = value if not isinstance(value, tuple) or len(value) <= MAX_PSP_BINS else f"{len(value)} values"
    elif hint in (str | None, int | None):
        ok = value is None or (isinstance(value, hint.__args__[0]) and not isinstance(value, bool))
    else:
        ok = isinstance(value, hint)
    _require(ok, name, value, f"must be {_type_name(hint)}")


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


def _require(ok: bool, name: str, value, expectation: str) -> None:
    if not ok:
        raise WsisInputError(f"profile field {name}: {expectation} (got {value!r})")


PROFILES: dict[str, Profile] = {
    "tiny": Profile(),
    "paper": Profile(
        name="paper",
        backbone="resnet50",
        output_stride=8,
        input_size=448,
        freeze_bn=True,
        infer_batch_size=8,
        cls_epochs=15,
        cls_batch_size=8,
        cls_lr=1e-4,
        cls_weight_decay=1e-4,
        aff_epochs=8,
        aff_batch_size=8,
        aff_lr=1e-4,
        aff_weight_decay=1e-4,
        rw_t=256,
        rw_bg_power=16.0,
        label_min_score=0.6,
        peak_window=3,  # the paper's recipe (PRM, PSA, WSDDN, CCGR) where tiny departs from it
        peak_min_score=None,
        seg_image_classes=False,
        mil_nms_iou=1.0,
        ccgr_moves="free",
        seg_epochs=14,  # ~80k iterations at batch size 1 on VOC's 5,717 training images
        seg_batch_size=1,
        seg_lr=1e-4,
        seg_weight_decay=1e-4,
        mil_epochs=10,  # ~55k iterations at one image per step on 5,717 images
        mil_hidden=1024,
        is_epochs=12,
        is_batch_size=8,
        is_lr=0.01,
        is_min_size=800,
        is_max_size=1333,
        is_proposals=2000,
        is_rois=512,
        is_mask_channels=256,
        epoch_images=None,
    ),
}

# One line per field: what it means (``wsis profile show``; the comments above say why a default is what it is).
FIELD_HELP: dict[str, str] = {
    "name": "the profile's name (choose it with --profile / config.profile)",
    "backbone": "shared backbone of every branch: resnet18 or resnet50",
    "backbone_weights": "local torchvision ResNet state_dict file (none: random initialisation)",
    "backbone_weights_sha256": "sha256 the weights file must have (none: not checked)",
    "output_stride": "backbone output stride of the cue networks: 8, 16 or 32",
    "input_size": "side in pixels the images are resized to for the networks",
    "freeze_bn": "keep batch-norm statistics fixed (needed for batch size 1)",
    "seed": "random seed of every stage (set it with --seed / config.seed)",
    "infer_batch_size": "images per inference batch",
    "epoch_images": "images one epoch of every training loop draws (none: the whole train split)",
    "cue_precision": "classifier and AffinityNet training precision: auto, fp32 or bf16",
    "cls_epochs": "classifier training epochs",
    "cls_batch_size": "classifier batch size",
    "cls_lr": "classifier learning rate",
    "cls_weight_decay": "classifier weight decay",
    "cls_pooling": "classifier pooling: gap (CAM/PSA) or lse (log-sum-exp)",
    "cls_lse_r": "sharpness r of log-sum-exp pooling",
    "cls_min_scale": "smallest random rescale factor of classifier training batches",
    "cls_max_scale": "largest random rescale factor of classifier training batches",
    "peak_window": "odd side of the PRM local-maximum window, in response-map cells",
    "peak_threshold": "a peak must reach this fraction of its map's range",
    "peak_min_score": "a peak's response must exceed this (none: any response)",
    "cam_fg_threshold": "normalised CAM above which PSA seeds foreground",
    "cam_bg_threshold": "normalised CAM below which PSA seeds background",
    "aff_epochs": "AffinityNet training epochs",
    "aff_batch_size": "AffinityNet batch size",
    "aff_lr": "AffinityNet learning rate",
    "aff_weight_decay": "AffinityNet weight decay",
    "aff_radius": "pixel pairs closer than this (stride-8 cells) get an affinity",
    "rw_beta": "power the affinities are raised to before the random walk",
    "rw_t": "random-walk steps (power of the transition matrix; 0: labels from the CAMs, no walk)",
    "rw_bg_power": "power of the background score (1 - max CAM) propagated with the CAMs",
    "label_min_score": "pixels whose top propagated score is lower get the ignore label",
    "seg_epochs": "SS branch training epochs",
    "seg_batch_size": "SS branch batch size",
    "seg_lr": "SS branch learning rate",
    "seg_weight_decay": "SS branch weight decay",
    "psp_bins": "pyramid pooling bin sizes of the SS branch",
    "seg_image_classes": "S of a train image over background and its labelled classes only",
    "proposal_max": "selective-search proposals kept per image",
    "proposal_workers": "processes computing selective search",
    "mil_top_k": "proposals kept per bag (Eq. 4; paper: 10)",
    "mil_lambda": "background penalty of Eq. 4 (paper: 0.1)",
    "mil_epochs": "MIL (WSDDN) training epochs",
    "mil_lr": "MIL learning rate",
    "mil_weight_decay": "MIL weight decay",
    "mil_feature_stage": "backbone stage (0-3) whose features ROIAlign pools for MIL",
    "mil_hidden": "width of the WSDDN head's hidden layers",
    "mil_nms_iou": "of two MIL boxes of one class overlapping more, the weaker goes (1: keep all)",
    "ccgr_iters": "CCGR gradient steps per box (Eq. 3)",
    "ccgr_lr": "CCGR step size (none: 1 % of the map's longer side per step)",
    "ccgr_context_scale": "context box size relative to the box in CCGR",
    "ccgr_gap": "CCGR gap term: ring or paper",
    "ccgr_moves": "CCGR box sides: free (paper) or outward (a box only grows from its MIL box)",
    "ccgr_chunk_images": "images whose boxes are refined in one batched CCGR call",
    "crop_mode": "pseudo mask pixels: argmax of S is the box's class, or threshold",
    "crop_threshold": "score above which a pixel is in the mask (crop_mode threshold)",
    "min_instance_pixels": "smallest pseudo mask kept, in pixels",
    "is_epochs": "IS branch (Mask R-CNN) training epochs",
    "is_batch_size": "IS branch batch size per device",
    "devices": "IS training devices (DDP, one process each; global batch = devices x is_batch_size)",
    "is_lr": "IS branch learning rate",
    "is_weight_decay": "IS branch weight decay",
    "is_min_size": "IS branch input: shorter side in pixels",
    "is_max_size": "IS branch input: longest side at most, in pixels",
    "is_proposals": "RPN proposals kept per image in training (half at test time)",
    "is_rois": "RoIs sampled per image for the box and mask losses",
    "is_mask_channels": "width of the mask head",
    "is_fpn_channels": "FPN width (RPN, box and mask heads)",
    "is_box_head_size": "width of the box head's fully connected layers",
    "is_precision": "IS training precision: auto, fp32 or bf16",
    "is_score_threshold": "IS predictions below this score are dropped",
    "is_label_score": "IS predictions at least this confident become the next round's cues",
}


def describe_fields(name: str) -> list[tuple[str, str, object, str]]:
    """(field, type, value in profile ``name``, one-line meaning) of every profile field, in order."""
    profile = get_profile(name)
    return [(f.name, _type_name(_HINTS[f.name]), getattr(profile, f.name), FIELD_HELP[f.name])
            for f in dataclasses.fields(Profile)]

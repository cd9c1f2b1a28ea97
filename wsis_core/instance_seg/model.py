"""The IS branch's model: Mask R-CNN with an FPN on ResNet-18 (``tiny``) or ResNet-50 (the paper's
backbone, "Implementation details"), ``num_classes`` = C + 1 (background).

The IS branch owns its copy of the backbone; it starts from random weights or a local torchvision ResNet
``state_dict`` (never downloaded). As in torchvision's ``maskrcnn_resnet50_fpn``, pretrained weights get frozen
batch norm and 3 trainable stages, random weights get ordinary batch norm and all 5 stages trainable.
Training from random weights is kept stable by two standard initialisations: zero-initialised last
batch norm of every residual block (Goyal et al. 2017), and the mask predictor's logits layer drawn
with std 1e-3 as in Detectron2 (torchvision's Kaiming init starts the mask loss at ~9 and made every
tried lr diverge). ``mask_head_channels`` (He et al.: 256) can thin the mask head, which dominates
the CPU cost of an iteration since its four 3x3 convolutions run on every positive RoI.
Anchors: torchvision's FPN anchors are 32..512 px on P2..P6 for an 800 px short side; they are scaled
with ``min_size`` but kept at least 16 px on P2 (4x its stride), so 160 px images get 16..256 px
anchors (objects of the synthetic data are ~15-100 px), and 800 px images torchvision's own.
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from wsis_core.backbone import BACKBONES, _load_weights
from wsis_core.checkpoint import load_checkpoint
from wsis_core.errors import WsisInputError
from wsis_core.profiles import BackboneConfig, InstanceConfig

_ASPECT_RATIOS = (0.5, 1.0, 2.0)
_FPN_LEVELS = 5  # P2..P6
_BOX_ROI_SIDE = 7  # torchvision's box RoIAlign output (7 x 7)
_MASK_HEAD_CONVS = 4  # He et al. 2017: four 3x3 convolutions before the 2x deconvolution
_TORCHVISION_MIN_SIZE = 800
_TORCHVISION_SMALLEST_ANCHOR = 32
_SMALLEST_ANCHOR_FLOOR = 16
_MASK_LOGITS_INIT_STD = 1e-3  # Detectron2's mask predictor init


def anchor_sizes(min_size: int) -> tuple[int, ...]:
    """Anchor side per FPN level P2..P6: torchvision's 32..512 scaled by ``min_size / 800``, at least 16..256."""
    smallest = max(_SMALLEST_ANCHOR_FLOOR, round(_TORCHVISION_SMALLEST_ANCHOR * min_size / _TORCHVISION_MIN_SIZE))
    return tuple(smallest * 2**level for level in range(_FPN_LEVELS))


def build_mask_rcnn(
    num_classes: int,
    backbone: str = "resnet18",
    *,
    backbone_weights: str | Path | None = None,
    backbone_weights_sha256: str | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    trainable_layers: int | None = None,
    proposals_per_image: int = 2000,
    rois_per_image: int = 512,
    mask_head_channels: int = 256,
    fpn_channels: int = 256,
    box_head_size: int = 1024,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone; ``num_classes`` counts the background (C + 1).

    ``min_size`` / ``max_size``: images are resized so that the short side is ``min_size`` unless the
    long side would exceed ``max_size`` (torchvision's defaults 800 / 1333 are the paper's Mask R-CNN).
    ``trainable_layers``: ResNet stages fine-tuned (0-5); default 3 with ``backbone_weights``, else 5.
    ``proposals_per_image``: RPN proposals kept per image in training (half of it at test time;
    torchvision: 2000). ``rois_per_image``: RoIs sampled per image for the box and mask losses
    (torchvision: 512; at most a quarter of them are positives, which also feed the mask head).
    ``mask_head_channels``: width of the mask head's four convolutions (He et al.: 256). Small images
    have few objects: lowering these three cuts most of an iteration's cost. ``fpn_channels``: width of
    the FPN outputs, which the RPN head's 3x3 convolution, the box head and the mask head read (Lin et
    al. 2017 and torchvision: 256). ``box_head_size``: width of the box head's two fully connected
    layers (torchvision: 1024).
    """
    if backbone not in BACKBONES:
        raise WsisInputError(f"unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)})")
    if num_classes < 2:
        raise WsisInputError(f"num_classes counts the background and must be at least 2, got {num_classes}")
    if trainable_layers is None:
        trainable_layers = 5 if backbone_weights is None else 3
    if not 0 <= trainable_layers <= 5:
        raise WsisInputError(f"trainable_layers must be between 0 and 5, got {trainable_layers}")
    norm_layer = nn.BatchNorm2d if backbone_weights is None else FrozenBatchNorm2d
    resnet: torchvision.models.ResNet = BACKBONES[backbone](
        weights=None, norm_layer=norm_layer, zero_init_residual=backbone_weights is None
    )
    if backbone_weights is not None:
        _load_weights(resnet, Path(backbone_weights), backbone, backbone_weights_sha256)
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in anchor_sizes(min_size)), aspect_ratios=(_ASPECT_RATIOS,) * _FPN_LEVELS
    )
    mask_predictor = MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes)
    nn.init.normal_(mask_predictor.mask_fcn_logits.weight, std=_MASK_LOGITS_INIT_STD)
    nn.init.zeros_(mask_predictor.mask_fcn_logits.bias)
    test_proposals = max(1, proposals_per_image // 2)
    return MaskRCNN(
        _fpn_backbone(resnet, trainable_layers, fpn_channels),
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=proposals_per_image,
        rpn_post_nms_top_n_train=proposals_per_image,
        rpn_pre_nms_top_n_test=test_proposals,
        rpn_post_nms_top_n_test=test_proposals,
        box_batch_size_per_image=rois_per_image,
        box_head=TwoMLPHead(fpn_channels * _BOX_ROI_SIDE**2, box_head_size),
        box_predictor=FastRCNNPredictor(box_head_size, num_classes),
        mask_head=MaskRCNNHeads(fpn_channels, (mask_head_channels,) * _MASK_HEAD_CONVS, dilation=1),
        mask_predictor=mask_predictor,
    )


def _fpn_backbone(resnet: torchvision.models.ResNet, trainable_layers: int, channels: int):
    """torchvision's ResNet-FPN (its stage freezing, P2..P6) with ``channels`` FPN outputs instead of 256."""
    backbone = _resnet_fpn_extractor(resnet, trainable_layers)
    if channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = channels
    return backbone


def mask_rcnn_for(num_classes: int, *, cfg: InstanceConfig, backbone: BackboneConfig) -> MaskRCNN:
    """The IS branch of a profile's ``instance`` and ``backbone`` sections, with C + 1 outputs
    (``num_classes`` counts the background). Checkpoints of a run are rebuilt with the same call."""
    return build_mask_rcnn(
        num_classes, backbone.name, backbone_weights=backbone.weights, backbone_weights_sha256=backbone.weights_sha256,
        min_size=cfg.min_size, max_size=cfg.max_size, proposals_per_image=cfg.proposals, rois_per_image=cfg.rois,
        mask_head_channels=cfg.mask_channels, fpn_channels=cfg.fpn_channels, box_head_size=cfg.box_head_size,
    )


# Profile fields that shape the IS branch's weights: a model is rebuilt with the values saved in its checkpoint,
# whatever the defaults are now. Section -> field -> its flat name in checkpoints written before issue 21.
ARCHITECTURE_FIELDS = {
    "backbone": {"name": "backbone"},
    "instance": {"mask_channels": "is_mask_channels", "fpn_channels": "is_fpn_channels",
                 "box_head_size": "is_box_head_size"},
}


def saved_architecture(config: dict) -> dict[str, dict]:
    """The :data:`ARCHITECTURE_FIELDS` a checkpoint's config records, section -> field -> value (nested
    profiles, or the flat ones of checkpoints written before issue 21)."""
    flat = not isinstance(config.get("instance"), dict)
    saved = {}
    for section, fields in ARCHITECTURE_FIELDS.items():
        values = config if flat else config.get(section, {})
        keys = {name: old if flat else name for name, old in fields.items()}
        saved[section] = {name: values[key] for name, key in keys.items() if key in values}
    return saved


def load_mask_rcnn(path: Path, num_classes: int, *, cfg: InstanceConfig, backbone: BackboneConfig) -> MaskRCNN:
    """A trained IS branch from its checkpoint: the architecture fields saved with it
    (:data:`ARCHITECTURE_FIELDS`), the rest from ``cfg`` and ``backbone``; the local backbone weights are not
    needed again."""
    checkpoint = load_checkpoint(path)
    saved = saved_architecture(checkpoint.config)
    backbone = type(backbone).model_validate({**backbone.without_weights().model_dump(), **saved["backbone"]})
    cfg = type(cfg).model_validate({**cfg.model_dump(), **saved["instance"]})
    model = mask_rcnn_for(num_classes, cfg=cfg, backbone=backbone)
    model.load_state_dict(checkpoint.state_dict)
    return model


def model_num_classes(model: MaskRCNN) -> int:
    """Number of classes of the model's box predictor, background included."""
    return model.roi_heads.box_predictor.cls_score.out_features

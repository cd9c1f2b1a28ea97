"""The allowed values of every enumerated setting, defined once.

Torch-free, so that the profiles, the command line and the API schemas validate configurations cheaply. Each
setting has a ``Literal`` type (for pydantic models and the OpenAPI schema) and the tuple of its values (for
argparse ``choices`` and error messages).
"""

from __future__ import annotations

from typing import Literal, get_args

# torchvision ResNet constructors (wsis_core.backbone builds them) and their output strides.
BackboneName = Literal["resnet18", "resnet50"]
OutputStride = Literal[8, 16, 32]
# Training forward passes: bf16 autocast where the device has bf16 instructions ("auto"), fp32, or bf16.
Precision = Literal["auto", "fp32", "bf16"]
# Classifier pooling: global average (CAM/PSA) or log-sum-exp (Pinheiro & Collobert 2015).
Pooling = Literal["gap", "lse"]
# CCGR (Eq. 3): the gap term, and how box sides move ("free": either way, the paper; "outward": a side only
# moves away from the box's centre, so a box only grows from its starting box).
GapMode = Literal["ring", "paper"]
MoveMode = Literal["free", "outward"]
# Pseudo instance pixels: argmax of S is the box's class, score above a threshold, or GrabCut in the box.
CropMode = Literal["argmax", "threshold", "grabcut"]
# A pseudo instance's box: the refined box it was cut from (the paper), or the extent of its mask.
PseudoBox = Literal["refined", "mask"]
# B_S of Eq. 4: the proposals' own score (selective search's rank, MCG's objectness) or superpixel straddling.
Objectness = Literal["source", "straddling"]
# Boxes of a later round: MIL's pick from the bag of proposals around each IS box (the paper), or the IS boxes.
LaterBoxes = Literal["bags", "is"]
# A run's supervision (image labels, or true masks: the upper bound) and where its boxes come from (MIL, or
# the SS masks: Table 3's "Seg only").
Supervision = Literal["weak", "full"]
BoxSource = Literal["mil", "seg"]

BACKBONE_NAMES: tuple[str, ...] = get_args(BackboneName)
OUTPUT_STRIDES: tuple[int, ...] = get_args(OutputStride)
PRECISIONS: tuple[str, ...] = get_args(Precision)
POOLINGS: tuple[str, ...] = get_args(Pooling)
GAP_MODES: tuple[str, ...] = get_args(GapMode)
MOVE_MODES: tuple[str, ...] = get_args(MoveMode)
CROP_MODES: tuple[str, ...] = get_args(CropMode)
PSEUDO_BOXES: tuple[str, ...] = get_args(PseudoBox)
SUPERVISIONS: tuple[str, ...] = get_args(Supervision)
BOX_SOURCES: tuple[str, ...] = get_args(BoxSource)

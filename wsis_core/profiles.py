"""Run profiles: every knob of every branch, one frozen, validated pydantic model per branch.

A :class:`Profile` holds the shared fields (``seed``, ``input_size``, ``infer_batch_size``, ``epoch_images``),
the shared ``backbone`` and one section per branch: ``cls`` (classifier, CAMs, PRM peaks), ``aff``
(AffinityNet, PSA seeds, random walk), ``seg`` (SS branch), ``mil`` (proposals, bags, WSDDN), ``ccgr``,
``pseudo`` (pseudo instance labels) and ``instance`` (the IS branch, Mask R-CNN). Each field carries its
bounds and a one-line meaning (``wsis profile show`` prints them); a field is named by its dotted path, e.g.
``instance.lr``, in ``--set instance.lr=0.01`` and in a run's ``overrides``. Branch functions take their
section (``train_mil(..., cfg=profile.mil)``).

``tiny`` runs end to end on a few hundred small images on a laptop CPU (ResNet-18, 128 px inputs, few
epochs; where it departs from the paper's recipe, the field says why, and ``docs/decisions.md`` has the
measurements). ``paper`` follows the paper's "Implementation details" (ResNet-50, Adam, lr 1e-4, weight decay
1e-4, SS batch size 1) and PSA (Ahn & Kwak 2018) for the CAM/AffinityNet settings (448 px inputs, output
stride 8, radius 5, beta 8, t = 2^8, background power 16); it needs a GPU.

Adding a field: declare it in its section with its bounds and ``description``; :func:`get_profile`, ``--set``,
the API's overrides and ``wsis profile show`` pick it up.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from wsis_core.choices import (
    BackboneName,
    CropMode,
    GapMode,
    LaterBoxes,
    MoveMode,
    Objectness,
    OutputStride,
    Pooling,
    Precision,
    PseudoBox,
)
from wsis_core.errors import WsisInputError

MAX_PATH_CHARS = 1000
MAX_PSP_BINS = 16  # pyramid levels of the SS branch (PSPNet: 4)
# The override naming a local backbone weights file (the API and the workers confine it to WSIS_WEIGHTS_ROOT).
WEIGHTS_FIELD = "backbone.weights"


# Bounded field types. Upper bounds are far above any useful setting, low enough that no configuration keeps a
# worker busy for days or exhausts its memory before its first progress report.
def _count(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high)]


def _positive(high: float) -> Any:
    return Annotated[float, Field(gt=0, le=high)]


def _at_most(high: float, low: float | None = 0.0) -> Any:
    return Annotated[float, Field(ge=low, le=high)]


Fraction = Annotated[float, Field(ge=0, le=1)]
LearningRate = _positive(10.0)
WeightDecay = _at_most(1.0)
Epochs = _count(0, 1000)


def _tuple_from_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # e.g. a config read back from JSON


def _meaning(text: str, default: Any = ...) -> Any:
    return Field(default, description=text)


class Section(BaseModel):
    """A frozen group of fields validated strictly: no unknown field, no bool for a number, finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class BackboneConfig(Section):
    """The shared backbone of every branch (paper: ResNet-50)."""

    name: BackboneName = _meaning("shared backbone of every branch: resnet18 or resnet50", "resnet18")
    weights: Annotated[str, Field(max_length=MAX_PATH_CHARS)] | None = _meaning(
        "local torchvision ResNet state_dict file (none: random initialisation)", None)
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = _meaning(
        "sha256 the weights file must have, 64 lowercase hex digits (none: not checked)", None)
    # 8: at 128 px stride 16 left PSA's labels below the raw CAMs, docs/decisions.md#output-stride
    output_stride: OutputStride = _meaning("backbone output stride of the cue networks: 8, 16 or 32", 8)
    freeze_bn: bool = _meaning("keep batch-norm statistics fixed (needed for batch size 1)", False)

    def without_weights(self) -> BackboneConfig:
        """The same architecture without its local weights file (a checkpoint's weights replace them)."""
        return self.model_copy(update={"weights": None, "weights_sha256": None})


class ScheduleConfig(Section):
    """What every Adam-trained branch (``cls``, ``aff``, ``seg``) has: epochs, batch size, lr, weight decay."""

    epochs: Epochs = _meaning("training epochs (of epoch_images images)")
    batch_size: _count(1, 1024) = _meaning("batch size", 16)
    lr: LearningRate = _meaning("learning rate", 3e-4)
    weight_decay: WeightDecay = _meaning("weight decay", 1e-4)


class ClassifierConfig(ScheduleConfig):
    """Multi-label classifier (image-level labels, BCE): CAMs and PRM peaks."""

    # 20: fewer left it unfit where a small part tells the class, docs/decisions.md#classifier-epochs
    epochs: Epochs = _meaning("classifier training epochs", 20)
    # 3e-4: 1e-3 did not fit from random initialisation, docs/decisions.md#classifier-lr
    lr: LearningRate = _meaning("classifier learning rate", 3e-4)
    # auto: bf16 trains the cue networks faster at the same labels, docs/decisions.md#cue-precision
    precision: Precision = _meaning("classifier training precision: auto, fp32 or bf16", "auto")
    pooling: Pooling = _meaning("classifier pooling: gap (CAM/PSA) or lse (log-sum-exp)", "gap")
    lse_r: _positive(1000.0) = _meaning("sharpness r of log-sum-exp pooling (0: average, inf: max)", 5.0)
    min_scale: _positive(8.0) = _meaning("smallest random rescale factor of classifier training batches", 1.0)
    max_scale: _at_most(8.0, low=None) = _meaning(
        "largest random rescale factor of classifier training batches", 1.0)
    peak_window: _count(1, 63) = _meaning(
        "odd side of the PRM local-maximum window, in response-map cells (PRM: 3; 5: one peak per part)", 5)
    peak_threshold: Fraction = _meaning("a peak must reach this fraction of its map's range", 0.5)
    peak_min_score: _at_most(1000.0, low=None) | None = _meaning(
        "a peak's response must exceed this (none: any response; PRM: positive)", 0.0)
    # 0.5: secondary peaks below half their class's best sit on clutter, docs/decisions.md#peak-min-ratio
    peak_min_ratio: Fraction = _meaning(
        "a peak's response must reach this fraction of its class map's maximum (0: any)", 0.5)

    @field_validator("max_scale")
    @classmethod
    def _not_below_min_scale(cls, value: float, info: ValidationInfo) -> float:
        if "min_scale" in info.data and value < info.data["min_scale"]:
            raise ValueError(f"at least min_scale ({info.data['min_scale']})")
        return value

    @field_validator("peak_window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value


class AffinityConfig(ScheduleConfig):
    """PSA seeds from the CAMs, AffinityNet (stride-8 features) and the random walk."""

    # 0 with rw_t 0: the SS labels come from the CAMs, no AffinityNet, docs/decisions.md#no-random-walk
    epochs: Epochs = _meaning("AffinityNet training epochs", 0)
    lr: LearningRate = _meaning("AffinityNet learning rate", 3e-4)
    precision: Precision = _meaning("AffinityNet training precision: auto, fp32 or bf16", "auto")
    # PSA's alpha 4 / 32 seeds fg / bg exactly where max CAM > 0.28 / < 0.08, docs/decisions.md#psa-seed-thresholds
    cam_fg_threshold: Fraction = _meaning("normalised CAM above which PSA seeds foreground", 0.28)
    cam_bg_threshold: Fraction = _meaning("normalised CAM below which PSA seeds background", 0.08)
    radius: _count(1, 64) = _meaning("pixel pairs closer than this (stride-8 cells) get an affinity", 5)
    rw_beta: _positive(1000.0) = _meaning("power the affinities are raised to before the random walk", 8.0)
    # 0 and 1: every walk lowered the labels against the CAMs themselves, docs/decisions.md#no-random-walk
    rw_t: _count(0, 4096) = _meaning(
        "random-walk steps (power of the transition matrix; 0: labels from the CAMs, no walk)", 0)
    rw_bg_power: _positive(1000.0) = _meaning(
        "power of the background score (1 - max CAM) propagated with the CAMs (PSA: 16)", 1.0)
    label_min_score: Fraction = _meaning("pixels whose top propagated score is lower get the ignore label", 0.5)

    @field_validator("cam_bg_threshold")
    @classmethod
    def _not_above_fg(cls, value: float, info: ValidationInfo) -> float:
        if "cam_fg_threshold" in info.data and value > info.data["cam_fg_threshold"]:
            raise ValueError(f"at most cam_fg_threshold ({info.data['cam_fg_threshold']})")
        return value


class SegmentationConfig(ScheduleConfig):
    """SS branch: FCN + PSP pyramid pooling."""

    epochs: Epochs = _meaning("SS branch training epochs", 3)
    lr: LearningRate = _meaning("SS branch learning rate", 3e-4)
    psp_bins: Annotated[
        tuple[_count(1, 64), ...], Field(min_length=1, max_length=MAX_PSP_BINS), BeforeValidator(_tuple_from_list)
    ] = _meaning("pyramid pooling bin sizes of the SS branch", (1, 2, 3, 6))
    image_classes: bool = _meaning("S of a train image over background and its labelled classes only", True)


class MilConfig(Section):
    """Proposals (selective search; MCG files can be given instead), bags (Eq. 4) and the MIL branch (WSDDN,
    Eq. 2) on the shared backbone, one image per step (paper)."""

    proposal_max: _count(1, 100_000) = _meaning("selective-search proposals kept per image", 2000)
    proposal_workers: _count(1, 64) = _meaning("processes computing selective search", 2)
    top_k: _count(1, 10_000) = _meaning("proposals kept per bag (Eq. 4; paper: 10)", 10)
    lam: _at_most(1000.0, low=None) = _meaning("background penalty lambda of Eq. 4 (paper: 0.1)", 0.1)
    # straddling: selective search's order says nothing of objects, docs/decisions.md#straddling-objectness
    objectness: Objectness = _meaning(
        "B_S of Eq. 4: the proposals' own score (source: selective-search rank, MCG objectness; paper) or "
        "superpixel straddling of the image (straddling)", "straddling")
    superpixel_scale: _positive(100_000.0) = _meaning(
        "scale k of the graph-based superpixels of mil.objectness straddling (larger: larger regions)", 100.0)
    # bags: the IS boxes label better but their masks do not, docs/decisions.md#later-boxes
    later_boxes: LaterBoxes = _meaning(
        "boxes of rounds after the first: MIL's pick from the top_k proposals overlapping each confident IS box "
        "(bags; paper) or the IS boxes themselves (is)", "bags")
    epochs: Epochs = _meaning("MIL (WSDDN) training epochs", 3)
    lr: LearningRate = _meaning("MIL learning rate", 1e-4)
    weight_decay: WeightDecay = _meaning("MIL weight decay", 1e-4)
    feature_stage: _count(0, 3) = _meaning("backbone stage (0-3) whose features ROIAlign pools for MIL", 2)
    hidden: _count(1, 8192) = _meaning("width of the WSDDN head's hidden layers", 256)
    nms_iou: Fraction = _meaning(
        "of two MIL boxes of one class overlapping more, the weaker goes (1: keep all, paper)", 0.5)


class CcgrConfig(Section):
    """CCGR (Eq. 3): box refinement on the SS score maps."""

    iters: _count(0, 10_000) = _meaning("CCGR gradient steps per box (Eq. 3)", 200)
    lr: _positive(1000.0) | None = _meaning("CCGR step size (none: 1 % of the map's longer side per step)", None)
    context_scale: Annotated[float, Field(gt=1, le=10.0)] = _meaning(
        "context box size relative to the box in CCGR (greater than 1)", 1.5)
    gap: GapMode = _meaning("CCGR gap term: ring or paper", "ring")
    # outward: free boxes shrink onto the part S is strongest on, docs/decisions.md#ccgr-outward
    moves: MoveMode = _meaning("CCGR box sides: free (paper) or outward (a box only grows from its MIL box)",
                               "outward")
    chunk_images: _count(1, 4096) = _meaning("images whose boxes are refined in one batched CCGR call", 64)
    # 1: 2 helps round 1 on parts (seeds 0, 1) and hurts it on easy, docs/decisions.md#ccgr-first-round
    first_round: _count(1, 1000) = _meaning(
        "first round whose boxes CCGR refines (earlier rounds crop their MIL boxes; paper: 1)", 1)


class PseudoConfig(Section):
    """Pseudo instance labels: the refined boxes cropping the SS score map."""

    # grabcut: S covers the part that tells the class, the image outlines the object, docs/decisions.md#grabcut-masks
    crop_mode: CropMode = _meaning(
        "pseudo mask pixels: argmax of S is the box's class (paper), threshold, or grabcut in the box", "grabcut")
    crop_threshold: Fraction = _meaning("score above which a pixel is in the mask (crop_mode threshold)", 0.5)
    grabcut_iters: _count(1, 100) = _meaning("GrabCut iterations per box (crop_mode grabcut)", 5)
    grabcut_min_fill: Fraction = _meaning(
        "a cut keeping less of its box falls back to the argmax crop of S (crop_mode grabcut)", 0.2)
    workers: _count(1, 64) = _meaning("threads cropping or cutting the images' pseudo masks", 2)
    min_instance_pixels: _count(0, 10**8) = _meaning("smallest pseudo mask kept, in pixels", 10)
    # mask: a grown box around a tight GrabCut mask taught the IS branch loose boxes, docs/decisions.md#pseudo-box
    box: PseudoBox = _meaning("a pseudo instance's box: the refined box it was cut from (refined; paper) or its "
                              "mask's extent (mask)", "mask")


class InstanceConfig(Section):
    """IS branch: Mask R-CNN with FPN, trained with SGD."""

    epochs: Epochs = _meaning("IS branch (Mask R-CNN) training epochs", 6)
    batch_size: _count(1, 256) = _meaning("IS branch batch size per device", 4)
    # 0.005: a margin below the rate that diverged on CPU, docs/decisions.md#is-lr
    lr: LearningRate = _meaning("IS branch learning rate", 0.005)
    weight_decay: WeightDecay = _meaning("IS branch weight decay", 1e-4)
    min_size: _count(1, 4096) = _meaning("IS branch input: shorter side in pixels", 160)
    max_size: _count(1, 4096) = _meaning("IS branch input: longest side at most, in pixels", 267)
    proposals: _count(1, 100_000) = _meaning("RPN proposals kept per image in training (half at test time)", 300)
    rois: _count(1, 100_000) = _meaning("RoIs sampled per image for the box and mask losses", 64)
    # 64: the mask head's width dominates a CPU iteration (torchvision: 256)
    mask_channels: _count(1, 4096) = _meaning("width of the mask head", 64)
    # 256: 128 is faster but loses mAP in weak rounds, docs/decisions.md#is-fpn-width
    fpn_channels: _count(1, 4096) = _meaning("FPN width (RPN, box and mask heads; torchvision: 256)", 256)
    box_head_size: _count(1, 16_384) = _meaning("width of the box head's fully connected layers", 1024)
    # auto: bf16 trains faster at the same mAP, docs/decisions.md#is-precision
    precision: Precision = _meaning("IS training precision: auto, fp32 or bf16", "auto")
    score_threshold: Fraction = _meaning("IS predictions below this score are dropped", 0.05)
    label_score: Fraction = _meaning("IS predictions at least this confident become the next round's cues", 0.5)


class Profile(Section):
    """A whole run's settings: the shared fields, the backbone and one section per branch."""

    name: str = _meaning("the profile's name (choose it with --profile / config.profile)", "tiny")
    seed: Annotated[int, Field(le=2**31 - 1)] = _meaning("random seed of every stage (set it with --seed / config.seed)", 0)
    input_size: _count(32, 2048) = _meaning("side in pixels the images are resized to for the networks", 128)
    infer_batch_size: _count(1, 1024) = _meaning("images per inference batch", 16)
    devices: _count(1, 64) = _meaning(
        "IS training devices (DDP, one process each; global batch = devices x instance.batch_size)", 1)
    # 200: tiny's epochs were set on 200 images; keeps its time per round flat, docs/decisions.md#epoch-images
    epoch_images: _count(1, 10**7) | None = _meaning(
        "images one epoch of every training loop draws (none: the whole train split)", 200)
    backbone: BackboneConfig = BackboneConfig()
    cls: ClassifierConfig = ClassifierConfig()
    aff: AffinityConfig = AffinityConfig()
    seg: SegmentationConfig = SegmentationConfig()
    mil: MilConfig = MilConfig()
    ccgr: CcgrConfig = CcgrConfig()
    pseudo: PseudoConfig = PseudoConfig()
    instance: InstanceConfig = InstanceConfig()

    def to_dict(self) -> dict:
        """Nested plain values, e.g. for a checkpoint's config; ``Profile.model_validate(d)`` rebuilds it."""
        return self.model_dump()

    def with_overrides(self, overrides: Mapping[str, Any]) -> Profile:
        """This profile with the dotted fields ``overrides`` changed (``{"instance.lr": 0.01}``), validated;
        strings (from a command line) are parsed as the field's type. One-line :class:`WsisInputError`\\ s."""
        values = self.model_dump()
        for path, value in overrides.items():
            section, name, info = _field(path)
            target = values if section is None else values[section]
            target[name] = _from_text(path, info.annotation, value) if isinstance(value, str) else value
        try:
            return Profile.model_validate(values)
        except ValidationError as exc:
            raise _one_line(exc) from None


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in Profile.model_fields.items() if isinstance(info.annotation, type)
    and issubclass(info.annotation, Section)
}


def field_paths() -> Iterator[tuple[str, Any]]:
    """(dotted path, pydantic FieldInfo) of every leaf field, in declaration order."""
    for name, info in Profile.model_fields.items():
        if name in SECTIONS:
            for sub, sub_info in SECTIONS[name].model_fields.items():
                yield f"{name}.{sub}", sub_info
        else:
            yield name, info


def _field(path: str):
    section, _, name = path.rpartition(".")
    model = SECTIONS.get(section) if section else Profile
    if model is not None and name in model.model_fields and (section or name not in SECTIONS):
        return section or None, name, model.model_fields[name]
    valid = [p for p, _ in field_paths() if p not in ("name", "seed")]
    guess = "instance_" + path[3:] if path.startswith("is_") else path  # a flat name of before issue 21
    close = difflib.get_close_matches(guess.replace("_", ".", 1), valid, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise WsisInputError(f"unknown profile field(s): {path}{hint}; valid fields: {', '.join(valid)} "
                         "(`wsis profile show` describes them)")


def _from_text(path: str, annotation: Any, text: str) -> Any:
    """``text`` as a value of the field's type (``none`` for an optional field; ``1,2,3`` for a tuple)."""
    text = text.strip()
    args = typing.get_args(annotation)
    if type(None) in args:
        if text.lower() in ("", "none"):
            return None
        annotation = next(arg for arg in args if arg is not type(None))
    if typing.get_origin(annotation) is Annotated:  # the bounds are checked with the whole profile
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return next((choice for choice in typing.get_args(annotation) if str(choice) == text), text)
    if annotation is str:
        return text
    if typing.get_origin(annotation) is tuple:
        text = [part.strip() for part in text.split(",")]
    try:
        return TypeAdapter(annotation).validate_python(text, strict=False)
    except ValidationError as exc:
        raise WsisInputError(f"profile field {path}: cannot read {_short(text)} as {_type_name(annotation)}: "
                             f"{exc.errors()[0]['msg']}") from None


def _one_line(exc: ValidationError) -> WsisInputError:
    error = exc.errors()[0]
    path = ".".join(str(part) for part in error["loc"] if isinstance(part, str))
    message = error["msg"].removeprefix("Value error, ")
    got = f" (got {_short(error['input'])})" if not isinstance(error["input"], dict) else ""
    return WsisInputError(f"profile field {path}: {message}{got}")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


def _type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``resnet18|resnet50``, ``tuple[int, ...]``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "|".join(str(arg) for arg in args)
    if origin is tuple:
        return f"tuple[{_type_name(args[0])}, ...]"
    if args:  # a union
        return " | ".join(_type_name(arg) for arg in args)
    return "None" if annotation is type(None) else annotation.__name__


def get_profile(name: str, overrides: Mapping[str, Any] | None = None, /) -> Profile:
    """Profile ``name`` with the dotted fields ``overrides`` applied (see :meth:`Profile.with_overrides`)."""
    if not isinstance(name, str) or name not in PROFILES:
        raise WsisInputError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})")
    overrides = dict(overrides or {})
    if "name" in overrides:
        raise WsisInputError("profile field name: choose the profile itself (--profile, config.profile), "
                             "not as an override")
    return PROFILES[name].with_overrides(overrides)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(),
    "paper": Profile(
        name="paper",
        input_size=448,
        infer_batch_size=8,
        epoch_images=None,
        backbone=BackboneConfig(name="resnet50", output_stride=8, freeze_bn=True),
        # The paper's recipe (PRM, PSA, WSDDN, CCGR) where tiny departs from it.
        cls=ClassifierConfig(epochs=15, batch_size=8, lr=1e-4, weight_decay=1e-4, peak_window=3,
                             peak_min_score=None, peak_min_ratio=0.0),
        aff=AffinityConfig(epochs=8, batch_size=8, lr=1e-4, weight_decay=1e-4, rw_t=256, rw_bg_power=16.0,
                           label_min_score=0.6),
        # ~80k iterations at batch size 1 on VOC's 5,717 training images.
        seg=SegmentationConfig(epochs=14, batch_size=1, lr=1e-4, weight_decay=1e-4, image_classes=False),
        # ~55k iterations at one image per step on 5,717 images.
        mil=MilConfig(epochs=10, hidden=1024, nms_iou=1.0, objectness="source"),
        ccgr=CcgrConfig(moves="free"),
        pseudo=PseudoConfig(crop_mode="argmax", box="refined"),
        instance=InstanceConfig(epochs=12, batch_size=8, lr=0.01, min_size=800, max_size=1333, proposals=2000,
                                rois=512, mask_channels=256),
    ),
}


def describe_fields(name: str) -> list[tuple[str, str, object, str]]:
    """(dotted field, type, value in profile ``name``, one-line meaning) of every profile field, in order."""
    profile = get_profile(name)
    rows = []
    for path, info in field_paths():
        value = profile
        for part in path.split("."):
            value = getattr(value, part)
        rows.append((path, _type_name(info.annotation), value, info.description))
    return rows

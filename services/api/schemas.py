"""Request and response bodies of the REST API (Pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from wsis_core.choices import BoxSource, Supervision
from wsis_core.errors import WsisInputError
from wsis_core.profiles import PROFILES, get_profile

MAX_ID = 2**31 - 1  # ids are 32-bit integers in PostgreSQL


def _integral_number(value: Any) -> Any:
    """``3.0`` is the integer 3 (as in JSON Schema); strict validation still refuses booleans and strings."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral_number)]
Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_integral_number)]  # bounds first: they reach the schema
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f]+$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_CONTROL_CHARACTERS)
]
RelativePath = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_CONTROL_CHARACTERS)]
SplitName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]


class Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is a 422 rather than silently ignored, and coerce no
    types (``"1"`` is no id, ``false`` no seed, ``"yes"`` no boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """Response bodies are read from the ORM rows."""

    model_config = ConfigDict(from_attributes=True)


UPLOAD_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class DatasetCreate(Body):
    name: Name
    path: RelativePath = Field(description="dataset folder relative to WSIS_DATA_ROOT, or s3://bucket/prefix under "
                               "WSIS_DATA_URL (tagged, VOC or COCO layout)")
    train_split: SplitName = "train"
    val_split: SplitName = Field(
        "val", description="split to evaluate on; when not given and the dataset has no split 'val', rounds run "
        "without evaluation",
    )


class SplitGroundTruth(BaseModel):
    images: int
    with_ground_truth: int = Field(description="images of the split that have instance masks")
    ground_truth: bool = Field(description="with_ground_truth > 0: metrics can be computed on this split")


class DatasetOut(Out):
    id: int
    name: str
    path: str
    train_split: str
    val_split: str | None = Field(description="null: no val split, rounds run without evaluation")
    classes: list[str]
    num_train_images: int
    num_val_images: int
    ground_truth: dict[str, SplitGroundTruth | None] | None = Field(
        description="per split ('train', 'val'): its size and how many images have ground truth (null: no such split)",
    )
    created_at: datetime


ProfileName = Literal[tuple(PROFILES)]  # an enum in the OpenAPI schema


class RunConfig(Body):
    """How a run trains (the fields of ``wsis_core.round_context.RunConfig`` a user chooses).

    ``supervision="full"`` is the fully supervised upper bound; ``ccgr`` and ``box_source`` are
    the ablation switches (CCGR refinement on/off, pseudo-label boxes from MIL or segmentation).
    """

    profile: ProfileName = "tiny"
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted profile fields to change, e.g. {\"cls.epochs\": 2, \"instance.lr\": "
        "0.01} (`wsis profile show` lists them; each is validated with its bounds)")
    supervision: Supervision = "weak"
    ccgr: bool = True
    box_source: BoxSource = "mil"
    seed: Integer = Field(0, ge=0, le=MAX_ID)

    @model_validator(mode="after")
    def _known_profile(self) -> RunConfig:
        if "seed" in self.overrides:
            raise ValueError("set the seed with config.seed, not in overrides")
        try:
            get_profile(self.profile, {**self.overrides, "seed": self.seed})
        except WsisInputError as exc:
            raise ValueError(str(exc)) from None
        return self


MAX_ROUNDS_TO_LAUNCH = 50


class RunCreate(Body):
    dataset_id: Id
    config: RunConfig = Field(default_factory=RunConfig)
    rounds_to_launch: Integer = Field(1, ge=1, le=MAX_ROUNDS_TO_LAUNCH, description=(
        "rounds the run launches by itself: launching round 1 queues round k+1 whenever round k succeeds, up to "
        "this number (later rounds are launched one at a time)"))


class RoundSummary(Out):
    id: int
    number: int
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunOut(Out):
    id: int
    dataset_id: int
    config: dict[str, Any]
    rounds_to_launch: int
    created_at: datetime
    rounds: list[RoundSummary]
    storage_bytes: int = Field(0, description="bytes the run's recorded artifacts take in the artifact store")


class JobOut(Out):
    id: int
    round_id: int
    stage: str
    queue: str
    device: str | None = Field(description="where the job's last attempt ran (cpu, cuda); null before it started")
    status: str
    progress: float
    message: str | None
    error: str | None
    attempts: int
    celery_task_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MetricOut(Out):
    split: str
    name: str
    value: float | None


class RoundOut(RoundSummary):
    run_id: int
    jobs: list[JobOut]
    metrics: list[MetricOut]


class ArtifactOut(Out):
    id: int
    stage: str
    kind: str
    path: str = Field(description="relative to WSIS_ARTIFACT_ROOT")
    size: int
    sha256: str
    created_at: datetime
    missing: bool = Field(False, description="the file or folder is gone from the store (the next launch rebuilds it)")


class ErrorOut(BaseModel):
    """Body of every 4xx/5xx answer raised by a route (``HTTPException``)."""

    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str]
    msg: str


class ValidationErrorOut(BaseModel):
    """Body of a 422: one readable line plus the structured list (see ``services.api.app._readable``)."""

    detail: str
    errors: list[ValidationErrorItem]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str


RoundMetrics = dict[str, int | str | float | None]  # {"round": k, "round_id": id, "split": s, "<metric>": value, ...}


class GalleryClass(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    category_id: int
    class_name: str = Field(alias="class")
    instances: int
    images: int = Field(description="images with at least one instance of the class")


class GalleryItem(BaseModel):
    image_id: int
    file_name: str
    width: int
    height: int
    instances: int
    classes: list[str] = Field(description="classes of the image's instances")
    min_score: float | None = Field(description="lowest instance score (null: no instance, or no scores)")
    mean_score: float | None
    change: float | None = Field(description="0: the same instances as the previous round, 1: nothing in common; "
                                             "null in round 1")
    thumbnail_url: str
    overlay_url: str
    previous_overlay_url: str | None = Field(description="the same image in the previous round (null in round 1)")


class GalleryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    round_id: int
    round: int
    previous_round_id: int | None
    total: int = Field(description="images matching the class filter")
    limit: int
    offset: int
    sort: str
    class_name: str | None = Field(alias="class")
    classes: list[GalleryClass] = Field(description="per-class instance and image counts of the round")
    items: list[GalleryItem]


class ClassQuality(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    category_id: int
    class_name: str = Field(alias="class")
    instances: int
    images: int
    mean_score: float | None
    instances_per_image: float | None = Field(description="over the images that have the class")


class Agreement(BaseModel):
    matched: int = Field(description="instances of this round matched to one of the previous round (same image and "
                                     "class, mask IoU >= iou_threshold)")
    mean_iou: float | None
    added: int
    dropped: int
    images_changed: int
    iou_threshold: float


class GroundTruthQuality(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    images: int = Field(description="train images with ground truth: the figures below are on these only")
    instances: int
    pseudo_instances: int
    precision: float | None
    recall: float | None
    matched_iou: float | None
    map_r_50: float = Field(alias="mAP_r@0.5", description="percent")
    iou_threshold: float


class QualityOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    round_id: int
    round: int
    previous_round_id: int | None
    images: int
    instances: int
    images_without_instances: int
    classes: list[ClassQuality]
    agreement: Agreement | None = Field(description="null in round 1")
    ground_truth: GroundTruthQuality | None = Field(description="null: no train image has ground truth")

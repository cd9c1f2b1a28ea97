"""Looking at a round's labels: overlays of one image, the paged gallery in review order, the quality report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.api.deps import DEFAULT_PAGE, MAX_PAGE, PathId, error_responses, read_in_thread
from services.api.round_files import (
    PSEUDO_LABELS,
    TRAIN_PREDICTIONS,
    VAL_PREDICTIONS,
    RoundPlace,
    StoredFile,
    locate_round,
    next_round_id,
    previous_labels,
    previous_round_id,
    split_images,
    stage_file,
)
from services.api.schemas import GalleryOut, QualityOut
from services.common.settings import Settings
from wsis_core import gallery, overlays, quality
from wsis_core.data.images import load_rgb
from wsis_core.file_cache import LruCache, file_stamp
from wsis_core.io import atomic_file, read_json

router = APIRouter(prefix="/rounds", tags=["review"])
THUMBNAIL_PX = 160  # the gallery's thumbnails: longer side in pixels
CACHED_LABELS, CACHED_REPORTS = 4, 16
PNG = {200: {"content": {"image/png": {}}, "description": "PNG of the image with its masks"}}
Source = Literal["pseudo", "predictions"]
Split = Literal["train", "val"]
_labels: LruCache[dict] = LruCache(CACHED_LABELS)  # parsed label / prediction files, by file stamp
_reports: LruCache[dict] = LruCache(CACHED_REPORTS)
_truths: LruCache[dict] = LruCache(CACHED_LABELS)


def _read_labels(path) -> dict:
    """A label file (COCO dict) or prediction file (results list, as ``{"annotations": [...]}``), parsed once."""

    def parse() -> dict:
        data = read_json(path)
        return data if isinstance(data, dict) else {"annotations": data}

    return _labels.get(file_stamp(path), parse)


@dataclass(frozen=True)
class _Overlay:
    place: RoundPlace
    source: StoredFile
    split: str  # the dataset split of the image


def _overlay_source(session: Session, settings: Settings, round_id: int, source: str, split: str) -> _Overlay:
    place = locate_round(session, settings, round_id)
    if source == "pseudo":
        if split != "train":
            raise HTTPException(400, "split=val: pseudo labels exist for the train split only (val has predictions)")
        return _Overlay(place, stage_file(session, settings, round_id, PSEUDO_LABELS, "pseudo labels"),
                        place.train_split)
    if split == "val":
        if place.val_split is None:
            raise HTTPException(404, f"round {round_id}: the dataset has no val split, so no val predictions")
        return _Overlay(place, stage_file(session, settings, round_id, VAL_PREDICTIONS, "val predictions"),
                        place.val_split)
    following = next_round_id(session, place)  # round k's IS model predicts the train split in round k+1's cues
    if following is None:
        raise HTTPException(409, f"train predictions of round {round_id}'s IS branch are made by the cues stage of "
                                 f"round {place.number + 1}, which has not been launched")
    return _Overlay(place, stage_file(session, settings, following, TRAIN_PREDICTIONS, "train predictions"),
                    place.train_split)


@router.get("/{round_id}/overlays/{image_id}.png", response_class=Response,
            responses={**PNG, **error_responses(400, 404, 409)})
async def overlay(
    round_id: PathId, image_id: PathId, request: Request,
    source: Annotated[Source, Query(description="pseudo: the round's pseudo labels; predictions: its IS branch's "
                                                "predictions")] = "pseudo",
    split: Annotated[Split, Query(description="predictions only: train (made in the next round's cues stage) "
                                              "or val (the round's evaluate stage)")] = "train",
    thumbnail: Annotated[int | None, Query(ge=16, le=1024, description="longer side in pixels (default: full size)")] = None,
) -> Response:
    """One image with its masks (class colour, outline, box, class name, score) as PNG, made on the first request
    and kept in the round's folder. 404 for an image the split does not have; 409 before the stage that makes
    ``source`` finished."""
    settings = request.app.state.settings
    found = await read_in_thread(request, lambda session: _overlay_source(session, settings, round_id, source, split))
    png = await run_in_threadpool(_overlay_png, found, image_id, source, thumbnail)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _overlay_png(found: _Overlay, image_id: int, source: str, thumbnail: int | None) -> bytes:
    folder = found.place.folder / "overlays" / f"{source}-{found.split}-{found.source.sha256[:16]}"
    path = folder / f"{image_id}-{thumbnail or 'full'}.png"
    if path.is_file():
        return path.read_bytes()
    info = split_images(found.place.dataset_root, found.split).get(image_id)
    if info is None:
        raise HTTPException(404, f"image {image_id} not found in split {found.split} of round {found.place.round_id}'s "
                                 "dataset")
    annotations = [ann for ann in _read_labels(found.source.path)["annotations"] if ann["image_id"] == image_id]
    image = overlays.render_overlay(load_rgb(info.path), annotations, found.place.classes)
    png = overlays.encode_png(overlays.thumbnail(image, thumbnail) if thumbnail else image)
    with atomic_file(path) as handle:
        handle.write(png)
    return png


@dataclass(frozen=True)
class _Labels:
    place: RoundPlace
    labels: StoredFile
    previous: StoredFile | None
    previous_round_id: int | None


def _round_labels(session: Session, settings: Settings, round_id: int) -> _Labels:
    place = locate_round(session, settings, round_id)
    labels = stage_file(session, settings, round_id, PSEUDO_LABELS, "pseudo labels")
    return _Labels(place, labels, previous_labels(session, settings, place), previous_round_id(session, place))


@router.get("/{round_id}/gallery", response_model=GalleryOut, responses=error_responses(400, 404, 409))
async def round_gallery(
    round_id: PathId, request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many images")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, description="images skipped")] = 0,
    class_name: Annotated[str | None, Query(alias="class", max_length=200, description="only images with an instance "
                                                                                       "of this class")] = None,
    sort: Annotated[Literal[gallery.SORTS], Query(description="review: images without instances, then lowest "
                                                              "instance score, then largest change from the "
                                                              "previous round; id: image id")] = "review",
) -> GalleryOut:
    """The round's train images with their pseudo labels, a page at a time: per image its instances, lowest and
    mean score, change from the previous round (0 same, 1 nothing in common; null in round 1) and overlay URLs;
    per class its instances and images. 409 before the pseudo_labels stage finished."""
    settings = request.app.state.settings
    found = await read_in_thread(request, lambda session: _round_labels(session, settings, round_id))
    return await run_in_threadpool(_gallery_page, found, limit, offset, class_name, sort)


def _gallery_page(found: _Labels, limit: int, offset: int, class_name: str | None, sort: str) -> GalleryOut:
    index = gallery.cached_index(found.labels.path, found.previous.path if found.previous else None)
    category_id = None
    if class_name is not None:
        by_name = {name: category for category, name in index.categories.items()}
        if class_name not in by_name:
            raise HTTPException(400, f"unknown class {class_name!r} (classes: {', '.join(by_name)})")
        category_id = by_name[class_name]
    total, items = index.page(limit, offset, category_id, sort)
    round_id, previous = found.place.round_id, found.previous_round_id if found.previous else None
    overlay_url = overlay_url_of(round_id)
    return GalleryOut(
        round_id=round_id, round=found.place.number, previous_round_id=previous, total=total, limit=limit,
        offset=offset, sort=sort, class_name=class_name,
        classes=[{"category_id": k, "class": index.categories.get(k, f"#{k}"), "instances": n, "images": m}
                 for k, (n, m) in sorted(index.class_counts.items())],
        items=[{
            "image_id": item.image_id, "file_name": item.file_name, "width": item.width, "height": item.height,
            "instances": item.instances, "classes": [index.categories.get(k, f"#{k}") for k in item.category_ids],
            "min_score": item.min_score, "mean_score": item.mean_score, "change": item.change,
            "thumbnail_url": f"{overlay_url.format(image_id=item.image_id)}?thumbnail={THUMBNAIL_PX}",
            "overlay_url": overlay_url.format(image_id=item.image_id),
            "previous_overlay_url": overlay_url_of(previous).format(image_id=item.image_id) if previous else None,
        } for item in items],
    )


def overlay_url_of(round_id: int) -> str:
    """The overlay route of a round's pseudo labels, ``{image_id}`` left to fill."""
    return f"/api/rounds/{round_id}/overlays/{{image_id}}.png"


@dataclass(frozen=True)
class _Quality:
    labels: _Labels
    truth_fingerprint: tuple


def _round_quality_inputs(session: Session, settings: Settings, round_id: int) -> _Quality:
    labels = _round_labels(session, settings, round_id)
    return _Quality(labels, quality.ground_truth_fingerprint(labels.place.dataset_root))


@router.get("/{round_id}/quality", response_model=QualityOut, responses=error_responses(404, 409))
async def round_quality(round_id: PathId, request: Request) -> QualityOut:
    """Quality of the round's pseudo labels: per class instances, images, mean score, instances per image;
    agreement with the previous round (matched at mask IoU 0.5: mean IoU, instances added and dropped); and
    where train images have ground truth, precision / recall at mask IoU 0.5, mean IoU of the matched and
    mAP_r@0.5 on those images (null without ground truth). 409 before the pseudo_labels stage finished."""
    settings = request.app.state.settings
    found = await read_in_thread(request, lambda session: _round_quality_inputs(session, settings, round_id))
    report = await run_in_threadpool(_quality_report, found)
    return QualityOut(round_id=round_id, round=found.labels.place.number,
                      previous_round_id=found.labels.previous_round_id if found.labels.previous else None, **report)


def _quality_report(found: _Quality) -> dict:
    labels, place = found.labels, found.labels.place
    previous = labels.previous.path if labels.previous else None
    key = (file_stamp(labels.labels.path), file_stamp(previous), found.truth_fingerprint, place.train_split)

    def compute() -> dict:
        truth = _truths.get((str(place.dataset_root), place.train_split, found.truth_fingerprint),
                            lambda: quality.split_ground_truth(place.dataset_root, place.train_split))
        return quality.quality_report(_read_labels(labels.labels.path),
                                      _read_labels(previous) if previous else None,
                                      truth if truth["annotations"] else None)

    return _reports.get(key, compute)

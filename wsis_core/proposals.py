"""Box proposals for the MIL branch: selective search computed here, or precomputed MCG files.

The paper (section "Iterative optimization and its initialization") ranks MCG proposals
(Pont-Tuset et al. 2017) by their objectness score B_S in Eq. 4. Every proposal source here has one
interface, ``proposals_for(image_id) -> (boxes, objectness)``:

* ``boxes``: float32 [N, 4] numpy array (x1, y1, x2, y2), 0-based continuous pixel coordinates:
  pixel (i, j) covers [j, j+1) x [i, i+1), so a box lies in [0, W] x [0, H] and its area is
  (x2 - x1) * (y2 - y1) pixels (the convention of :mod:`wsis_core.ccgr`).
* ``objectness``: float32 [N] numpy array, higher is better; the B_S of Eq. 4.

Sources:

* :class:`ProposalStore` - the on-disk cache that :func:`compute_proposals` fills with selective
  search (OpenCV contrib, fast mode; Uijlings et al. 2013), one ``<image_id>.npz`` per image with
  arrays ``boxes`` and ``objectness``. Selective search has no objectness score, so the score is
  rank based: the OpenCV output order (its pseudo-random hierarchical ranking) is kept and the
  proposal at rank r (0-based) of n kept proposals scores 1 - r / n, i.e. 1.0 for the first down
  to 1 / n for the last (see :func:`rank_objectness`). With lambda = 0.1 in Eq. 4 the background
  term then trades off against at most 10 % of the rank range.
* :class:`PrecomputedProposals` - per-image files named after the image's file stem
  (``2007_000032.mat`` for ``2007_000032.jpg``), in one of three formats:

  - ``.mat``, the official MCG release (read with scipy.io): ``boxes`` (or ``bboxes``) [N, 4] as
    MATLAB [y1, x1, y2, x2], 1-based and inclusive, and ``scores`` [N] or [N, 1]. A box covering
    MATLAB rows y1..y2 and columns x1..x2 becomes (x1 - 1, y1 - 1, x2, y2) here. MATLAB v7.3
    (HDF5) files are not readable by scipy; re-save them with ``-v7`` or convert them to ``.npz``.
  - ``.npz``: ``boxes`` [N, 4] float (x1, y1, x2, y2) in this module's 0-based convention and
    ``scores`` [N] (``objectness`` is accepted too, so cache files are valid input).
  - ``.json``: ``{"boxes": [[x1, y1, x2, y2], ...], "scores": [...]}``, same convention as ``.npz``.

  MCG scores are used as B_S as they are.
* :class:`StraddlingProposals` - any source above with its score replaced by the superpixel straddling of the
  image (:func:`straddling_objectness`, profile field ``mil.objectness``): a class-agnostic objectness from the
  image itself, where the source's own score says little (selective search's order).
"""

from __future__ import annotations

import multiprocessing
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from wsis_core.errors import WsisInputError
from wsis_core.io import atomic_file, read_json
from wsis_core.progress import Progress

PRECOMPUTED_SUFFIXES = (".mat", ".npz", ".json")


@dataclass(frozen=True)
class SelectiveSearchOptions:
    """max_proposals: keep at most this many boxes per image (in OpenCV's rank order);
    min_size: drop boxes narrower or lower than this many pixels."""

    max_proposals: int = 2000
    min_size: int = 8


SUPERPIXEL_SIGMA = 0.8  # Gaussian smoothing before the graph segmentation (Felzenszwalb & Huttenlocher's)
SUPERPIXEL_MIN_PIXELS = 20  # smaller regions are merged into a neighbour
STRADDLING_CHUNK = 32  # regions per batch of summed-area tables in straddling_objectness


def rank_objectness(count: int) -> np.ndarray:
    """Rank-based objectness for proposals without a score: 1 - r / count for rank r = 0..count-1."""
    return (1.0 - np.arange(count, dtype=np.float32) / max(count, 1)).astype(np.float32)


def selective_search(image: np.ndarray, options: SelectiveSearchOptions = SelectiveSearchOptions()):
    """Selective search (OpenCV contrib, fast mode) on a uint8 [H, W, 3] RGB image.

    Returns (boxes float32 [N, 4] xyxy, objectness float32 [N]) with N <= ``options.max_proposals``:
    boxes smaller than ``options.min_size`` on a side and duplicates are dropped, the OpenCV order is
    kept, and objectness is :func:`rank_objectness`.
    """
    segmentation = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    segmentation.setBaseImage(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    segmentation.switchToSelectiveSearchFast()
    rects = np.asarray(segmentation.process(), dtype=np.int64).reshape(-1, 4)  # x, y, w, h
    rects = rects[(rects[:, 2] >= options.min_size) & (rects[:, 3] >= options.min_size)]
    _, first = np.unique(rects, axis=0, return_index=True)
    rects = rects[np.sort(first)][: options.max_proposals]
    boxes = np.concatenate((rects[:, :2], rects[:, :2] + rects[:, 2:]), axis=1).astype(np.float32)
    return boxes, rank_objectness(len(boxes))


def superpixels(image: np.ndarray, scale: float) -> np.ndarray:
    """Felzenszwalb & Huttenlocher graph-based segmentation (OpenCV; sigma 0.8, regions of at least 20 px) of a
    uint8 [H, W, 3] RGB image at ``scale`` (their k: larger gives larger regions): int32 [H, W] region ids 0..n-1."""
    segmentation = cv2.ximgproc.segmentation.createGraphSegmentation(
        sigma=SUPERPIXEL_SIGMA, k=float(scale), min_size=SUPERPIXEL_MIN_PIXELS)
    return segmentation.processImage(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)).astype(np.int32)


def straddling_objectness(image: np.ndarray, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Superpixel straddling (Alexe, Deselaers & Ferrari, "Measuring the objectness of image windows", TPAMI
    2012, Eq. 5), an objectness B_S for proposals that have none (Eq. 4):

        SS(B) = 1 - sum_s min(|s \\ B|, |s & B|) / |B|

    over the :func:`superpixels` s of the image. A box that hugs an object leaves the object's regions and the
    background's whole (SS near 1); a box on a part of an object, or spilling into a neighbour, cuts regions
    in two (lower). ``boxes`` [N, 4] xyxy in pixels (rounded to whole pixels; a box left without a whole pixel
    scores 0); returns float32 [N] in [0, 1].
    Per-region summed-area tables give every box's overlap with every region, ``STRADDLING_CHUNK`` regions at a
    time (memory: chunk x image pixels).
    """
    labels = superpixels(image, scale)
    height, width = labels.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, x2 = (np.clip(np.rint(boxes[:, i]), 0, width).astype(np.int64) for i in (0, 2))
    y1, y2 = (np.clip(np.rint(boxes[:, i]), 0, height).astype(np.int64) for i in (1, 3))
    area = (x2 - x1) * (y2 - y1)
    sizes = np.bincount(labels.ravel())
    straddled = np.zeros(len(boxes))
    for start in range(0, len(sizes), STRADDLING_CHUNK):
        ids = np.arange(start, min(start + STRADDLING_CHUNK, len(sizes)))
        table = np.zeros((len(ids), height + 1, width + 1), np.int32)
        table[:, 1:, 1:] = (labels[None] == ids[:, None, None]).cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
        inside = table[:, y2, x2] - table[:, y1, x2] - table[:, y2, x1] + table[:, y1, x1]  # [regions, N]
        straddled += np.minimum(inside, sizes[ids, None] - inside).sum(0)
    return np.where(area > 0, 1.0 - straddled / np.maximum(area, 1), 0.0).astype(np.float32)


class StraddlingProposals:
    """A proposal source whose objectness is :func:`straddling_objectness` of the image instead of the wrapped
    source's own score (the same boxes); ``image_of(image_id)`` gives the uint8 RGB pixels."""

    def __init__(self, source, image_of, scale: float):
        self.source, self.image_of, self.scale = source, image_of, scale

    def proposals_for(self, image_id: int):
        boxes, _ = self.source.proposals_for(image_id)
        return boxes, straddling_objectness(self.image_of(image_id), boxes, self.scale)


def _checked(boxes, scores, source: Path):
    """Validate and convert one proposal file's arrays to (float32 [N, 4], float32 [N])."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(scores):
        raise WsisInputError(
            f"{source}: expected boxes [N, 4] and scores [N], got {list(boxes.shape)} and {len(scores)} scores"
        )
    return boxes, scores


class ProposalStore:
    """Cache of computed proposals: ``<folder>/<image_id>.npz`` with ``boxes`` and ``objectness``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path_for(self, image_id: int) -> Path:
        return self.folder / f"{image_id}.npz"

    def has(self, image_id: int) -> bool:
        return self.path_for(image_id).is_file()

    def save(self, image_id: int, boxes: np.ndarray, objectness: np.ndarray) -> None:
        """Write one image's proposals atomically (temp file + rename), so readers never see half a file."""
        with atomic_file(self.path_for(image_id)) as handle:
            np.savez(handle, boxes=boxes.astype(np.float32), objectness=objectness.astype(np.float32))

    def proposals_for(self, image_id: int):
        path = self.path_for(image_id)
        if not path.is_file():
            raise WsisInputError(f"{path}: no cached proposals for image {image_id} (run compute_proposals)")
        with np.load(path) as data:
            return _checked(data["boxes"], data["objectness"], path)


def load_mcg_mat(path: str | Path):
    """Official MCG ``.mat``: 1-based [y1, x1, y2, x2] ``boxes``/``bboxes`` + ``scores`` -> 0-based xyxy."""
    path = Path(path)
    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:
        raise WsisInputError(f"{path}: MATLAB v7.3 file; re-save it with -v7 or convert it to .npz") from None
    except (scipy.io.matlab.MatReadError, ValueError, OSError) as exc:
        raise WsisInputError(f"{path}: not a readable MATLAB file ({exc})") from None
    key = "boxes" if "boxes" in data else "bboxes"
    if key not in data or "scores" not in data:
        raise WsisInputError(f"{path}: expected variables 'boxes' (or 'bboxes') and 'scores'")
    boxes, scores = _checked(data[key], data["scores"], path)
    y1, x1, y2, x2 = boxes.T
    return np.stack((x1 - 1, y1 - 1, x2, y2), axis=1), scores


def load_npz(path: str | Path):
    """``.npz`` with ``boxes`` [N, 4] (0-based xyxy) and ``scores`` (or ``objectness``) [N]."""
    path = Path(path)
    try:
        with np.load(path) as data:
            key = "scores" if "scores" in data else "objectness"
            if "boxes" not in data or key not in data:
                raise WsisInputError(f"{path}: expected arrays 'boxes' and 'scores'")
            return _checked(data["boxes"], data[key], path)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise WsisInputError(f"{path}: not a readable .npz file ({exc})") from None


def load_json(path: str | Path):
    """``.json`` object with ``boxes`` [[x1, y1, x2, y2], ...] (0-based) and ``scores`` [...]."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "boxes" not in data or "scores" not in data:
        raise WsisInputError(f"{path}: expected a JSON object with 'boxes' and 'scores'")
    return _checked(data["boxes"], data["scores"], path)


LOADERS = {".mat": load_mcg_mat, ".npz": load_npz, ".json": load_json}


class PrecomputedProposals:
    """Per-image proposal files (MCG ``.mat``, ``.npz`` or ``.json``) named ``<file stem><suffix>``.

    ``stems`` maps image id -> file stem; :meth:`for_dataset` builds it from a dataset's images.
    When several formats exist for one image, ``.mat`` wins over ``.npz`` over ``.json``.
    """

    def __init__(self, folder: str | Path, stems: Mapping[int, str]):
        self.folder = Path(folder)
        self.stems = dict(stems)

    @classmethod
    def for_dataset(cls, folder: str | Path, dataset) -> PrecomputedProposals:
        return cls(folder, {info.id: Path(info.file_name).stem for info in dataset.images})

    def proposals_for(self, image_id: int):
        stem = self.stems[image_id]
        for suffix in PRECOMPUTED_SUFFIXES:
            path = self.folder / f"{stem}{suffix}"
            if path.is_file():
                return LOADERS[suffix](path)
        raise WsisInputError(f"{self.folder}: no proposal file {stem}.mat/.npz/.json for image {image_id}")


def _compute_and_save(dataset, store: ProposalStore, options: SelectiveSearchOptions, index: int) -> int:
    image_id = dataset.images[index].id
    store.save(image_id, *selective_search(dataset.load_image(index), options))
    return image_id


_WORKER_STATE: tuple = ()  # (dataset, store, options) of a pool worker process, set by _init_worker


def _init_worker(dataset, store: ProposalStore, options: SelectiveSearchOptions) -> None:
    global _WORKER_STATE
    cv2.setNumThreads(1)
    _WORKER_STATE = (dataset, store, options)


def _worker(index: int) -> int:
    return _compute_and_save(*_WORKER_STATE, index)


def compute_proposals(
    dataset,
    folder: str | Path,
    *,
    workers: int = 2,
    options: SelectiveSearchOptions = SelectiveSearchOptions(),
    on_progress: Progress = None,
    progress_bar: bool | None = None,
) -> ProposalStore:
    """Stage: selective search for every image of ``dataset`` into ``ProposalStore(folder)``.

    Images already cached are skipped, so an interrupted run resumes. ``workers`` > 1 uses a
    ``spawn`` process pool (the dataset is pickled once per worker); each worker runs OpenCV with one
    thread. ``on_progress(done, total)`` counts cached images as done. ``progress_bar``: None shows a
    tqdm bar only on a terminal, True/False forces it on/off.
    """
    store = ProposalStore(folder)
    store.folder.mkdir(parents=True, exist_ok=True)
    total = len(dataset.images)
    todo = [i for i, info in enumerate(dataset.images) if not store.has(info.id)]
    done = total - len(todo)
    bar = tqdm(total=total, initial=done, desc="selective search", unit="img",
               disable=None if progress_bar is None else not progress_bar)

    def advance() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        if on_progress:
            on_progress(done, total)

    if on_progress:
        on_progress(done, total)
    with bar:
        if workers <= 1 or len(todo) <= 1:
            for index in todo:
                _compute_and_save(dataset, store, options, index)
                advance()
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(todo)), _init_worker, (dataset, store, options)) as pool:
                for _ in pool.imap_unordered(_worker, todo):
                    advance()
    return store

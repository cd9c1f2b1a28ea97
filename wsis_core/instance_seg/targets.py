"""The IS branch's training data: the weak dataset + COCO pseudo labels as torchvision detection targets,
and their shuffled loader.

Images without any pseudo instance are **skipped**, not kept as negatives: every training image has
at least one class (its image-level labels), so an image without pseudo label is one where the cue
stages found nothing, and training it as background would teach the model to miss its objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from wsis_core import masks
from wsis_core.errors import WsisInputError

Target = dict[str, torch.Tensor]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB → float [3, H, W] in 0..1 (Mask R-CNN normalises and resizes itself)."""
    return torch.tensor(image, dtype=torch.float32).permute(2, 0, 1).div_(255)


def group_by_image(annotations: Iterable[dict]) -> dict[int, list[dict]]:
    """COCO annotations grouped by ``image_id``."""
    grouped: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations:
        grouped[int(ann["image_id"])].append(ann)
    return dict(grouped)


class InstanceTargets(Dataset):
    """Images of a weak dataset with their COCO (pseudo) instances as torchvision detection targets.

    Item ``k``: (float [3, H, W] image in 0..1, {``boxes`` float [N, 4] x1y1x2y2 from the annotation
    ``bbox``, ``labels`` int64 [N] (``category_id``), ``masks`` uint8 [N, H, W] from the RLE}).
    Only images with at least one instance are items (see the module docstring); annotations whose box
    has no width or height are dropped (torchvision rejects them). With ``flip``, each item is mirrored
    horizontally with probability 1/2, drawn from torch's RNG (in a DataLoader worker, the worker's).
    """

    def __init__(self, dataset, annotations_by_image: Mapping[int, Sequence[dict]], *, flip: bool = False):
        positions = {info.id: index for index, info in enumerate(dataset.images)}
        unknown = sorted(set(annotations_by_image) - set(positions))
        if unknown:
            raise WsisInputError(f"annotations refer to image ids not in the dataset: {unknown[:5]}")
        self.dataset = dataset
        self.flip = flip
        self.items: list[tuple[int, list[dict]]] = []
        for image_id in sorted(annotations_by_image, key=positions.__getitem__):
            info = dataset.images[positions[image_id]]
            kept = [ann for ann in annotations_by_image[image_id] if ann["bbox"][2] > 0 and ann["bbox"][3] > 0]
            for ann in kept:
                if list(ann["segmentation"]["size"]) != [info.height, info.width]:
                    raise WsisInputError(
                        f"image {image_id}: mask size {ann['segmentation']['size']} is not the image's "
                        f"{[info.height, info.width]}"
                    )
            if kept:
                self.items.append((positions[image_id], kept))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, Target]:
        index, anns = self.items[k]
        image = image_tensor(self.dataset.load_image(index))
        instance_masks = torch.from_numpy(np.stack([masks.decode(ann["segmentation"]) for ann in anns])).to(torch.uint8)
        xywh = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32)
        boxes = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1)
        labels = torch.tensor([ann["category_id"] for ann in anns], dtype=torch.int64)
        if self.flip and torch.rand(()) < 0.5:
            width = image.shape[-1]
            image, instance_masks = image.flip(-1), instance_masks.flip(-1)
            boxes = torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1)
        return image, {"boxes": boxes, "labels": labels, "masks": instance_masks}


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists of images and targets (images of different sizes cannot be stacked)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def instance_loader(
    targets: InstanceTargets,
    batch_size: int,
    *,
    seed: int,
    epoch_images: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled training batches of ``targets``, at most ``epoch_images`` images (a fresh random subset) per
    pass over the loader (None: all); the order (and the workers' RNG) follow ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    subset = epoch_images is not None and epoch_images < len(targets)
    # shuffle=True when the epoch is every image: RandomSampler with num_samples set draws one extra permutation.
    sampler = RandomSampler(targets, num_samples=epoch_images, generator=generator) if subset else None
    return DataLoader(
        targets,
        batch_size=batch_size,
        shuffle=not subset,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=generator,
    )


def to_device(
    images: Sequence[torch.Tensor], targets: Sequence[Target], device: torch.device
) -> tuple[list[torch.Tensor], list[Target]]:
    return (
        [image.to(device, non_blocking=True) for image in images],
        [{key: value.to(device, non_blocking=True) for key, value in target.items()} for target in targets],
    )

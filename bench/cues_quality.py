"""Quality of the round-1 cues (classifier, PRM peaks, PSA labels, SS branch) on the synthetic data.

For one seeded run of each profile variant it measures, with the project's own training code (images
and image-level labels only; ground truth is read for evaluation alone, via ``open_ground_truth``):

* classification mAP on the val split (AP per class, numpy; no sklearn), and on the train split (eval mode:
  a train mAP far above the val mAP means memorising, not learning the classes' parts);
* PRM peaks: the fraction landing inside a ground-truth instance of their class ("peak precision"),
  and the fraction of ground-truth instances holding a peak of their class ("instance recall");
* mIoU (background + classes, VOID ground-truth pixels ignored) against SegmentationClass of the train
  split of (a) the thresholded CAMs: argmax over ``[(1 - max CAM)^rw_bg_power, CAMs]``, i.e. exactly the
  scores PSA's random walk starts from, before the walk; (a') the confident PSA seeds (precision and
  coverage); (b) the PSA propagated labels (argmax of the score map O; plus the accuracy and coverage of
  the confident labels, ``label_min_score``); (c) the SS branch trained on them (train and val);
* wall time of every stage.

It prints a markdown table and writes it to ``bench/results/cues_quality.md`` (``--out``).

    PYTHONPATH=. python bench/cues_quality.py --generate /tmp/synth --train 600 --val 200 --size 160 --seed 0
    PYTHONPATH=. python bench/cues_quality.py --data /tmp/synth --variant before:input_size=128,backbone.output_stride=16 \
        --variant after: --device cuda

``--variant NAME:FIELD=VALUE,...`` (repeatable) runs the profile (``--profile``, plus ``--set`` overrides)
with those fields changed; ``NAME:`` alone runs it unchanged. ``--bg-powers`` and ``--rw-steps`` additionally
evaluate (a) and (b) with other background powers and random-walk step counts on the same trained
networks (neither is used in training).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthetic_data import add_dataset_arguments, prepare_dataset
from wsis_core.affinity import dense_affinity, pair_distances, radius_pairs, train_affinity
from wsis_core.backbone import iterate_images, present_classes
from wsis_core.classifier import build_classifier, compute_cams, train_classifier
from wsis_core.data.dataset import open_ground_truth, open_weak_dataset
from wsis_core.data.types import VOID
from wsis_core.device import resolve_device
from wsis_core.peaks import find_peaks
from wsis_core.profiles import get_profile
from wsis_core.segmentation import build_segmentation_model, predict_score_maps, train_segmentation

RESULTS = Path(__file__).resolve().parent / "results" / "cues_quality.md"


class CachedDataset:
    """A weak dataset whose decoded images stay in memory (decoding is not what is measured)."""

    def __init__(self, dataset):
        self.root, self.split, self.classes, self.images = dataset.root, dataset.split, dataset.classes, dataset.images
        self._pixels = [dataset.load_image(i) for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        return self._pixels[index]


def semantic_ground_truth(root: Path, split: str) -> tuple[list[np.ndarray], list[list[tuple[int, np.ndarray]]]]:
    """Per image: the semantic map (0 background, c class, VOID) and the (class, mask) instances."""
    gt = open_ground_truth(root, split)
    maps, instances = [], []
    for i in range(len(gt)):
        image = gt.get(i)
        semantic = np.zeros(image.void.shape, np.uint8)
        for inst in image.instances:
            semantic[inst.mask] = inst.category_id
        semantic[image.void] = VOID
        maps.append(semantic)
        instances.append([(inst.category_id, inst.mask) for inst in image.instances])
    return maps, instances


# ------------------------------------------------------------------------------------------ metrics
def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP (mean precision at each positive, ranked by score)."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


class Confusion:
    """Confusion matrix over background + classes; VOID ground truth ignored; VOID predictions counted
    as background (a pixel left unlabelled is not an object)."""

    def __init__(self, num_classes: int):
        self.k = num_classes + 1
        self.matrix = np.zeros((self.k, self.k), np.int64)

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        keep = truth != VOID
        pred = np.where(prediction[keep] == VOID, 0, prediction[keep]).astype(np.int64)
        self.matrix += np.bincount(truth[keep].astype(np.int64) * self.k + pred, minlength=self.k**2).reshape(self.k, -1)

    def miou(self) -> float:
        inter = np.diag(self.matrix)
        union = self.matrix.sum(0) + self.matrix.sum(1) - inter
        valid = self.matrix.sum(1) > 0
        return float(np.mean(inter[valid] / np.maximum(union[valid], 1)))


def confident_accuracy(predictions: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, float]:
    """(accuracy on labelled pixels, fraction of pixels labelled), VOID ground truth ignored."""
    right = labelled = total = 0
    for pred, truth in zip(predictions, truths):
        keep = truth != VOID
        lab = keep & (pred != VOID)
        right += int((pred[lab] == truth[lab]).sum())
        labelled += int(lab.sum())
        total += int(keep.sum())
    return right / max(labelled, 1), labelled / max(total, 1)


def miou(predictions, truths, num_classes: int) -> float:
    conf = Confusion(num_classes)
    for pred, truth in zip(predictions, truths):
        conf.add(pred, truth)
    return conf.miou()


# ------------------------------------------------------------------------------------------- stages
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    def __init__(self, device):
        self.device, self.times = device, {}

    def __call__(self, name):
        timer = self

        class _Span:
            def __enter__(self):
                sync(timer.device)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                sync(timer.device)
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.start

        return _Span()


@torch.no_grad()
def classification_map(classifier, dataset, profile, device) -> float:
    classifier = classifier.to(device).eval()
    scores, labels = [], []
    for positions, images, _ in iterate_images(dataset, range(len(dataset)), profile.input_size,
                                               profile.infer_batch_size, device):
        scores.append(classifier(images).float().cpu().numpy())
        labels.append(present_classes(dataset, positions).numpy())
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    return float(np.nanmean([average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]))


def peak_counts(peaks: list[list[dict]], instances) -> dict[str, float]:
    """Peaks against the instances of each image: ``precision`` (peaks inside an instance of their class),
    ``recall`` (instances holding >= 1 peak of their class), ``multi`` (instances holding 2+), ``per_image``
    (peaks per image) and ``non_positive`` (fraction of peaks scoring <= 0)."""
    inside = total = found = multi = count = non_positive = 0
    for image_peaks, image_instances in zip(peaks, instances):
        hits = [0] * len(image_instances)
        for p in image_peaks:
            total += 1
            non_positive += p["score"] <= 0
            ok = False
            for j, (cls, mask) in enumerate(image_instances):
                if cls == p["class"] and mask[p["y"], p["x"]]:
                    ok = True
                    hits[j] += 1
            inside += ok
        found += sum(h >= 1 for h in hits)
        multi += sum(h >= 2 for h in hits)
        count += len(image_instances)
    return {"precision": inside / max(total, 1), "recall": found / max(count, 1), "multi": multi / max(count, 1),
            "per_image": total / max(len(peaks), 1), "non_positive": non_positive / max(total, 1)}


def peak_quality(peaks: list[list[dict]], instances) -> tuple[float, float, float]:
    """(peak precision, instance recall, peaks per image), see :func:`peak_counts`."""
    counts = peak_counts(peaks, instances)
    return counts["precision"], counts["recall"], counts["per_image"]


def _argmax_labels(maps: torch.Tensor, classes: tuple[int, ...], size) -> np.ndarray:
    scores = F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return np.asarray(classes, np.uint8)[scores.argmax(0).cpu().numpy()]


@torch.no_grad()
def cam_and_psa_labels(classifier, affinity_net, dataset, profile, device, settings, timer):
    """Thresholded-CAM labels and PSA propagated labels (argmax and confident) per (background power,
    random-walk steps) setting, plus the seeds: dicts setting -> list of uint8 maps at image resolution.
    The first setting is the profile's own."""
    classifier, affinity_net = classifier.to(device).eval(), affinity_net.to(device).eval()
    cam_lab = {p: [] for p in settings}
    psa_lab = {p: [] for p in settings}
    psa_conf = {p: [] for p in settings}
    seeds_out = []
    for positions, images, sizes in iterate_images(dataset, range(len(dataset)), profile.input_size,
                                                   profile.infer_batch_size, device):
        with timer("psa_propagate"):
            features = affinity_net(images)
            h, w = features.shape[-2:]
            cams = compute_cams(classifier, images, present_classes(dataset, positions), (h, w))
            pairs = radius_pairs(h, w, profile.aff.radius, device)
            affinity = dense_affinity(pair_distances(features, pairs), pairs, h * w)
            powered = affinity.pow(profile.aff.rw_beta)
            step = powered / powered.sum(dim=-2, keepdim=True)
            transitions = {t: torch.linalg.matrix_power(step, t) for t in {t for _, t in settings}}
        best, arg = cams.max(dim=1)
        seeds = torch.full_like(arg, VOID)
        seeds[best >= profile.aff.cam_fg_threshold] = arg[best >= profile.aff.cam_fg_threshold] + 1
        seeds[best < profile.aff.cam_bg_threshold] = 0
        for b, size in enumerate(sizes):
            seeds_out.append(F.interpolate(seeds[b][None, None].float(), size=tuple(size), mode="nearest")[0, 0]
                             .to(torch.uint8).cpu().numpy())
        for power, steps in settings:
            start = torch.cat([(1 - cams.amax(dim=1, keepdim=True)).pow(power), cams], dim=1)
            walked = (start.flatten(2) @ transitions[steps]).view_as(start)
            for b, (position, size) in enumerate(zip(positions, sizes)):
                classes = (0, *sorted(dataset.images[position].labels))
                cam_lab[power, steps].append(_argmax_labels(start[b][list(classes)], classes, size))
                maps = walked[b][list(classes)]
                scores = F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
                scores = scores / scores.sum(0, keepdim=True).clamp_min(1e-12)
                top, am = scores.max(0)
                lab = np.asarray(classes, np.uint8)[am.cpu().numpy()]
                psa_lab[power, steps].append(lab)
                conf = lab.copy()
                conf[(top < profile.aff.label_min_score).cpu().numpy()] = VOID
                psa_conf[power, steps].append(conf)
    return cam_lab, psa_lab, psa_conf, seeds_out


def run_variant(name, profile, train, val, train_gt, val_gt, device, bg_powers, rw_steps):
    torch.manual_seed(profile.seed)
    timer = Timer(device)
    num_classes = len(train.classes)
    row = {"variant": name}
    run = {"seed": profile.seed, "epoch_images": profile.epoch_images}
    inference = {"input_size": profile.input_size, "batch_size": profile.infer_batch_size}
    with timer("classifier_train"):
        classifier = build_classifier(num_classes, cfg=profile.cls, backbone=profile.backbone)
        classifier = train_classifier(train, classifier, device, cfg=profile.cls, input_size=profile.input_size, **run)
    with timer("classifier_eval"):
        row["val_mAP"] = classification_map(classifier, val, profile, device)
        row["train_mAP"] = classification_map(classifier, train, profile, device)
    with timer("peaks"):
        peaks = find_peaks(classifier, train, device, cfg=profile.cls, **inference)
    row["peak_prec"], row["inst_recall"], row["peaks_per_img"] = peak_quality(peaks, train_gt[1])
    with timer("affinity_train"):
        affinity_net = train_affinity(classifier, train, device, cfg=profile.aff, **inference, **run)
    own = (profile.aff.rw_bg_power, profile.aff.rw_t)
    settings = [own] + [(p, t) for p in [profile.aff.rw_bg_power, *bg_powers]
                        for t in [profile.aff.rw_t, *rw_steps] if (p, t) != own]
    settings = list(dict.fromkeys(settings))
    cam_lab, psa_lab, psa_conf, seeds = cam_and_psa_labels(classifier, affinity_net, train, profile, device,
                                                            settings, timer)
    truths = train_gt[0]
    row["seed_acc"], row["seed_cover"] = confident_accuracy(seeds, truths)
    row["by_power"] = {
        p: (miou(cam_lab[p], truths, num_classes), miou(psa_lab[p], truths, num_classes),
            *confident_accuracy(psa_conf[p], truths))
        for p in settings
    }
    labels = psa_conf[own]
    with timer("ss_train"):
        seg = build_segmentation_model(num_classes, copy.deepcopy(classifier.backbone), cfg=profile.seg)
        seg = train_segmentation(train, labels, seg, device, cfg=profile.seg, input_size=profile.input_size, **run)
    with timer("ss_predict"):
        train_pred, val_pred = (
            [s.argmax(0).astype(np.uint8) for s in predict_score_maps(seg, ds, device, cfg=profile.seg, **inference)]
            for ds in (train, val)
        )
    row["ss_train_miou"] = miou(train_pred, truths, num_classes)
    row["ss_val_miou"] = miou(val_pred, val_gt[0], num_classes)
    row["all_bg_miou"] = miou([np.zeros_like(t) for t in truths], truths, num_classes)
    row["times"] = timer.times
    return row


# ------------------------------------------------------------------------------------------ report
def table(rows, header_note: str) -> str:
    lines = [header_note, "",
             "| variant | val / train mAP | peak prec | inst recall | peaks/img | seed acc / cover | bg power / rw t "
             "| (a) CAM mIoU | (b) PSA mIoU | PSA conf acc / cover | (c) SS mIoU train / val | all-bg mIoU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for i, (power, (cam, psa, acc, cover)) in enumerate(r["by_power"].items()):
            if i == 0:
                lead = (f"| {r['variant']} | {r['val_mAP']:.3f} / {r['train_mAP']:.3f} | {r['peak_prec']:.3f} | {r['inst_recall']:.3f} | "
                        f"{r['peaks_per_img']:.1f} | {r['seed_acc']:.2f} / {r['seed_cover']:.2f} | {power[0]:g} / {power[1]} |")
                tail = f" {r['ss_train_miou']:.3f} / {r['ss_val_miou']:.3f} | {r['all_bg_miou']:.3f} |"
            else:
                lead, tail = f"| | | | | | | {power[0]:g} / {power[1]} (eval only) |", " | |"
            lines.append(f"{lead} {cam:.3f} | {psa:.3f} | {acc:.2f} / {cover:.2f} |{tail}")
    lines += ["", "Wall time per stage (s):", "",
              "| variant | " + " | ".join(rows[0]["times"]) + " |", "|---" * (len(rows[0]["times"]) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(f"{r['times'].get(k, 0):.1f}" for k in rows[0]["times"]) + " |")
    return "\n".join(lines) + "\n"


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    overrides = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = value.strip()
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser, train=600, val=200)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", action="append", default=[],
                        help="FIELD=VALUE (a dotted profile field, e.g. aff.rw_t=8) for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME:FIELD=VALUE,... (repeatable)")
    parser.add_argument("--bg-powers", default="", help="extra background powers to evaluate, e.g. 4,8")
    parser.add_argument("--rw-steps", default="", help="extra random-walk step counts to evaluate, e.g. 16,64")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = resolve_device(args.device)
    root, generate_s = prepare_dataset(parser, args)
    train = CachedDataset(open_weak_dataset(root, "train"))
    val = CachedDataset(open_weak_dataset(root, "val"))
    train_gt, val_gt = semantic_ground_truth(root, "train"), semantic_ground_truth(root, "val")
    common = dict(parse_variant("x:" + ",".join(args.set))[1])
    variants = [parse_variant(v) for v in args.variant] or [(args.profile, {})]
    bg_powers = [float(p) for p in args.bg_powers.split(",") if p]
    rw_steps = [int(t) for t in args.rw_steps.split(",") if t]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    note = (
        f"# Round-1 cue quality\n\nSynthetic data{f' ({args.difficulty})' if args.generate else ''}: {len(train)} train / {len(val)} val images of {args.size} px, "
        f"seed {args.seed}{f' (generated in {generate_s:.0f} s)' if generate_s is not None else ''}; profile `{args.profile}`"
        + (f" with {', '.join(args.set)}" if args.set else "") + f"; device: {gpu}; torch {torch.__version__}.\n\n"
        "Variants:\n\n" + "\n".join(f"* `{n}`: {o or 'profile defaults'}" for n, o in variants) + "\n\n"
        "mIoU against SegmentationClass of the train split (SS also on val), VOID ignored; (a) argmax of "
        "[(1 - max CAM)^power, CAMs] before the random walk, (b) after it (argmax of O); conf acc / cover: "
        "accuracy and coverage of the labels kept by label_min_score (what the SS branch trains on)."
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in variants:
        profile = get_profile(args.profile, {**common, **overrides})
        rows.append(run_variant(name, profile, train, val, train_gt, val_gt, device, bg_powers, rw_steps))
        print(table(rows[-1:], f"## {name}: {overrides}"), flush=True)
        Path(args.out).write_text(table(rows, note))  # after every variant: a cut-off run keeps its rows
    print(table(rows, note))


if __name__ == "__main__":
    main()

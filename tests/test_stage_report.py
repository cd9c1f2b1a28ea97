"""bench/stage_report.py, the per-stage microscope, on a tiny 2-round run of the real stages: one table per
round with every row of issue 16, the numbers in range and consistent with the run's own files."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import box_quality  # noqa: E402
import ccgr_variants  # noqa: E402
import stage_report  # noqa: E402
from tiny_overrides import TINY_OVERRIDES  # noqa: E402
from wsis_core import stages  # noqa: E402
from wsis_core.bags import bags_for_peaks  # noqa: E402
from wsis_core.data.dataset import open_weak_dataset  # noqa: E402
from wsis_core.data.synth import generate_dataset  # noqa: E402
from wsis_core.io import read_json  # noqa: E402
from wsis_core.proposals import straddling_objectness  # noqa: E402
from wsis_core.round_context import RoundContext, RunConfig, read_config  # noqa: E402
from wsis_core.rounds import run_rounds  # noqa: E402
from wsis_core.run_layout import PEAKS, PROPAGATED, image_stem  # noqa: E402

ROUND_1_ROWS = [
    "val mAP (round 1's classifier)", "precision / recall", "instances with 2+ peaks", "CAM mIoU (train)",
    "PSA mIoU (argmax O, train)", "SS mIoU (argmax S, train)", "recall@0.5", "bag recall (bags; instances covered)",
    "precision / recall at box IoU 0.5", "mean IoU of matched", "mAP_b@0.5 (train)", "precision / recall at mask IoU 0.5",
    "mAP_r@0.5 (train)", "val mAP_r@0.25 / 0.5 / 0.75", "val mAP_b@0.5",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage_report")
    data, run = root / "data", root / "run"
    generate_dataset(data, n_train=8, n_val=4, size=96, seed=1, difficulty="parts")
    classes = tuple(open_weak_dataset(data, "train").classes)
    run_rounds(run, RunConfig(data=str(data), classes=classes, overrides=dict(TINY_OVERRIDES)), 2, torch.device("cpu"))
    out = root / "report.md"
    argv = sys.argv
    sys.argv = ["stage_report.py", "--run", str(run), "--data", str(data), "--out", str(out)]
    try:
        stage_report.main()
    finally:
        sys.argv = argv
    return run, out.read_text()


def _table(text: str, number: int) -> dict[tuple[str, str], str]:
    section = text.split(f"## Round {number}\n", 1)[1].split("## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, flags=re.M)
    return {(stage, measure): value for stage, measure, value in rows if stage != "stage" and stage != "---"}


def _numbers(value: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", value)]


def test_one_table_per_round_with_every_row(report):
    _, text = report
    assert text.count("## Round ") == 2
    first, second = _table(text, 1), _table(text, 2)
    measures = {measure for _, measure in first}
    assert set(ROUND_1_ROWS) <= measures
    for stage in ("MIL boxes", "CCGR boxes", "pseudo masks", "pseudo boxes"):
        assert (stage, "mean IoU of matched") in first and (stage, "mean IoU of matched") in second
    assert ("IS cues", "precision / recall at mask IoU 0.5") in second  # later rounds: the kept IS predictions
    assert ("semantic", "CAM mIoU (train)") not in second  # CAM/PSA are round 1's cues


def test_fractions_are_fractions_and_metrics_match_the_run(report):
    run, text = report
    for number in (1, 2):
        table = _table(text, number)
        for (stage, measure), value in table.items():
            if "precision / recall" in measure or "mIoU" in measure:
                assert all(0 <= v <= 1 for v in _numbers(value.split(";")[0])), (stage, measure, value)
        metrics = read_json(run / f"round_{number}" / "metrics.json")
        assert _numbers(table["IS branch", "val mAP_b@0.5"]) == [round(metrics["mAP_b@0.5"], 1)]
        pseudo = read_json(run / f"round_{number}" / "pseudo_labels.json")["annotations"]
        assert _numbers(table["pseudo masks", "labels (per image; images with none)"])[0] == len(pseudo)


def test_box_kinds_cover_and_ccgr_on_the_true_s(report):
    run, text = report
    kinds = stage_report.KINDS
    for number in (1, 2):
        table = _table(text, number)
        for stage in ("MIL boxes", "CCGR boxes"):
            assert sum(_numbers(table[stage, f"kinds: {kinds}"])) == pytest.approx(1, abs=0.01)
        for kind in ("part", "matched"):  # fractions of MIL's boxes of that kind, then their count
            *fractions, count = _numbers(table["CCGR boxes", f"MIL's {kind} boxes after CCGR: {kinds} (boxes)"])
            assert count == 0 or sum(fractions) == pytest.approx(1, abs=0.01)
        cover = table["semantic", "SS cover: an instance's pixels that S gives its class; S's pixels of a class on "
                      "that class (medians over instances; over images and classes)"]
        covered, placed = cover.split("; ")  # placed is n/a where S gives no labelled class a pixel
        assert 0 <= float(covered) <= 1 and (placed == stage_report.NOT_RUN or 0 <= float(placed) <= 1)
        average_precision, *part = _numbers(table["CCGR boxes on the true S",
                                                  f"mAP_b@0.5 (train); MIL's part boxes after CCGR: {kinds}"])
        assert 0 <= average_precision <= 100 and (part[-1] == 0 or sum(part[:-1]) == pytest.approx(1, abs=0.01))
    assert not list(run.rglob("*oracle*")) and not list(run.glob("round_*/tmp*"))  # the run folder is not written


def test_bag_recall_finds_the_instance_under_the_peak():
    import numpy as np

    mask = np.zeros((20, 20), bool)
    mask[2:10, 2:10] = True
    other = np.zeros((20, 20), bool)
    other[12:18, 12:18] = True
    instances = [(1, mask), (2, other), (1, other)]

    class Bag:
        def __init__(self, label, source):
            self.label, self.source = label, source

    assert stage_report._source_instance(Bag(1, (5.0, 5.0)), instances) == 0
    assert stage_report._source_instance(Bag(2, (5.0, 5.0)), instances) is None  # no class-2 instance there
    assert stage_report._source_instance(Bag(1, (11.0, 11.0, 19.0, 19.0)), instances) == 2  # best overlapping box


def test_box_kinds_size_and_where_ccgr_took_the_boxes():
    truth = box_quality.gt_boxes({"annotations": [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 1, "bbox": [10, 0, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [40, 40, 20, 20]}]})
    mil = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 12, 10]},  # matches the first instance, 1.2x its area
           {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 11]},  # over both class-1 instances
           {"image_id": 1, "category_id": 2, "bbox": [42, 42, 6, 6]},  # on a part of the class-2 instance
           {"image_id": 1, "category_id": 2, "bbox": [36, 36, 30, 30]},  # past the class-2 instance: IoU 0.44
           {"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5]}]  # no instance of its class there
    kinds = box_quality.box_kinds(truth, mil)
    assert kinds == ["matched", "merged", "part", "loose", "off"]
    assert box_quality.kind_fractions(kinds) == "0.200 / 0.200 / 0.200 / 0.200 / 0.200"
    assert box_quality.matched_size(truth, mil) == pytest.approx(1.2)
    assert box_quality.matched_size(truth, mil[2:]) is None
    grown = [*mil[:2], {"image_id": 1, "category_id": 2, "bbox": [40, 40, 20, 20]}, *mil[3:]]  # the part box grew
    assert box_quality.kinds_after(kinds, box_quality.box_kinds(truth, grown), "part") == \
        "1.000 / 0.000 / 0.000 / 0.000 / 0.000 (1)"


def test_lone_instance_extent_is_the_argmax_region_around_the_instance():
    import numpy as np

    argmax = np.zeros((20, 20), np.int64)
    argmax[1:11, 1:13] = 1  # S spreads 2 px past the instance on the right
    argmax[15:18, 15:18] = 2
    lone = np.zeros((20, 20), bool)
    lone[1:11, 1:11] = True
    twins = [np.zeros((20, 20), bool) for _ in range(2)]
    twins[0][15:16, 15:16] = twins[1][17:18, 17:18] = True
    missed = np.zeros((20, 20), bool)
    missed[5:8, 15:18] = True  # S gives its centre the background
    extents = stage_report.lone_instance_extents(argmax, [(1, lone), (2, twins[0]), (2, twins[1]), (3, missed)])
    assert extents == [pytest.approx(1.2)]  # class 2 has two instances; class 3's centre is not its class in S


def _ccgr_variants(argv: list[str]) -> None:
    saved = sys.argv
    sys.argv = ["ccgr_variants.py", *argv]
    try:
        ccgr_variants.main()
    finally:
        sys.argv = saved


def test_ccgr_variants_reproduce_the_run_and_compare_settings(report, tmp_path):
    run, _ = report
    out = tmp_path / "variants.md"
    _ccgr_variants(["--run", str(run), "--data", str(run.parent / "data"), "--rounds", "1,2", "--out", str(out),
                    "--variant", "ccgr.gap=ring", "--variant", "ccgr.iters=0"])
    text = out.read_text()
    for number in (1, 2):
        section = text.split(f"## Round {number}\n", 1)[1].split("## ", 1)[0]
        rows = {cells[0]: cells[1:] for line in section.splitlines() if line.startswith("| ")
                for cells in [[c.strip() for c in line.strip("| ").split(" | ")]]}
        # the run's own setting (the tiny default gap) refines exactly as the ccgr stage did; 0 steps leave MIL boxes
        assert rows["CCGR ccgr.gap=ring"] == rows["the run's CCGR boxes (ccgr on)"]
        assert rows["CCGR ccgr.iters=0"] == rows["MIL boxes"]
        assert rows["MIL boxes"][3] == "0.000; 1.000" and len(rows["MIL boxes"]) == 7
        assert rows["MIL boxes"][4] == "n/a" or float(rows["MIL boxes"][4]) > 0  # n/a: no box matches
        assert sum(float(f) for f in rows["MIL boxes"][5].split(" / ")) == pytest.approx(1, abs=0.01)  # the kinds
        part = rows["MIL boxes"][6]  # MIL's part boxes stay part boxes when nothing moves them
        assert part.endswith(" (0)") or part.startswith("0.000 / 1.000 / 0.000 / 0.000 / 0.000")


def test_ccgr_variants_refuse_a_bad_variant_in_one_line(report, capsys):
    run, _ = report
    for bad in ("cls.epochs=1", "ccgr.gap=sideways"):
        with pytest.raises(SystemExit) as exit_info:
            _ccgr_variants(["--run", str(run), "--data", str(run.parent / "data"), "--variant", bad])
        assert exit_info.value.code == 2
        assert "--variant" in capsys.readouterr().err


def _round_one_bags(run: Path, objectness: str) -> tuple[RoundContext, dict]:
    config = read_config(run)
    config = dataclasses.replace(config, overrides={**config.overrides, "mil.objectness": objectness})
    ctx = RoundContext(run, 1, config, torch.device("cpu"))
    return ctx, stages.round_bags(ctx, stages.proposal_source(ctx), None)


def test_round_one_bags_rank_by_eq4_with_the_objectness_of_mil_objectness(report):
    run, _ = report
    orders = {}
    for objectness in ("source", "straddling"):
        ctx, bags = _round_one_bags(run, objectness)
        cfg, peaks, proposals = ctx.profile.mil, ctx.work.read_json(PEAKS), stages.proposal_source(ctx)
        for position, info in enumerate(ctx.train_set.images):
            boxes, score = proposals.proposals_for(info.id)
            if objectness == "straddling":  # B_S from the image's superpixels instead of the selective-search rank
                score = straddling_objectness(ctx.train_set.load_image(position), boxes, cfg.superpixel_scale)
            expected = bags_for_peaks(info.id, peaks[str(info.id)], ctx.work.read_scores(PROPAGATED, image_stem(info)),
                                      boxes, score, top_k=cfg.top_k, lam=cfg.lam)
            got = [bag.proposal_indices.tolist() for bag in bags[info.id]]
            assert got == [bag.proposal_indices.tolist() for bag in expected]
            orders[objectness, info.id] = got
    ids = {image_id for _, image_id in orders}
    assert any(orders["source", i] != orders["straddling", i] for i in ids)

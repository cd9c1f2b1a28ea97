"""The round loop end to end on tiny synthetic data: artifacts, resume, the label-leak guard, CLI contracts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest
import torch
from pycocotools.coco import COCO

from tiny_overrides import TINY_OVERRIDES
from wsis_core import stages
from wsis_core.checkpoint import load_checkpoint
from wsis_core.cli import main
from wsis_core.data.dataset import open_weak_dataset
from wsis_core.device import resolve_precision
from wsis_core.evaluation import METRIC_KEYS
from wsis_core.io import write_json
from wsis_core.round_context import RoundContext, RunConfig
from wsis_core.rounds import STAGES, run_rounds, run_stage_in


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from wsis_core.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("rounds") / "data"
    generate_dataset(root, n_train=10, n_val=4, size=64, seed=5)
    return root


def _config(data, **fields) -> RunConfig:
    classes = tuple(open_weak_dataset(data, "train").classes)
    return RunConfig(data=str(data), classes=classes, overrides=dict(TINY_OVERRIDES), **fields)


@pytest.fixture(scope="module")
def weak_run(data, tmp_path_factory):
    """A 2-round weak run, recording every file the process opened while it ran."""
    opened = []

    def record(event, args):
        if event == "open" and isinstance(args[0], str):
            opened.append(args[0])

    sys.addaudithook(record)  # audit hooks cannot be removed; `opened` is only read by these tests
    run = tmp_path_factory.mktemp("rounds") / "run"
    start = len(opened)
    summary = run_rounds(run, _config(data), 2, torch.device("cpu"))
    return run, summary, list(opened[start:])


def test_every_round_writes_the_contract_artifacts(weak_run, data):
    run, summary, _ = weak_run
    ids = [info.id for info in open_weak_dataset(data, "train").images]
    for k in (1, 2):
        round_dir = run / f"round_{k}"
        for name in ("mil_boxes.json", "pseudo_labels.json"):
            coco = COCO(str(round_dir / name))
            assert sorted(coco.getImgIds()) == ids
            assert all(ann["image_id"] in ids for ann in coco.dataset["annotations"])
        assert load_checkpoint(round_dir / "model.pt").config["instance"]["precision"] == resolve_precision("auto", torch.device("cpu"))
        metrics = json.loads((round_dir / "metrics.json").read_text())
        assert list(metrics) == list(METRIC_KEYS)
        assert all(0 <= v <= 100 for v in metrics.values())
    mil = json.loads((run / "round_1" / "mil_boxes.json").read_text())["annotations"]
    assert mil and {"bbox", "category_id", "score", "peak"} <= set(mil[0])
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert set(summary["rounds"][1]["stage_seconds"]) == set(STAGES)
    assert json.loads((run / "summary.json").read_text()) == summary


def _rerun_stage(stage, run, number: int, data, tmp_path, overrides: dict) -> RoundContext:
    """Run ``stage`` again on a copy (in ``tmp_path``) of ``run``'s round ``number`` with profile ``overrides``;
    returns the stage's round context (its notes)."""
    config = _config(data)
    config = dataclasses.replace(config, overrides={**config.overrides, **overrides})
    shutil.copytree(run / f"round_{number}", tmp_path / f"round_{number}")
    ctx = RoundContext(run, number, config, torch.device("cpu"), round_dir=tmp_path / f"round_{number}")
    stage(ctx, None)
    return ctx


def test_ccgr_refines_from_its_first_round_on(weak_run, data, tmp_path):
    run, _, _ = weak_run
    first = run / "round_1"
    mil = json.loads((first / "mil_boxes.json").read_text())["annotations"]
    refined = json.loads((first / "ccgr_boxes.json").read_text())["annotations"]
    assert [a["id"] for a in refined] == [a["id"] for a in mil] and refined != mil  # tiny: every round
    # with ccgr.first_round 2 the same round-1 stage keeps its MIL boxes and says so
    ctx = _rerun_stage(stages.stage_ccgr, run, 1, data, tmp_path, {"ccgr.first_round": 2})
    assert json.loads((tmp_path / "round_1" / "ccgr_boxes.json").read_text())["annotations"] == mil
    assert len(ctx.notes) == 1 and "ccgr.first_round" in ctx.notes[0]


def test_later_round_boxes_are_the_is_boxes_with_later_boxes_is(weak_run, data, tmp_path):
    run, _, _ = weak_run
    cues = json.loads((run / "round_2" / "cue_instances.json").read_text())
    ctx = _rerun_stage(stages.stage_mil, run, 2, data, tmp_path, {"mil.later_boxes": "is"})
    boxes = json.loads((tmp_path / "round_2" / "mil_boxes.json").read_text())["annotations"]
    expected = [(int(i), c["category_id"], c["bbox"], c["score"]) for i, kept in cues.items() for c in kept]
    assert sorted((a["image_id"], a["category_id"], a["bbox"], a["score"]) for a in boxes) == sorted(expected)
    assert all(a["peak"] == [a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2] for a in boxes)
    assert len(ctx.notes) == 1 and "mil.later_boxes" in ctx.notes[0]


def test_weak_run_never_opens_training_ground_truth(weak_run, data):
    _, _, opened = weak_run
    train_stems = {info.path.stem for info in open_weak_dataset(data, "train").images}
    gt_files = [p for p in opened if "SegmentationObject" in p or "SegmentationClass" in p]
    assert gt_files, "evaluation should have read the val split's ground truth"
    assert not [p for p in gt_files if any(stem in p for stem in train_stems)]


def test_resume_continues_from_the_last_finished_stage(weak_run, data, monkeypatch):
    run, _, _ = weak_run
    (run / "round_2" / "stages" / "evaluate.json").unlink()  # as if the run stopped before evaluating
    calls = []
    for stage in STAGES:
        original = stages.STAGES[stage]

        def spy(ctx, on_progress, original=original, stage=stage):
            calls.append((ctx.number, stage))
            return original(ctx, on_progress)

        monkeypatch.setitem(stages.STAGES, stage, spy)
    run_rounds(run, _config(data), 2, torch.device("cpu"))
    assert calls == [(2, "evaluate")]


def test_resume_refuses_a_different_configuration(weak_run, data):
    run, _, _ = weak_run
    with pytest.raises(Exception, match="different configuration"):
        run_rounds(run, _config(data, ccgr=False), 2, torch.device("cpu"))


def test_cli_train_predict_and_errors(weak_run, data, tmp_path, capsys):
    run, _, _ = weak_run
    preds = tmp_path / "preds.json"
    assert main(["predict", "--run", str(run), "--data", str(data), "--split", "val", "--out", str(preds)]) == 0
    results = json.loads(preds.read_text())
    assert all({"image_id", "category_id", "segmentation", "bbox", "score"} <= set(r) for r in results)
    assert main(["predict", "--run", str(tmp_path / "nope"), "--data", str(data), "--out", str(preds)]) == 2
    assert main(["predict", "--run", str(run), "--round", "7", "--data", str(data), "--out", str(preds)]) == 2
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "classes.txt").write_text((data / "classes.txt").read_text() + "unicorn\n")
    assert main(["predict", "--run", str(run), "--data", str(other), "--out", str(preds)]) == 2
    assert "differ from the run's" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(run), "--rounds", "1"]) == 2  # exists, no --resume
    err = capsys.readouterr().err
    assert "pass --resume" in err and "Traceback" not in err
    before = (run / "round_2" / "model.pt").stat().st_mtime_ns
    assert main(["train", "--data", str(data), "--out", str(run), "--rounds", "2", "--resume"]) == 0
    assert (run / "round_2" / "model.pt").stat().st_mtime_ns == before  # finished stages are not redone
    assert '"round": 2' in capsys.readouterr().out


def test_full_supervision_is_one_round_on_true_masks(data, tmp_path):
    summary = run_rounds(tmp_path / "full", _config(data, supervision="full"), 3, torch.device("cpu"))
    assert [r["round"] for r in summary["rounds"]] == [1]
    assert set(summary["rounds"][0]["stage_seconds"]) == {"is_train", "evaluate"}
    assert not (tmp_path / "full" / "round_1" / "pseudo_labels.json").exists()


def test_phases_share_one_progress_bar():
    from wsis_core.progress import Phase, phases

    seen = []
    first, second = phases(lambda done, total: seen.append(done / total), Phase("a", "it", 3), Phase("b", "img", 1))
    first(10, 10)  # the first phase ends at its share, 3/4
    second(1, 2)
    second(2, 2)
    assert seen == [0.75, 0.875, 1.0]


def test_a_bar_with_phases_counts_each_phase_in_its_own_unit():
    from wsis_core.cli import _ProgressBar
    from wsis_core.progress import Phase, phases

    bar = _ProgressBar("round 1 cues")
    train, peaks = phases(bar, Phase("classifier training", "it", 3), Phase("peaks", "batch", 1))
    train(40, 40)
    peaks(2, 5)
    assert [(b.desc, b.unit, b.n, b.total) for b in bar.bars] == [
        ("round 1 cues: classifier training", "it", 40, 40), ("round 1 cues: peaks", "batch", 2, 5)]


def test_stage_by_stage_cli_writes_round_one_artifacts(data, tmp_path):
    work = tmp_path / "work"
    sets = [arg for name, value in TINY_OVERRIDES.items() for arg in ("--set", f"{name}={value}")]
    assert main(["cues", "--data", str(data), "--out", str(work), "--device", "cpu", *sets]) == 0
    assert (work / "peaks.json").is_file() and any((work / "score_maps").glob("*.npz"))
    assert any((work / "semantic_labels").glob("*.png"))
    assert main(["mil", "--data", str(data), "--work", str(work), "--device", "cpu"]) == 0
    mil = json.loads((work / "mil_boxes.json").read_text())
    assert main(["ccgr", "--work", str(work), "--iters", "3", "--gap", "paper", "--device", "cpu"]) == 0
    ccgr = json.loads((work / "ccgr_boxes.json").read_text())
    assert len(ccgr["annotations"]) == len(mil["annotations"]) > 0
    overrides = json.loads((work / "config.json").read_text())["overrides"]
    assert overrides["ccgr.gap"] == "paper" and overrides["ccgr.first_round"] == 1  # refined, whatever the profile
    assert [a["bbox"] for a in ccgr["annotations"]] != [a["bbox"] for a in mil["annotations"]]
    assert COCO(str(work / "pseudo_labels.json")).getImgIds()
    assert main(["ccgr", "--work", str(work), "--no-ccgr", "--device", "cpu"]) == 0
    overrides = json.loads((work / "config.json").read_text())["overrides"]  # flags not given change nothing
    assert (overrides["ccgr.iters"], overrides["ccgr.gap"]) == (3, "paper")
    unrefined = json.loads((work / "ccgr_boxes.json").read_text())["annotations"]
    assert [a["bbox"] for a in unrefined] == [a["bbox"] for a in mil["annotations"]]


def _fork(run, target, overrides: dict, data) -> RunConfig:
    """A copy of ``run``'s round 1 (and proposals) under a configuration with ``overrides`` changed."""
    shutil.copytree(run / "round_1", target / "round_1")
    shutil.copytree(run / "proposals", target / "proposals")
    config = _config(data)
    config = RunConfig.from_dict({**config.to_dict(), "overrides": {**config.overrides, **overrides}})
    write_json(target / "config.json", config.to_dict())
    return config


def test_a_round_on_weak_evidence_falls_back_to_the_previous_labels(weak_run, data, tmp_path):
    """Round 2 with no IS prediction kept (instance.score_threshold 1) and no pixel cropped (pseudo.crop_threshold 1): its cues
    and its pseudo labels are round 1's, it trains and evaluates, and its markers say why."""
    run, _, _ = weak_run
    target = tmp_path / "weak_evidence"
    config = _fork(run, target, {"instance.score_threshold": 1.0, "pseudo.crop_threshold": 1.0}, data)
    summary = run_rounds(target, config, 2, torch.device("cpu"))
    round_1, round_2 = target / "round_1", target / "round_2"
    assert json.loads((round_2 / "train_predictions.json").read_text()) == []
    previous = json.loads((round_1 / "pseudo_labels.json").read_text())["annotations"]
    labels = json.loads((round_2 / "pseudo_labels.json").read_text())["annotations"]
    assert labels and [(a["image_id"], a["segmentation"]) for a in labels] == \
        [(a["image_id"], a["segmentation"]) for a in previous]
    assert [a["id"] for a in labels] == list(range(1, len(labels) + 1))
    cues = json.loads((round_2 / "cue_instances.json").read_text())
    assert sum(map(len, cues.values())) == len(previous)
    notes = summary["rounds"][1]["notes"]
    assert "had no IS prediction" in notes["cues"][0] and "round 1's pseudo labels" in notes["cues"][0]
    assert "got no pseudo label" in notes["pseudo_labels"][0]
    assert json.loads((round_2 / "stages" / "cues.json").read_text())["notes"] == notes["cues"]
    assert set(summary["rounds"][1]["stage_seconds"]) == set(STAGES)  # trained and evaluated


def test_an_empty_first_round_label_set_takes_the_whole_boxes(weak_run, data, tmp_path):
    run, _, _ = weak_run
    target = tmp_path / "empty_round_1"
    config = _fork(run, target, {"pseudo.crop_threshold": 1.0}, data)
    for stage in ("pseudo_labels", "is_train", "evaluate"):
        (target / "round_1" / "stages" / f"{stage}.json").unlink()
    ctx = RoundContext(target, 1, config, torch.device("cpu"))
    run_stage_in(ctx, "pseudo_labels")
    labels = json.loads((target / "round_1" / "pseudo_labels.json").read_text())["annotations"]
    boxes = json.loads((target / "round_1" / "ccgr_boxes.json").read_text())["annotations"]
    assert labels and len(labels) <= len(boxes)
    notes = json.loads((target / "round_1" / "stages" / "pseudo_labels.json").read_text())["notes"]
    assert len(notes) == 1 and "whole boxes" in notes[0]


def test_pseudo_labels_do_not_depend_on_the_number_of_cutting_threads(weak_run, data, tmp_path):
    run, _, _ = weak_run
    label_sets = []
    for workers in (1, 3):
        _rerun_stage(stages.stage_pseudo_labels, run, 1, data, tmp_path / str(workers), {"pseudo.workers": workers})
        label_sets.append(json.loads((tmp_path / str(workers) / "round_1" / "pseudo_labels.json").read_text()))
    assert label_sets[0]["annotations"] and label_sets[0] == label_sets[1]

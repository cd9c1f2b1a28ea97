"""Tags-only data end to end on the CLI: rounds without any mask, evaluation where some or no ground truth
exists, split flags, and prediction on a plain folder of images."""

from __future__ import annotations

import json
import shutil

import pytest
from pycocotools.coco import COCO

from tiny_overrides import TINY_OVERRIDES
from wsis_core.cli import build_parser, main
from wsis_core.data.convert import write_tagged_folder
from wsis_core.evaluation import METRIC_KEYS
from wsis_core.round_context import read_config
from wsis_core.rounds import run_stage

NO_GROUND_TRUTH = "no ground truth for split val: metrics not computed"


def tiny_flags() -> list[str]:
    return [flag for name, value in TINY_OVERRIDES.items() for flag in ("--set", f"{name}={value}")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from wsis_core.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("tags_only")
    generate_dataset(root / "voc", n_train=10, n_val=4, size=64, seed=5)
    tags = write_tagged_folder(root / "voc", root / "tags", ["train", "val"], with_ground_truth=False)
    truth = write_tagged_folder(root / "voc", root / "truth", ["train", "val"], with_ground_truth=True)
    return tags, truth


@pytest.fixture(scope="module")
def tags_only_run(sources, tmp_path_factory):
    tags, _ = sources
    run = tmp_path_factory.mktemp("tags_only") / "run"
    code = main(["train", "--data", str(tags), "--out", str(run), "--rounds", "2", "--device", "cpu", *tiny_flags()])
    return run, code


def test_two_rounds_run_without_any_mask_and_say_why_there_are_no_metrics(tags_only_run):
    run, code = tags_only_run
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert [entry["round"] for entry in summary["rounds"]] == [1, 2]
    for entry in summary["rounds"]:
        assert entry["metrics"] == {}
        assert entry["evaluation"] == {"split": "val", "images": 4, "evaluated_images": 0, "message": NO_GROUND_TRUTH}
    marker = json.loads((run / "round_2" / "stages" / "evaluate.json").read_text())
    assert marker["message"] == NO_GROUND_TRUTH
    coco = COCO(str(run / "round_2" / "pseudo_labels.json"))
    assert len(coco.getImgIds()) == 10 and coco.getCatIds()


def test_resume_of_a_finished_tags_only_run_recomputes_nothing(tags_only_run, sources):
    run, _ = tags_only_run
    before = (run / "round_2" / "model.pt").stat().st_mtime_ns
    assert main(["train", "--data", str(sources[0]), "--out", str(run), "--rounds", "2", "--resume"]) == 0
    assert (run / "round_2" / "model.pt").stat().st_mtime_ns == before


def _copy_round_one(run, target, data, **config):
    """A run folder holding ``run``'s round-1 model and config, pointed at ``data``: evaluate runs alone."""
    (target / "round_1" / "stages").mkdir(parents=True)
    shutil.copy(run / "round_1" / "model.pt", target / "round_1" / "model.pt")
    return {**read_config(run).to_dict(), "data": str(data), **config}


def test_evaluation_on_the_val_images_that_have_ground_truth(tags_only_run, sources, tmp_path):
    run, _ = tags_only_run
    partial = tmp_path / "partial"
    shutil.copytree(sources[1], partial)
    truth = json.loads((partial / "ground_truth.json").read_text())
    kept = [image for image in truth["images"] if image["file_name"].startswith("val/")][:3]
    truth["images"] = kept
    truth["annotations"] = [a for a in truth["annotations"] if a["image_id"] in {i["id"] for i in kept}]
    (partial / "ground_truth.json").write_text(json.dumps(truth))
    config = _copy_round_one(run, tmp_path / "run", partial)
    outputs = run_stage("evaluate", data=partial, run_dir=tmp_path / "run", round_number=1, config=config, device="cpu")
    assert set(outputs) == {"metrics", "evaluation", "val_predictions"}
    evaluation = json.loads(outputs["evaluation"].read_text())
    assert (evaluation["images"], evaluation["evaluated_images"]) == (4, 3)
    assert evaluation["message"] == "evaluated on the 3 of 4 images of split val that have ground truth"
    assert list(json.loads(outputs["metrics"].read_text())) == list(METRIC_KEYS)


def test_no_val_split_means_no_evaluation(tags_only_run, sources, tmp_path):
    run, _ = tags_only_run
    config = _copy_round_one(run, tmp_path / "run", sources[0], val_split=None)
    outputs = run_stage("evaluate", data=sources[0], run_dir=tmp_path / "run", round_number=1, config=config, device="cpu")
    assert set(outputs) == {"evaluation"}
    assert json.loads(outputs["evaluation"].read_text())["message"] == "no val split: metrics not computed"


def test_predict_on_a_plain_folder_of_images(tags_only_run, sources, tmp_path):
    run, _ = tags_only_run
    folder = tmp_path / "new"
    shutil.copytree(sources[0] / "images" / "val", folder / "batch")
    out = tmp_path / "preds.json"
    assert main(["predict", "--run", str(run), "--images", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    preds = json.loads(out.read_text())
    assert [image["file_name"] for image in preds["images"]] == sorted(f"batch/{p.name}" for p in (folder / "batch").iterdir())
    assert [c["name"] for c in preds["categories"]] == list(read_config(run).classes)
    ids = {image["id"] for image in preds["images"]}
    assert all(p["image_id"] in ids and {"segmentation", "bbox", "score"} <= set(p) for p in preds["annotations"])
    COCO(str(out))  # loads as a COCO file
    assert main(["predict", "--run", str(run), "--out", str(out)]) == 2


def test_split_flags_reach_the_run_config(sources, tmp_path, capsys):
    from wsis_core.cli import _new_config

    args = build_parser().parse_args(["train", "--data", str(sources[0]), "--out", str(tmp_path / "r"),
                                      "--train-split", "val", "--val-split", "train"])
    config = _new_config(args)
    assert (config.train_split, config.val_split) == ("val", "train")
    args = build_parser().parse_args(["train", "--data", str(sources[0]), "--out", "r", "--val-split", "none"])
    assert _new_config(args).val_split is None
    assert main(["train", "--data", str(sources[0]), "--out", str(tmp_path / "r"), "--train-split", "train2017"]) == 2
    assert "split 'train2017' has no images" in capsys.readouterr().err

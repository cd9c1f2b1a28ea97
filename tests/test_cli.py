"""The `wsis` CLI contracts: synth → convert → eval, JSON formats, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from wsis_core.cli import main
from wsis_core.evaluation import METRIC_KEYS


def test_gt_as_results_scores_100_everywhere(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["synth", str(data), "--train", "4", "--val", "3", "--size", "96", "--seed", "1"]) == 0
    gt, preds, metrics_path = tmp_path / "gt.json", tmp_path / "preds.json", tmp_path / "metrics.json"
    assert main(["convert", "--data", str(data), "--split", "val", "--out", str(gt)]) == 0
    assert main(["convert", "--data", str(data), "--split", "val", "--out", str(preds), "--as-results"]) == 0
    capsys.readouterr()
    assert main(["eval", "--gt", str(gt), "--pred", str(preds), "--out", str(metrics_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(METRIC_KEYS)
    assert all(value == pytest.approx(100.0) for value in printed.values())
    assert json.loads(metrics_path.read_text()) == printed
    coco = json.loads(gt.read_text())
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]


def test_boxes_only_results_give_null_mask_metrics(tmp_path, capsys):
    data, gt, preds = tmp_path / "d", tmp_path / "gt.json", tmp_path / "preds.json"
    main(["synth", str(data), "--train", "2", "--val", "2", "--size", "96", "--seed", "2"])
    main(["convert", "--data", str(data), "--split", "val", "--out", str(gt), "--as-results"])
    results = [{k: v for k, v in r.items() if k != "segmentation"} for r in json.loads(gt.read_text())]
    preds.write_text(json.dumps(results))
    main(["convert", "--data", str(data), "--split", "val", "--out", str(gt)])
    capsys.readouterr()
    assert main(["eval", "--gt", str(gt), "--pred", str(preds)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["mAP_r@0.5"] is None and metrics["coco_segm_AP"] is None
    assert metrics["mAP_b@0.5"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["convert", "--data", "/nonexistent/data", "--split", "val", "--out", "x.json"],
        ["convert", "--data", "{voc}", "--split", "nosuchsplit", "--out", "x.json"],
        ["eval", "--gt", "/nonexistent/gt.json", "--pred", "/nonexistent/p.json"],
    ],
)
def test_bad_input_prints_one_line_and_exits_2(voc_mini, tmp_path, argv):
    argv = [arg.format(voc=voc_mini) for arg in argv]
    result = subprocess.run([sys.executable, "-m", "wsis_core.cli", *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in result.stderr


def test_every_flag_has_help_and_shows_its_default(capsys):
    from wsis_core.cli import build_parser

    parser = build_parser()
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)][0]
    for name, sub in subcommands.choices.items():
        for action in sub._actions:
            assert action.help, f"wsis {name} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # lines are wrapped to the terminal
    assert "(default: 3)" in text and "{tiny,paper}" in text and "(default: tiny)" in text


def test_profile_show_prints_every_field_with_its_default_and_meaning(capsys):
    from wsis_core.profiles import PROFILES, field_paths

    fields = dict(field_paths())
    assert len(fields) > 70 and all(info.description for info in fields.values())
    assert main(["profile", "show", "--profile", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(fields)
    backbone = next(line for line in lines if line.split()[0] == "backbone.name")
    assert repr(PROFILES["paper"].backbone.name) in backbone and fields["backbone.name"].description in backbone


def test_an_unknown_set_field_lists_the_valid_ones(voc_mini, tmp_path, capsys):
    assert main(["cues", "--data", str(voc_mini), "--out", str(tmp_path / "w"), "--set", "cls.epoch=2"]) == 2
    error = capsys.readouterr().err
    assert "unknown profile field(s): cls.epoch" in error and "cls.epochs" in error and "profile show" in error

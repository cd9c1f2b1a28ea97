"""bench/paper_tables.py: the ablation runs start from the weak run's round 1 with only the shared
stages kept, and the report's ratios and CCGR effect come from the runs' metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import paper_tables  # noqa: E402
from wsis_core.io import write_json  # noqa: E402
from wsis_core.run_layout import marker_name  # noqa: E402


def _finished_round_one(weak: Path) -> None:
    """A weak run whose round 1 finished every stage, each with one artifact (ss: a folder)."""
    round_1 = weak / "round_1"
    (weak / "proposals").mkdir(parents=True)
    (weak / "proposals" / "1.npz").write_bytes(b"p")
    artifacts = {"cues": "peaks.json", "ss": "score_maps", "proposals": "../proposals", "mil": "mil_boxes.json",
                 "ccgr": "ccgr_boxes.json", "pseudo_labels": "pseudo_labels.json", "is_train": "model.pt",
                 "evaluate": "metrics.json"}
    for stage, name in artifacts.items():
        path = round_1 / name
        if stage == "ss":
            path.mkdir(parents=True)
            (path / "a.npz").write_bytes(b"s")
        elif stage != "proposals":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(stage)
        write_json(round_1 / marker_name(stage), {"artifacts": {stage: name}, "seconds": 1.0})


@pytest.mark.parametrize("name", list(paper_tables.ABLATIONS))
def test_fork_keeps_only_the_shared_stages(tmp_path, name):
    weak, target = tmp_path / "weak", tmp_path / name
    _finished_round_one(weak)
    shared = paper_tables.ABLATIONS[name][1]
    paper_tables.fork_first_round(weak, target, shared)

    kept = {p.stem for p in (target / "round_1" / "stages").iterdir()}
    assert kept == set(shared)
    assert (target / "proposals" / "1.npz").read_bytes() == b"p"
    assert (target / "round_1" / "score_maps" / "a.npz").exists()
    for redone in ("ccgr_boxes.json", "pseudo_labels.json", "model.pt", "metrics.json"):
        assert not (target / "round_1" / redone).exists()
    assert (target / "round_1" / "mil_boxes.json").exists() == ("mil" in shared)
    assert (weak / "round_1" / "model.pt").exists(), "the weak run is left as it was"
    assert not (tmp_path / f"{name}.partial").exists()

    (target / "round_1" / "ccgr_boxes.json").write_text("resumed")
    paper_tables.fork_first_round(weak, target, shared)  # an existing fork is resumed, not copied again
    assert (target / "round_1" / "ccgr_boxes.json").read_text() == "resumed"


def _summary(rounds: list[dict]) -> dict:
    return {"rounds": [{"round": i + 1, "metrics": m, "stage_seconds": {"is_train": 10.0}} for i, m in enumerate(rounds)]}


def test_report_gives_ratios_and_the_ccgr_effect():
    metrics = lambda r, b: {"mAP_r@0.25": r, "mAP_r@0.5": r, "mAP_r@0.75": None, "mAP_b@0.5": b,  # noqa: E731
                            "coco_segm_AP": None, "coco_bbox_AP": None}
    summaries = {"weak": _summary([metrics(20, 30), metrics(30, 40)]), "no_ccgr": _summary([metrics(15, 35), metrics(20, 30)]),
                 "seg": _summary([metrics(10, 10)]), "full": _summary([metrics(60, 80)])}
    summaries["seg"]["rounds"][0]["stage_seconds"].update(cues=99.0, ccgr=2.0)  # cues: shared with the weak run
    text = paper_tables.report({
        "command": "x", "date": "d", "machine": "m", "device": "cpu", "data": "D", "dataset_note": "n",
        "train_images": 6, "val_images": 2, "profile": "tiny", "overrides": {}, "seed": 0, "work": "W",
        "wall_s": 60.0, "summaries": summaries, "notes": "",
    })
    assert "| weak, round 2 | 30.0 | 30.0 | n/a | 40.0 | n/a | n/a |" in text
    assert "| weak (round 2) / full | 0.50 | 0.50 | 0.50 |" in text
    assert "| CCGR effect: weak round 1 minus no CCGR (points) | 5.0 | 5.0 | -5.0 |" in text
    assert "| CCGR effect: weak round 2 minus no CCGR (points) | 10.0 | 10.0 | 10.0 |" in text
    assert "| weak, no CCGR (MIL boxes cropped), round 2 | 20.0 | 20.0 | n/a | 30.0 | n/a | n/a |" in text
    assert "| full supervision (upper bound) | - | - | - | - | - | - | 10 | - | 10 |" in text
    assert "| weak, Seg-only boxes, round 1 | - | - | - | - | 2 | - | 10 | - | 12 |" in text


def test_report_without_the_ablations_and_full():
    metrics = {"mAP_r@0.25": 20, "mAP_r@0.5": 20, "mAP_r@0.75": None, "mAP_b@0.5": 30,
               "coco_segm_AP": None, "coco_bbox_AP": None}
    text = paper_tables.report({
        "command": "x", "date": "d", "machine": "m", "device": "cpu", "data": "D", "dataset_note": "n",
        "train_images": 6, "val_images": 2, "profile": "tiny", "overrides": {}, "seed": 0, "work": "W",
        "wall_s": 60.0, "summaries": {"weak": _summary([metrics])}, "notes": "",
    })
    assert "| weak, round 1 | 20.0 | 20.0 | n/a | 30.0 | n/a | n/a |" in text
    assert "/ full |" not in text and "| CCGR effect" not in text and "| full supervision" not in text

"""bench/seed_table.py: rows averaged over the seeds' work folders (mean ± half range), with the weak/full
ratio and the CCGR effect per round, from the runs' summary.json files."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import seed_table  # noqa: E402
from wsis_core.io import write_json  # noqa: E402


def _metrics(r: float, b: float) -> dict:
    return {"mAP_r@0.25": r, "mAP_r@0.5": r, "mAP_r@0.75": None, "mAP_b@0.5": b,
            "coco_segm_AP": None, "coco_bbox_AP": None}


def _write(work: Path, run: str, per_round: list[dict]) -> None:
    write_json(work / run / "summary.json", {"rounds": [
        {"round": i + 1, "metrics": m, "stage_seconds": {"is_train": 1.0}} for i, m in enumerate(per_round)]})


def test_rows_are_averaged_over_the_seeds_that_have_them(tmp_path):
    first, second = tmp_path / "s0", tmp_path / "s1"
    _write(first, "weak", [_metrics(20, 30), _metrics(40, 50)])
    _write(first, "no_ccgr", [_metrics(10, 30), _metrics(30, 40)])
    _write(first, "full", [_metrics(80, 100)])
    _write(second, "weak", [_metrics(30, 30), _metrics(50, 60)])  # seed 1: no ablation, no full
    works = [first, second]
    text = seed_table.report(works, [seed_table.seed_rows(seed_table.load_summaries(w)) for w in works])
    assert "| weak, round 2 | 45.0±5.0 | 45.0±5.0 | n/a | 55.0±5.0 | 40.0; 50.0 |" in text
    assert "| weak, no CCGR (MIL boxes cropped), round 2 | 30.0±0.0 | 30.0±0.0 | n/a | 40.0±0.0 | 30.0; - |" in text
    assert "| weak (round 2) / full, ratio x 100 | 50.0±0.0 | 50.0±0.0 | n/a | 50.0±0.0 | 50.0; - |" in text
    assert "| CCGR effect at round 1 (weak minus no CCGR, points) | 10.0±0.0 | 10.0±0.0 | n/a | 0.0±0.0 | 10.0; - |" in text
    assert "| CCGR effect at round 2 (weak minus no CCGR, points) | 10.0±0.0 | 10.0±0.0 | n/a | 10.0±0.0 | 10.0; - |" in text

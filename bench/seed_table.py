"""Tables 1 and 3 over several seeds: mean ± half range of the rows of ``bench/paper_tables.py``.

Reads ``WORK/RUN/summary.json`` of every run (``weak``, ``no_ccgr``, ``seg``, ``full``) in each seed's work
folder, so the rounds a call has finished count even when the call itself was cut short. A row is averaged
over the seeds that have it; the last column lists the seeds' mAP_r@0.5 one by one (``-`` where missing).

    python bench/seed_table.py --work /tmp/pt_s0 /tmp/pt_s1 /tmp/pt_s2 --out bench/results/x.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paper_tables import comparisons, rows
from reporting import fmt, write_report
from wsis_core.evaluation import METRIC_KEYS
from wsis_core.io import read_json
from wsis_core.run_layout import SUMMARY

RUN_NAMES = ("weak", "no_ccgr", "seg", "full")
HEADLINE = "mAP_r@0.5"


def load_summaries(work: Path) -> dict[str, dict]:
    """The summaries of the runs ``work`` holds (those without a summary are left out)."""
    return {name: read_json(work / name / SUMMARY) for name in RUN_NAMES if (work / name / SUMMARY).exists()}


def spread(values: list[float | None]) -> str:
    """``mean±half range`` of the values that are known, ``n/a`` if none is."""
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return f"{sum(known) / len(known):.1f}±{(max(known) - min(known)) / 2:.1f}"


def seed_rows(summaries: dict[str, dict]) -> dict[str, dict]:
    """Row name -> metrics of one seed: paper_tables' rows plus the weak/full ratios and CCGR effects."""
    if "weak" not in summaries:
        return {}
    table = {name: metrics for name, metrics, _ in rows(summaries)}
    ratios, effects = comparisons(summaries)
    if ratios:
        table[f"weak (round {len(summaries['weak']['rounds'])}) / full, ratio x 100"] = {
            k: None if v is None else 100 * v for k, v in ratios.items()}
    for number, effect in effects.items():
        table[f"CCGR effect at round {number} (weak minus no CCGR, points)"] = effect
    return table


def report(works: list[Path], per_seed: list[dict[str, dict]]) -> str:
    names = list(dict.fromkeys(name for table in per_seed for name in table))
    lines = [f"Mean ± half range over {len(works)} seeds ({', '.join(str(w) for w in works)}); percent, IS branch "
             "on the val split; a row is averaged over the seeds that have it.", "",
             "| run | " + " | ".join(METRIC_KEYS[:4]) + f" | {HEADLINE} per seed |",
             "|---|" + "---|" * 5]
    for name in names:
        values = [table.get(name, {}) for table in per_seed]
        cells = [spread([v.get(k) for v in values]) for k in METRIC_KEYS[:4]]
        each = "; ".join(fmt(v.get(HEADLINE)) if v else "-" for v in values)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {each} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", nargs="+", required=True, help="work folders of bench/paper_tables.py, one per seed")
    parser.add_argument("--out", help="markdown file to write (default: print only)")
    args = parser.parse_args()
    works = [Path(w) for w in args.work]
    if missing := [str(w) for w in works if not (w / "weak" / SUMMARY).exists()]:
        parser.error(f"no weak run summary in {', '.join(missing)}")
    write_report(report(works, [seed_rows(load_summaries(w)) for w in works]), args.out)


if __name__ == "__main__":
    main()

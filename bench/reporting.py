"""Helpers shared by the benchmarks' reports: line-per-10 % progress for nohup logs, the machine's
description, number formatting, the profile flags and the report's header fields."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch


class Progress:
    """``on_progress(done, total)`` printing a line every 10 % (readable in a nohup log)."""

    def __init__(self, label: str):
        self.label, self.start, self.shown = label, time.perf_counter(), -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            print(f"  {self.label}: {done}/{total} ({time.perf_counter() - self.start:.0f} s)", flush=True)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs visible, torch {torch.__version__} with {torch.get_num_threads()} threads"


def fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile``, ``--set FIELD=VALUE`` (repeatable), ``--device`` and ``--notes-file``."""
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="dotted profile field override, e.g. ccgr.iters=50 (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--notes-file", help="markdown appended to the report as its Notes section")


def profile_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """The ``--set FIELD=VALUE`` items as a dict (a malformed one is a usage error)."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected FIELD=VALUE")
        overrides[name.strip()] = value
    return overrides


def report_header(args: argparse.Namespace, device) -> dict:
    """The fields every report starts with: the command line, date, machine, device and the notes."""
    return {
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(), "device": str(device),
        "notes": Path(args.notes_file).read_text().strip() if args.notes_file else "",
    }


def write_report(text: str, out: str | Path | None) -> None:
    """Print the report and, when ``out`` is given, write it there."""
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)

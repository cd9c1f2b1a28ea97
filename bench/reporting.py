"""Helpers shared by the benchmarks' reports: line-per-10 % progress for nohup logs, the machine's
description, number formatting."""

from __future__ import annotations

import os
import platform
import time

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

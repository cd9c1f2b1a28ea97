"""Dataset flags shared by the quality benchmarks: an existing dataset (``--data``) or a seeded synthetic
one generated first (``--generate`` with ``wsis synth``'s options)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wsis_core.data.synth import DIFFICULTIES, generate_dataset


def add_dataset_arguments(parser: argparse.ArgumentParser, train: int, val: int, difficulty: str = "easy") -> None:
    parser.add_argument("--data", help="an existing (VOC-layout) dataset")
    parser.add_argument("--generate", help="generate the synthetic dataset into this folder first")
    parser.add_argument("--train", type=int, default=train)
    parser.add_argument("--val", type=int, default=val)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0, help="of the generated data and of the run")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default=difficulty, help="of the generated data set")
    parser.add_argument("--workers", type=int, default=2, help="processes that generate the data set")


def prepare_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Path, float | None]:
    """The dataset folder, and the seconds spent generating it (None for ``--data``)."""
    if bool(args.data) == bool(args.generate):
        parser.error("give exactly one of --data and --generate")
    root = Path(args.generate or args.data).resolve()
    if not args.generate:
        return root, None
    started = time.perf_counter()
    generate_dataset(root, args.train, args.val, args.size, args.seed, difficulty=args.difficulty, workers=args.workers)
    return root, time.perf_counter() - started

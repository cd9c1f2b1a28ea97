"""The ``wsis`` command line: one subcommand per pipeline step.

User errors (bad paths, corrupt files, unknown classes) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from wsis_core.errors import WsisInputError

EXIT_USAGE = 2


class _ProgressBar:
    """An ``on_progress(done, total)`` callback drawing a tqdm bar on stderr."""

    def __init__(self, description: str):
        self._description = description
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self._description, unit="img", file=sys.stderr)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()


def cmd_synth(args: argparse.Namespace) -> None:
    from wsis_core.data.synth import generate_dataset

    generate_dataset(Path(args.out), args.train, args.val, args.size, args.seed, on_progress=_ProgressBar("synth"))
    print(f"wrote {args.train} train + {args.val} val images to {args.out}")


def cmd_convert(args: argparse.Namespace) -> None:
    from wsis_core.data.convert import ground_truth_as_results, ground_truth_to_coco
    from wsis_core.data.dataset import open_ground_truth
    from wsis_core.io import write_json

    coco = ground_truth_to_coco(open_ground_truth(args.data, args.split), on_progress=_ProgressBar("convert"))
    write_json(args.out, ground_truth_as_results(coco) if args.as_results else coco)
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} instances to {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from wsis_core.evaluation import evaluate_files
    from wsis_core.io import write_json

    metrics = evaluate_files(args.gt, args.pred)
    if args.out:
        write_json(args.out, metrics)
    print(json.dumps(metrics))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate a synthetic VOC-layout dataset")
    synth.add_argument("out")
    synth.add_argument("--train", type=int, default=100, help="number of training images")
    synth.add_argument("--val", type=int, default=40, help="number of validation images")
    synth.add_argument("--size", type=int, default=160, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=cmd_synth)

    convert = commands.add_parser("convert", help="write a split's ground truth as COCO JSON")
    convert.add_argument("--data", required=True, help="VOC- or COCO-layout dataset folder")
    convert.add_argument("--split", required=True)
    convert.add_argument("--out", required=True)
    convert.add_argument("--as-results", action="store_true",
                         help="write the ground truth as a COCO results list with score 1 (sanity checks)")
    convert.set_defaults(run=cmd_convert)

    evaluate = commands.add_parser("eval", help="mAP^r@0.25/0.5/0.75, mAP^b@0.5 and COCO AP of predictions")
    evaluate.add_argument("--gt", required=True, help="COCO ground truth written by `wsis convert`")
    evaluate.add_argument("--pred", required=True, help="COCO results list")
    evaluate.add_argument("--out", help="also write the metrics JSON here")
    evaluate.set_defaults(run=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except WsisInputError as exc:
        print(f"wsis {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

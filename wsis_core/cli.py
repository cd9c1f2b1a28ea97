"""The ``wsis`` command line: one subcommand per pipeline step.

User errors (bad paths, corrupt files, unknown classes) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from wsis_core.choices import BOX_SOURCES, GAP_MODES, SUPERVISIONS
from wsis_core.data.synth import DIFFICULTIES
from wsis_core.errors import WsisInputError

EXIT_USAGE = 2
DEFAULT_VAL_SPLIT = "val"


class _ProgressBar:
    """An ``on_progress(done, total)`` callback drawing a tqdm bar on stderr that counts real units: ``unit``, or
    the unit of the stage its description ends with (``wsis_core.rounds.STAGE_UNITS``). ``phase(name, unit)``
    gives the callback of one phase of a stage, drawn as its own bar (see ``wsis_core.progress.phases``)."""

    def __init__(self, description: str, unit: str | None = None):
        from wsis_core.rounds import STAGE_UNITS

        self._description = description
        self._unit = unit or STAGE_UNITS.get(description.split()[-1], "step")
        self.bars: list[tqdm] = []

    def __call__(self, done: int, total: int) -> None:
        self._draw(self._description, self._unit, done, total)

    def phase(self, name: str, unit: str):
        return lambda done, total: self._draw(f"{self._description}: {name}", unit, done, total)

    def _draw(self, description: str, unit: str, done: int, total: int) -> None:
        if not self.bars or self.bars[-1].desc != description:
            self.bars.append(tqdm(total=total, desc=description, unit=unit, file=sys.stderr))
        bar = self.bars[-1]
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def cmd_synth(args: argparse.Namespace) -> None:
    import tempfile

    from wsis_core.data.convert import write_tagged_folder
    from wsis_core.data.synth import generate_dataset

    def generate(out: Path) -> None:
        generate_dataset(out, args.train, args.val, args.size, args.seed, on_progress=_ProgressBar("synth", "img"),
                         difficulty=args.difficulty, workers=args.workers)

    if args.layout == "voc":
        generate(Path(args.out))
    else:
        if Path(args.out).exists():
            raise WsisInputError(f"{args.out}: already exists")
        with tempfile.TemporaryDirectory() as scratch:
            generate(Path(scratch) / "voc")
            splits = ["train", "val"] if args.val else ["train"]
            write_tagged_folder(Path(scratch) / "voc", args.out, splits, with_ground_truth=args.ground_truth)
    print(f"wrote {args.train} train + {args.val} val images to {args.out} ({args.layout} layout)")


def cmd_convert(args: argparse.Namespace) -> None:
    from wsis_core.data.convert import ground_truth_as_results, ground_truth_to_coco
    from wsis_core.data.dataset import open_ground_truth
    from wsis_core.io import write_json

    truth = open_ground_truth(args.data, args.split)
    if not truth.images:
        raise WsisInputError(f"{args.data}: no ground truth for split {args.split} (no image of it has masks)")
    coco = ground_truth_to_coco(truth, on_progress=_ProgressBar("convert", "img"))
    write_json(args.out, ground_truth_as_results(coco) if args.as_results else coco)
    skipped = f" ({truth.total - len(truth.images)} images without ground truth left out)" if len(truth.images) < truth.total else ""
    print(f"wrote {len(coco['images'])} images, {len(coco['annotations'])} instances to {args.out}{skipped}")


def cmd_eval(args: argparse.Namespace) -> None:
    from wsis_core.evaluation import evaluate_files
    from wsis_core.io import write_json

    metrics = evaluate_files(args.gt, args.pred)
    if args.out:
        write_json(args.out, metrics)
    print(json.dumps(metrics))


def _profile_overrides(args: argparse.Namespace) -> dict:
    """``--set FIELD=VALUE`` pairs (any dotted profile field, e.g. ``instance.lr=0.01``; the value is parsed as
    the field's type when the profile is built) plus the dedicated flags."""
    from wsis_core.profiles import WEIGHTS_FIELD

    overrides = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise WsisInputError(f"--set {item}: expected FIELD=VALUE")
        overrides[name.strip()] = value
    if getattr(args, "devices", None) is not None:
        overrides["devices"] = args.devices
    if getattr(args, "backbone_weights", None):
        if not Path(args.backbone_weights).is_file():
            raise WsisInputError(f"{args.backbone_weights}: backbone weights file not found")
        overrides[WEIGHTS_FIELD] = args.backbone_weights
    return overrides


def _run_standalone(work: Path, config, stages: tuple[str, ...], device: str) -> None:
    """Run ``stages`` of round 1 in a work folder (run folder = round folder), recomputing them."""
    from wsis_core.device import resolve_device
    from wsis_core.io import write_json
    from wsis_core.round_context import RoundContext
    from wsis_core.rounds import STAGES, run_stage_in
    from wsis_core.run_layout import CONFIG, marker_name

    write_json(work / CONFIG, config.to_dict())
    for stage in STAGES[STAGES.index(stages[0]):]:  # these stages and everything after them are redone
        (work / marker_name(stage)).unlink(missing_ok=True)
    ctx = RoundContext(work, 1, config, resolve_device(device), round_dir=work)
    for stage in stages:
        run_stage_in(ctx, stage, _ProgressBar(stage))


def _val_split(args: argparse.Namespace) -> str | None:
    """``--val-split``: a split name, ``none`` (no evaluation), or by default ``val`` where the dataset has it."""
    from wsis_core.data.dataset import dataset_splits

    if args.val_split is None:
        if DEFAULT_VAL_SPLIT in dataset_splits(args.data):
            return DEFAULT_VAL_SPLIT
        print(f"wsis {args.command}: {args.data} has no split {DEFAULT_VAL_SPLIT!r}: no evaluation "
              "(pass --val-split to name one)", file=sys.stderr)
        return None
    return None if args.val_split.lower() == "none" else args.val_split


def _new_config(args: argparse.Namespace, **fields):
    from wsis_core.data.dataset import open_weak_dataset
    from wsis_core.round_context import RunConfig

    classes = open_weak_dataset(args.data, args.train_split).classes
    val_split = _val_split(args)
    if val_split is not None:
        open_weak_dataset(args.data, val_split)  # a wrong name fails now, not after training
    config = RunConfig(data=str(Path(args.data).resolve()), classes=tuple(classes), profile=args.profile,
                       overrides=_profile_overrides(args), seed=args.seed, train_split=args.train_split,
                       val_split=val_split, **fields)
    config.build_profile()
    return config


def cmd_cues(args: argparse.Namespace) -> None:
    work = Path(args.out)
    _run_standalone(work, _new_config(args), ("cues", "ss"), args.device)
    print(f"wrote peaks.json, semantic_labels/, score_maps/ to {work}")


def cmd_mil(args: argparse.Namespace) -> None:
    from wsis_core.round_context import read_config

    work = Path(args.work)
    config = dataclasses.replace(read_config(work), proposals=args.proposals)  # validates the source
    if Path(config.data) != Path(args.data).resolve():
        raise WsisInputError(f"{work}: its cues were computed on {config.data}, not {args.data}")
    _run_standalone(work, config, ("proposals", "mil"), args.device)
    print(f"wrote {work / 'mil_boxes.json'}")


def cmd_ccgr(args: argparse.Namespace) -> None:
    from wsis_core.round_context import read_config

    work = Path(args.work)
    config = read_config(work)
    flags = {"ccgr.iters": args.iters, "ccgr.gap": args.gap}  # only the flags given change the stored profile
    overrides = {**config.overrides, **{name: value for name, value in flags.items() if value is not None},
                 "ccgr.first_round": 1}  # the work folder is round 1, and this command is asked to refine it
    config = dataclasses.replace(config, ccgr=not args.no_ccgr, overrides=overrides)
    _run_standalone(work, config, ("ccgr", "pseudo_labels"), args.device)
    print(f"wrote {work / 'ccgr_boxes.json'} and {work / 'pseudo_labels.json'}")


def cmd_train(args: argparse.Namespace) -> None:
    from wsis_core.device import resolve_device
    from wsis_core.round_context import read_config
    from wsis_core.rounds import run_rounds
    from wsis_core.run_layout import CONFIG, SUMMARY

    run = Path(args.out)
    exists = (run / CONFIG).exists()
    if exists and not args.resume:
        raise WsisInputError(f"{run}: a run already exists there (pass --resume to continue it)")
    if args.rounds < 1:
        raise WsisInputError(f"--rounds must be at least 1, got {args.rounds}")
    if exists:  # --resume continues with the stored configuration
        config = read_config(run)
        if Path(config.data) != Path(args.data).resolve():
            raise WsisInputError(f"{run}: the run trains on {config.data}, not {args.data}")
    else:
        config = _new_config(args, supervision=args.supervision, ccgr=not args.no_ccgr,
                             box_source=args.box_source, proposals=args.proposals)
    summary = run_rounds(run, config, args.rounds, resolve_device(args.device), progress_for=_ProgressBar)
    for entry in summary["rounds"]:
        print(json.dumps({"round": entry["round"], **entry["metrics"]}))
    print(f"wrote {run / SUMMARY}")


def cmd_predict(args: argparse.Namespace) -> None:
    from wsis_core.io import write_json
    from wsis_core.predict import predict_images, predict_run

    if (args.data is None) == (args.images is None):
        raise WsisInputError("give either --images DIR or --data DIR [--split S]")
    if args.images is not None:
        result = predict_images(Path(args.run), args.round, args.images, args.device, on_progress=_ProgressBar("predict", "batch"))
        write_json(args.out, result)
        print(f"wrote {len(result['annotations'])} instances on {len(result['images'])} images to {args.out}")
        return
    predictions = predict_run(Path(args.run), args.round, args.data, args.split, args.device,
                              on_progress=_ProgressBar("predict", "batch"))
    write_json(args.out, predictions)
    print(f"wrote {len(predictions)} instances to {args.out}")


def cmd_export(args: argparse.Namespace) -> None:
    from wsis_core.exports import export_run

    labels = export_run(Path(args.run), args.round, args.format, Path(args.out))
    print(f"wrote the pseudo labels of {labels.parent.name.replace('_', ' ')} as {args.format} to {args.out}")


def cmd_profile_show(args: argparse.Namespace) -> None:
    from wsis_core.profiles import describe_fields

    rows = describe_fields(args.profile)
    width = max(len(f"{name} = {value!r}") for name, _, value, _ in rows)
    print(f"profile {args.profile}: every field (--set FIELD=VALUE, e.g. --set instance.lr=0.01, or "
          "config.overrides in the API)")
    for name, type_name, value, meaning in rows:
        print(f"  {f'{name} = {value!r}':<{width}}  [{type_name}] {meaning}")


class HELP_FORMAT(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every flag's default (not for required flags, switches, or flags without one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-split", default="train", help="split to train on")
    parser.add_argument("--val-split", help="split to evaluate on; none: no evaluation (default: val where it exists)")


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")


def _add_profile_options(parser: argparse.ArgumentParser) -> None:
    from wsis_core.profiles import PROFILES

    parser.add_argument("--profile", default="tiny", choices=tuple(PROFILES),
                        help="tiny (CPU, minutes) or paper (the paper's settings, GPU); `wsis profile show` lists its fields")
    _add_device_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed of every stage")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="train the IS branch on N devices under DDP (N GPUs, or N CPU processes); default 1")
    parser.add_argument("--backbone-weights", help="local torchvision ResNet state_dict (default: random init)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a dotted profile field, e.g. instance.lr=0.01 (repeatable); "
                             "`wsis profile show` lists them")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsis", description=__doc__, formatter_class=HELP_FORMAT)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, parent=commands) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text, formatter_class=HELP_FORMAT)

    synth = command("synth", "generate a synthetic VOC-layout dataset")
    synth.add_argument("out", help="folder to write (must not exist)")
    synth.add_argument("--train", type=int, default=100, help="number of training images")
    synth.add_argument("--val", type=int, default=40, help="number of validation images")
    synth.add_argument("--size", type=int, default=160, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    synth.add_argument("--difficulty", choices=DIFFICULTIES, default="easy",
                       help="easy: each class has its own colours; hard: colour says nothing, only the shape; "
                            "parts: one body look for all classes, the class only in a small part, 1-9 instances")
    synth.add_argument("--workers", type=int, default=1, help="processes drawing the images (same files)")
    synth.add_argument("--layout", choices=("voc", "tagged"), default="voc",
                       help="voc (with masks) or tagged: images/ + labels.csv, tags only unless --ground-truth")
    synth.add_argument("--ground-truth", action="store_true",
                       help="with --layout tagged: also write ground_truth.json (read by evaluation only)")
    synth.set_defaults(handler=cmd_synth)

    convert = command("convert", "write a split's ground truth as COCO JSON")
    convert.add_argument("--data", required=True, help="dataset folder (tagged, VOC or COCO layout)")
    convert.add_argument("--split", required=True, help="split whose ground truth to write")
    convert.add_argument("--out", required=True, help="COCO JSON file to write")
    convert.add_argument("--as-results", action="store_true",
                         help="write the ground truth as a COCO results list with score 1 (sanity checks)")
    convert.set_defaults(handler=cmd_convert)

    evaluate = command("eval", "mAP^r@0.25/0.5/0.75, mAP^b@0.5 and COCO AP of predictions")
    evaluate.add_argument("--gt", required=True, help="COCO ground truth written by `wsis convert`")
    evaluate.add_argument("--pred", required=True, help="COCO results list")
    evaluate.add_argument("--out", help="also write the metrics JSON here")
    evaluate.set_defaults(handler=cmd_eval)

    cues = command("cues", "round-1 cues: classifier, peaks, PSA labels, SS score maps")
    cues.add_argument("--data", required=True, help="dataset folder (tagged, VOC or COCO layout)")
    cues.add_argument("--out", required=True, help="work folder")
    _add_split_options(cues)
    _add_profile_options(cues)
    cues.set_defaults(handler=cmd_cues)

    mil = command("mil", "proposals, bags (Eq. 4) and WSDDN boxes (Eq. 2) → mil_boxes.json")
    mil.add_argument("--data", required=True, help="the dataset folder the cues were computed on")
    mil.add_argument("--work", required=True, help="work folder of `wsis cues`")
    mil.add_argument("--proposals", default="selective-search", help="selective-search or a folder of MCG/npz/json files")
    _add_device_option(mil)
    mil.set_defaults(handler=cmd_mil)

    ccgr = command("ccgr", "CCGR (Eq. 3) of the MIL boxes → ccgr_boxes.json, pseudo_labels.json")
    ccgr.add_argument("--work", required=True, help="work folder of `wsis cues` and `wsis mil`")
    ccgr.add_argument("--iters", type=int, help="CCGR gradient steps per box (default: the work folder's ccgr.iters)")
    ccgr.add_argument("--gap", choices=GAP_MODES, help="the gap term of Eq. 3 (default: the work folder's ccgr.gap)")
    ccgr.add_argument("--no-ccgr", action="store_true", help="crop with the MIL boxes (Table 3 ablation)")
    _add_device_option(ccgr)
    ccgr.set_defaults(handler=cmd_ccgr)

    train = command("train", "the whole method: rounds of MIL, SS, CCGR and IS")
    train.add_argument("--data", required=True, help="dataset folder (tagged, VOC or COCO layout)")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--rounds", type=int, default=3, help="rounds to run (or to reach, with --resume)")
    train.add_argument("--supervision", choices=SUPERVISIONS, default="weak",
                       help="weak: image-level labels; full: the fully supervised upper bound on true masks")
    train.add_argument("--no-ccgr", action="store_true", help="crop with the MIL boxes (Table 3 ablation)")
    train.add_argument("--box-source", choices=BOX_SOURCES, default="mil",
                       help="pseudo-label boxes from MIL, or from the SS masks (Table 3's Seg only)")
    train.add_argument("--proposals", default="selective-search", help="selective-search or a folder of MCG/npz/json files")
    train.add_argument("--resume", action="store_true", help="continue the run in --out with its stored configuration")
    _add_split_options(train)
    _add_profile_options(train)
    train.set_defaults(handler=cmd_train)

    predict = command("predict", "instance masks from a trained run (IS branch only)")
    predict.add_argument("--run", required=True, help="run folder (of `wsis train`)")
    predict.add_argument("--round", type=int, help="round whose model predicts (default: the last finished round)")
    predict.add_argument("--images", help="a folder of images (searched recursively; no tags needed)")
    predict.add_argument("--data", help="a dataset folder (with --split)")
    predict.add_argument("--split", default="val", help="split of --data to predict")
    predict.add_argument("--out", required=True, help="COCO results JSON to write")
    _add_device_option(predict)
    predict.set_defaults(handler=cmd_predict)

    export = command("export", "a round's pseudo labels as COCO (RLE), COCO polygons or YOLO")
    export.add_argument("--run", required=True, help="run folder (of `wsis train`)")
    export.add_argument("--round", type=int, help="round number (default: the last round with pseudo labels)")
    export.add_argument("--format", required=True, choices=("coco", "coco-polygon", "yolo"),
                        help="coco: the file as written; coco-polygon: polygons from the mask contours; yolo: a zip "
                             "of labels/<image>.txt, data.yaml, images.txt")
    export.add_argument("--out", required=True, help="file to write (.json, or .zip for yolo)")
    export.set_defaults(handler=cmd_export)

    profile = command("profile", "the training profiles")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True, metavar="ACTION",
                                              help="show: print a profile's fields")
    show = command("show", "print every field of a profile with its value and meaning", profile_commands)
    from wsis_core.profiles import PROFILES

    show.add_argument("--profile", default="tiny", choices=tuple(PROFILES), help="profile to show")
    show.set_defaults(handler=cmd_profile_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except WsisInputError as exc:
        print(f"wsis {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

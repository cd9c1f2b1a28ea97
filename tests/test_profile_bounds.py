"""Every profile field has a sane range, non-finite numbers are refused, and neither ``name`` nor ``seed`` can be
overridden by accident (issue 19, items 3 and 7): one-line errors, exit 2 in the CLI, 422 in the API."""

from __future__ import annotations

import math
import subprocess
import sys
import typing

import annotated_types
import pytest
from pydantic.fields import FieldInfo

from wsis_core.data.synth import generate_dataset
from wsis_core.errors import WsisInputError
from wsis_core.profiles import PROFILES, field_paths, get_profile
from wsis_core.round_context import RunConfig


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cls.epochs": 10**100}, "cls.epochs"),
        ({"ccgr.iters": 10**12}, "ccgr.iters"),
        ({"seg.psp_bins": tuple(range(1, 7_000_001))}, "seg.psp_bins"),
        ({"seg.psp_bins": (1, 10**6)}, "seg.psp_bins"),
        ({"input_size": 10**6}, "input_size"),
        ({"instance.max_size": 10**6}, "instance.max_size"),
        ({"mil.proposal_max": 10**9}, "mil.proposal_max"),
        ({"seg.batch_size": 10**7}, "seg.batch_size"),
        ({"aff.rw_beta": math.inf}, "aff.rw_beta"),
        ({"cls.lr": math.nan}, "cls.lr"),
        ({"ccgr.lr": -math.inf}, "ccgr.lr"),
        ({"aff.rw_t": 10**9}, "aff.rw_t"),
        ({"epoch_images": 10**12}, "epoch_images"),
        ({"seed": 2**63}, "seed"),
        ({"backbone.weights": "w" * 5000}, "backbone.weights"),
        ({"name": "x"}, "name"),
    ],
)
def test_out_of_range_fields_are_one_line_errors(overrides, field):
    with pytest.raises(WsisInputError, match=f"profile field {field}") as err:
        get_profile("tiny", overrides)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def _upper_bounded(annotation, metadata) -> bool:
    """A numeric field's type has a ``le``/``lt`` bound (on the field, or on the elements of a tuple), or is a
    Literal of a few values."""
    flat = [inner for m in metadata for inner in (m.metadata if isinstance(m, FieldInfo) else [m])]
    if any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in flat):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return True
    if origin is typing.Annotated:
        return _upper_bounded(args[0], args[1:])
    return bool(args) and all(_upper_bounded(a, ()) for a in args if a not in (type(None), Ellipsis))


def test_every_int_and_float_field_has_an_upper_bound():
    numeric = {path: info for path, info in field_paths() if path != "name"
               and any(t in str(info.annotation) for t in ("int", "float"))}
    assert len(numeric) > 50
    unbounded = sorted(path for path, info in numeric.items() if not _upper_bounded(info.annotation, info.metadata))
    assert not unbounded, unbounded
    for name in PROFILES:
        get_profile(name)  # the shipped profiles are within their bounds


def test_seed_and_name_overrides_are_refused_by_the_run_config():
    for overrides in ({"seed": 3}, {"name": "x"}):
        with pytest.raises(WsisInputError, match="not as an override"):
            RunConfig(data=".", classes=("a",), overrides=overrides)


def test_wsis_train_with_set_seed_exits_2_with_one_line(tmp_path):
    generate_dataset(tmp_path / "data", n_train=2, n_val=1, size=64, seed=0)
    for assignment in ("seed=3", "name=x", "cls.epochs=100000000000"):
        result = subprocess.run(
            [sys.executable, "-m", "wsis_core.cli", "train", "--data", str(tmp_path / "data"),
             "--out", str(tmp_path / "run"), "--set", assignment],
            capture_output=True, text=True, timeout=120,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr


def test_a_run_with_flat_profile_fields_of_before_issue_21_is_a_one_line_error_on_resume(tmp_path, capsys):
    from wsis_core.cli import main
    from wsis_core.io import write_json

    generate_dataset(tmp_path / "data", n_train=2, n_val=1, size=64, seed=0)
    config = RunConfig(data=str((tmp_path / "data").resolve()), classes=("a",)).to_dict()
    write_json(tmp_path / "run" / "config.json", {**config, "overrides": {"cls_epochs": 2}})
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--resume"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and "cls_epochs (did you mean cls.epochs?)" in lines[0]
    write_json(tmp_path / "run" / "config.json", {**config, "overrides": {"cls.epochs": 2}})
    from wsis_core.round_context import read_config

    assert read_config(tmp_path / "run").build_profile().cls.epochs == 2  # the dotted names read back


def test_set_parses_typed_values_and_seed_has_its_own_flag():
    profile = RunConfig(data=".", classes=("a",), overrides={"instance.lr": "0.01", "ccgr.lr": "none"},
                        seed=3).build_profile()
    assert (profile.instance.lr, profile.ccgr.lr, profile.seed) == (0.01, None, 3)

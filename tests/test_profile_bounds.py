"""Every profile field has a sane range, non-finite numbers are refused, and neither ``name`` nor ``seed`` can be
overridden by accident (issue 19, items 3 and 7): one-line errors, exit 2 in the CLI, 422 in the API."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest

from wsis_core.data.synth import generate_dataset
from wsis_core.errors import WsisInputError
from wsis_core.profiles import PROFILES, Profile, get_profile
from wsis_core.round_context import RunConfig


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cls_epochs": 10**100}, "cls_epochs"),
        ({"ccgr_iters": 10**12}, "ccgr_iters"),
        ({"psp_bins": tuple(range(1, 7_000_001))}, "psp_bins"),
        ({"psp_bins": (1, 10**6)}, "psp_bins"),
        ({"input_size": 10**6}, "input_size"),
        ({"is_max_size": 10**6}, "is_max_size"),
        ({"proposal_max": 10**9}, "proposal_max"),
        ({"seg_batch_size": 10**7}, "seg_batch_size"),
        ({"rw_beta": math.inf}, "rw_beta"),
        ({"cls_lr": math.nan}, "cls_lr"),
        ({"ccgr_lr": -math.inf}, "ccgr_lr"),
        ({"rw_t": 10**9}, "rw_t"),
        ({"epoch_images": 10**12}, "epoch_images"),
        ({"seed": 2**63}, "seed"),
        ({"backbone_weights": "w" * 5000}, "backbone_weights"),
        ({"name": "x"}, "name"),
    ],
)
def test_out_of_range_fields_are_one_line_errors(overrides, field):
    with pytest.raises(WsisInputError, match=f"profile field {field}") as err:
        get_profile("tiny", **overrides)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_every_int_and_float_field_has_an_upper_bound():
    from wsis_core.profiles import MAXIMA

    numeric = {f.name for f in dataclasses.fields(Profile) if f.name != "name"
               and any(t in str(f.type) for t in ("int", "float"))}
    assert numeric <= set(MAXIMA), sorted(numeric - set(MAXIMA))
    for name in PROFILES:
        get_profile(name)  # the shipped profiles are within their bounds


def test_seed_and_name_overrides_are_refused_by_the_run_config():
    for overrides in ({"seed": 3}, {"name": "x"}):
        with pytest.raises(WsisInputError, match="not as an override"):
            RunConfig(data=".", classes=("a",), overrides=overrides)


def test_wsis_train_with_set_seed_exits_2_with_one_line(tmp_path):
    generate_dataset(tmp_path / "data", n_train=2, n_val=1, size=64, seed=0)
    for assignment in ("seed=3", "name=x", "cls_epochs=100000000000"):
        result = subprocess.run(
            [sys.executable, "-m", "wsis_core.cli", "train", "--data", str(tmp_path / "data"),
             "--out", str(tmp_path / "run"), "--set", assignment],
            capture_output=True, text=True, timeout=120,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr

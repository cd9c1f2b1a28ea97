"""Device and precision selection (wsis_core.device)."""

from __future__ import annotations

import pytest
import torch

from wsis_core.device import native_bf16, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("capabilities, native", [
    ({"avx512_bf16": True, "amx_bf16": False}, True),
    ({"avx512_bf16": False, "amx_bf16": True}, True),
    ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True}, False),  # AVX-512 alone only emulates bf16
    ({}, False),
])
def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert native_bf16(CPU) is native
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")


def test_auto_precision_on_cuda_asks_for_bf16_without_emulation(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation) or False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp32"
    assert asked == [False]


@pytest.mark.parametrize("spec", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept_whatever_the_device(monkeypatch, spec):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {})
    assert resolve_precision(spec, CPU) == spec

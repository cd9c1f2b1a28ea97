"""Device selection shared by the CLI and the workers: every stage takes the ``torch.device`` it returns,
and the numeric precision that suits it."""

from __future__ import annotations

import re

import torch

from wsis_core.errors import WsisInputError


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device; ``auto`` picks CUDA when there is one.

    Asking for CUDA on a machine without it (or for a GPU index it does not have) is a user error.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise WsisInputError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise WsisInputError(f"device {spec!r} asked for, but CUDA is not available on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise WsisInputError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it without emulation
    (compute capability 8.0 and up), or a CPU with AVX-512 BF16 or AMX-BF16 instructions. Elsewhere bf16
    is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def resolve_precision(spec: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"`` as given; ``"auto"``: bf16 where ``device`` has it natively, else fp32."""
    if spec == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return spec


def forward_precision(device: torch.device, precision: str) -> torch.autocast:
    """The context of a training forward pass: bfloat16 autocast for ``"bf16"``, a no-op for ``"fp32"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

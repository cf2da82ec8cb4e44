"""Compute precision: the one place that decides fp32 or bf16, and the autocast around it.

bf16 pays where the hardware multiplies in it: CUDA GPUs with bf16 support, and CPUs with
AVX512-BF16 or AMX (oneDNN's bf16 matmuls; the fast-weight step runs ~2x faster in bf16 on the
CPU this project trains on, README Benchmarks). Elsewhere bf16 is emulated and slower, so
"auto" stays fp32 there.

Only the matmul-heavy transformer runs in bf16 (autocast: linear, matmul, attention; the
fast-weight update, its Newton-Schulz and apply). FSM keeps fp32 in the tokenizer (Plücker
rays, times), the residual stream, the heads (depths, 4D slicing, rasterizer) and the fast-weight
state (weights, column norms, importance, anchors; see fsm.lacet).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch

DtypeChoice = Literal["auto", "fp32", "bf16"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cpu_has_bf16() -> bool:
    """True if this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles), as oneDNN uses them."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, torch >= 2.3
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def bf16_is_fast(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_dtype(choice: str | torch.dtype, device: torch.device | str) -> torch.dtype:
    """'auto' -> bf16 where the device computes it natively, else fp32; 'fp32' | 'bf16' as asked."""
    if isinstance(choice, torch.dtype):
        if choice not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or bfloat16, got {choice}")
        return choice
    if choice == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if choice not in DTYPES:
        raise ValueError(f"--dtype must be one of auto | fp32 | bf16, got {choice!r}")
    device = torch.device(device)
    if DTYPES[choice] == torch.bfloat16 and device.type == "cuda" and not bf16_is_fast(device):
        raise ValueError(f"--dtype bf16: {device} does not support bfloat16")
    return DTYPES[choice]


def autocast(device: torch.device | str, dtype: torch.dtype):
    """Autocast to dtype on device's type; a no-op for fp32 (so fp32 runs exactly as without it)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def fp32(device: torch.device | str):
    """Inside an autocast region: run this part in the inputs' own precision (fp32)."""
    return torch.autocast(torch.device(device).type, enabled=False)

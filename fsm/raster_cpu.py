"""The compiled CPU compositing kernel (fsm/raster_cpu.cpp): build, load, autograd wrapper.

The C++ file has no dependency beyond the C++ standard library, so it is compiled on first use
with the machine's compiler (`$CXX`, else `c++`; about a second) into a cache folder and called
through ctypes on the tensors' memory. Where there is no compiler or the build fails, `load()`
returns None after one warning and fsm.raster uses its pure-torch path instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("raster_cpu.cpp")
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno"]  # no fast-math: results must match exactly

_lib: ctypes.CDLL | None = None
_error: str | None = None  # why the kernel is unavailable, once a build failed


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fsm-view"


def load() -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None (with one warning) where it cannot build."""
    global _lib, _error
    if _lib is not None or _error is not None:
        return _lib
    try:
        _lib = _build()
    except Exception as e:  # no compiler, failed build, unloadable library: fall back, say why once
        _error = f"{type(e).__name__}: {e}"
        warnings.warn(f"fsm.raster: compiled CPU kernel unavailable ({_error}); using the slower pure-torch rasterizer", stacklevel=3)
    return _lib


def unavailable_reason() -> str | None:
    load()
    return _error


def _build() -> ctypes.CDLL:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler '{cxx}' on PATH")
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([cxx, *FLAGS]).encode()).hexdigest()[:16]
    target = cache_dir() / f"raster_cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            run = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {run.stderr.strip()[-2000:]}")
            os.replace(tmp, target)  # atomic: concurrent builders never see a half-written library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    for name in ("bin_count", "bin_fill", "forward", "backward"):
        for suffix in ("f32", "f64"):
            getattr(lib, f"{name}_{suffix}").restype = None
    return lib


def _args(*xs):
    """ctypes arguments: tensors by address (they must stay alive and contiguous), ints as int64."""
    return [ctypes.c_void_p(x.data_ptr()) if isinstance(x, torch.Tensor) else ctypes.c_int64(x) for x in xs]


def _fn(lib, name, dtype):
    return getattr(lib, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")


class Composite(torch.autograd.Function):
    """Front-to-back compositing of projected splats in one or more cameras.

    means2d (C,N,2), conics (C,N,3) [A, B, C] with sigma = A dx^2/2 + B dx dy + C dy^2/2,
    depths (C,N), colors (N,D), opacities (N,), radii (C,N,2) integer box half-sizes (0: culled)
    -> features (C,D+1,H,W) = [sum w colour, sum w depth], transmittance (C,H,W).
    All float tensors share one dtype, float32 or float64, on the CPU.
    """

    @staticmethod
    def forward(ctx, means2d, conics, depths, colors, opacities, radii, width: int, height: int):
        lib = load()
        C, N, D = means2d.shape[0], means2d.shape[1], colors.shape[1]
        m2d, con, dep, col, op = (x.detach().contiguous() for x in (means2d, conics, depths, colors, opacities))
        radii = radii.contiguous()
        n_tiles = C * -(-height // 16) * -(-width // 16)
        # Bin into tiles: count, offsets, then fill in depth order so each list is front to back.
        counts = torch.zeros(n_tiles, dtype=torch.int64)
        _fn(lib, "bin_count", m2d.dtype)(*_args(C, N, m2d, radii, width, height, counts))
        first = torch.zeros(n_tiles + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=first[1:])
        ids = torch.empty(int(first[-1]), dtype=torch.int32)
        order = torch.argsort(dep, dim=1, stable=True).contiguous()
        _fn(lib, "bin_fill", m2d.dtype)(*_args(C, N, m2d, radii, order, width, height, first, ids))

        feat = m2d.new_empty(C, D + 1, height, width)
        trans = m2d.new_empty(C, height, width)
        _fn(lib, "forward", m2d.dtype)(*_args(C, N, D, m2d, con, dep, col, op, width, height, first, ids, feat, trans))
        ctx.save_for_backward(m2d, con, dep, col, op, first, ids)
        ctx.size = (width, height)
        return feat, trans

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_feat, g_trans):
        m2d, con, dep, col, op, first, ids = ctx.saved_tensors
        width, height = ctx.size
        C, N, D = m2d.shape[0], m2d.shape[1], col.shape[1]
        g_feat = m2d.new_zeros(C, D + 1, height, width) if g_feat is None else g_feat.contiguous()
        g_trans = m2d.new_zeros(C, height, width) if g_trans is None else g_trans.contiguous()
        grads = [torch.zeros_like(x) for x in (m2d, con, dep, col, op)]
        _fn(load(), "backward", m2d.dtype)(*_args(C, N, D, m2d, con, dep, col, op, width, height, first, ids, g_feat, g_trans, *grads))
        return (*grads, None, None, None)

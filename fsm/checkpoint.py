"""Checkpoints: one .pt file, loadable with torch.load(weights_only=True).

    {"format": "fsm-view-checkpoint", "version": 1,
     "config": FSMConfig.to_dict(), "state_dict": {...}, "metadata": {...}}

Saving is atomic (write a temp file in the same folder, fsync, rename), so a crash mid-save
leaves the previous file intact. Loading refuses a file that does not match, saying what differs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fsm.model import FSM, FSMConfig

FORMAT = "fsm-view-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used. The message names the file and what differs."""


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to `path` such that readers only ever see the old or the complete new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: FSM, metadata: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write model config + weights (+ metadata). dtype=torch.float16 halves the file; the
    loader casts floating tensors back to float32."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": state, "metadata": metadata or {}},
        path,
    )


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, validated for format and version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or objects that need unpickling code
        raise CheckpointError(f"{path}: not a readable fsm-view checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an fsm-view checkpoint (format tag {got!r}, expected {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')} is not supported (this fsm-view reads version {VERSION})")
    return ckpt


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", expect: FSMConfig | None = None, expect_heads: tuple[str, ...] = ()
) -> FSM:
    """Rebuild the model a checkpoint describes, in float32, in eval mode, on `device`.

    expect: refuse unless the checkpoint's architecture equals this config (names each field
    that differs). expect_heads: refuse unless these heads are present. model.metadata holds
    the training metadata.
    """
    ckpt = read_checkpoint(path)
    try:
        config = FSMConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from None
    if expect is not None:
        differ = [
            f"{k}: checkpoint {v!r} vs expected {getattr(expect, k)!r}"
            for k, v in vars(config).items()
            if k not in ("elastic", "frames_per_chunk") and v != getattr(expect, k)
        ]
        if differ:
            raise CheckpointError(f"{path}: model does not match — " + "; ".join(differ))
    missing_heads = set(expect_heads) - set(config.heads)
    if missing_heads:
        raise CheckpointError(f"{path}: has heads {list(config.heads)}, needs {sorted(missing_heads)}")
    model = FSM(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: shape {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems)} problems)" if len(problems) > 6 else "")
        raise CheckpointError(f"{path}: weights do not match its config (preset {config.preset!r}): {shown}")
    model.load_state_dict(state)
    model.metadata = ckpt.get("metadata", {})
    return model.to(device).eval()

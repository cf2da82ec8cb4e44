"""Checkpoints: one .pt file, loadable with torch.load(weights_only=True).

    {"format": "fsm-view-checkpoint", "version": 2,
     "config": FSMConfig.to_dict(), "stream": StreamConfig.to_dict(),
     "state_dict": {...}, "metadata": {...}, **extra}

"config" is the architecture (the weights must match it); "stream" the run settings the
weights were trained with (chunking, elastic consolidation), the defaults for streaming them.
Version 1 files kept both in "config"; read_checkpoint converts them (upgrade_version_1).
A training checkpoint (train/lib.py) is the same file with extra entries (optimizer, RNG
states, step, flags), which load_checkpoint ignores.

Saving is atomic (write a temp file in the same folder, fsync, rename), so a crash mid-save
leaves the previous file intact. Loading refuses a file that does not match, saying what differs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from fsm.model import FSM, GS_RANGES, FSMConfig, StreamConfig

FORMAT = "fsm-view-checkpoint"
VERSION = 2


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


def save_checkpoint(
    path: str | Path, model: FSM, metadata: dict | None = None, dtype: torch.dtype | None = None, extra: dict | None = None
) -> None:
    """Write model config + weights (+ metadata). dtype=torch.float16 halves the file; the
    loader casts floating tensors back to float32. extra: more top-level entries, e.g. a training
    checkpoint's optimizer and RNG states (tensors and plain types, so weights_only loading works)."""
    clash = set(extra or {}) & {"format", "version", "config", "stream", "state_dict", "metadata"}
    if clash:
        raise ValueError(f"save_checkpoint: extra entries {sorted(clash)} would overwrite the checkpoint's own")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "config": model.config.to_dict(),
            "stream": model.stream.to_dict(),
            "state_dict": state,
            "metadata": metadata or {},
            **(extra or {}),
        },
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
    if ckpt.get("version") == 1:
        try:
            ckpt = upgrade_version_1(ckpt)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: version 1 checkpoint without a readable config ({type(e).__name__}: {e})") from None
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')} is not supported (this fsm-view reads versions 1 and {VERSION})")
    return ckpt


def upgrade_version_1(ckpt: dict) -> dict:
    """Version 1 -> 2, the only conversion: version 1 kept the run settings ("frames_per_chunk",
    "elastic") inside "config"; version 2 moves them, unchanged, to "stream". Version 1 also
    spelled out the paper head's depth range (0.01, 100), which version 2 leaves to the head
    (None): the same range."""
    config = dict(ckpt["config"])
    stream = {k: config.pop(k) for k in ("frames_per_chunk", "elastic") if k in config}
    if (config.get("gs_near"), config.get("gs_far")) == GS_RANGES["paper"]:
        config["gs_near"] = config["gs_far"] = None
    return {**ckpt, "version": 2, "config": config, "stream": stream}


def differences(saved, expected) -> list[str]:
    """'field: checkpoint a vs expected b' for each field where two configs of one dataclass
    (FSMConfig or StreamConfig) differ. The one rule for what a checkpoint must match: callers
    compare the architecture (load_checkpoint's expect=) and, to resume training, the run settings."""
    return [f"{k}: checkpoint {v!r} vs expected {getattr(expected, k)!r}" for k, v in vars(saved).items() if v != getattr(expected, k)]


def checkpoint_configs(path: str | Path, ckpt: dict) -> tuple[FSMConfig, StreamConfig]:
    """The architecture and run settings a (read_checkpoint) dict describes."""
    try:
        return FSMConfig.from_dict(ckpt["config"]), StreamConfig.from_dict(ckpt.get("stream", {}))
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from None


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", expect: FSMConfig | None = None, expect_heads: tuple[str, ...] = ()
) -> FSM:
    """Rebuild the model a checkpoint describes, in float32, in eval mode, on `device`.

    expect: refuse unless the checkpoint's architecture equals this config (names each field
    that differs). expect_heads: refuse unless these heads are present. model.metadata holds
    the training metadata; model.stream the run settings it was trained with.
    """
    ckpt = read_checkpoint(path)
    config, stream = checkpoint_configs(path, ckpt)
    differ = differences(config, expect) if expect is not None else []
    if differ:
        raise CheckpointError(f"{path}: model does not match — " + "; ".join(differ))
    missing_heads = set(expect_heads) - set(config.heads)
    if missing_heads:
        raise CheckpointError(f"{path}: has heads {list(config.heads)}, needs {sorted(missing_heads)}")
    model = FSM(config, stream)
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

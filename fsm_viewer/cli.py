"""The command line shared by fsm-view and fsm-render: options, defaults, loading the inputs.

No GUI here (fsm-render must not import viser), and torch/fsm are imported only inside
load_inputs, after the command line has been parsed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import tyro

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / "assets" / "sample" / "sample.mp4"
DEFAULT_CKPT = REPO / "assets" / "fsm-small.pt"
# Used when the product checkpoint has not been trained yet; it says what it is (metadata "notice").
PREVIEW_CKPT = REPO / "assets" / "fsm-small-cpu-preview.pt"


@dataclasses.dataclass
class ClipArgs:
    """The clip and model options shared by fsm-view and fsm-render."""

    clip: tyro.conf.Positional[Path] = DEFAULT_CLIP
    """Video, image folder, or camera file (cameras next to a video/folder are found by name).
    Default: the shipped sample clip."""
    ckpt: Path | None = None
    """Model checkpoint (.pt). Default: the shipped assets/fsm-small.pt (or the CPU preview)."""
    cameras: Path | None = None
    """Camera file to use instead of the one found next to the clip."""
    device: str = "auto"
    """torch device; "auto" = CUDA if present, else CPU."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute precision of the transformer blocks (fsm.precision): auto = bf16 where the device
    multiplies it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""
    frames_per_chunk: int | None = None
    """Frames per fast-weight update (default: the checkpoint's setting)."""
    max_frames: int | None = None
    """Read at most this many frames of the clip."""
    resolution: int = 128
    """Model input size: the frames' short side; the long side keeps the clip's aspect (a multiple
    of the patch, so a few pixels may be cropped from its ends)."""
    no_sfm: tyro.conf.FlagCreatePairsOff[bool] = False
    """With no camera file next to the clip, refuse instead of estimating cameras by structure
    from motion (COLMAP; written next to the clip and reused)."""


@dataclasses.dataclass
class Args(ClipArgs):
    """Stream a posed clip through an FSM model and explore it in the browser."""

    host: str = "127.0.0.1"
    """Address to serve on (0.0.0.0 to allow other machines)."""
    port: int = 8080
    """Port to serve on; the next free one is used if it is busy."""
    no_open: tyro.conf.FlagCreatePairsOff[bool] = False
    """Do not open the default browser."""


def fail(message: str, prog: str = "fsm-view") -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_inputs(clip: Path, ckpt: Path | None, cameras: Path | None, device: str, max_frames: int | None, resolution: int,
                sfm: bool = True, dtype: str = "auto"):
    """(FSM, Clip): checkpoint and clip, or exit with code 2 and one clear message (before any
    server starts)."""
    from fsm import load_checkpoint
    from fsm.checkpoint import CheckpointError
    from fsm.io import ClipError, load_clip
    from fsm.precision import resolve_dtype

    if ckpt is None:
        ckpt = next((c for c in (DEFAULT_CKPT, PREVIEW_CKPT) if c.is_file()), None)
        if ckpt is None:
            fail(
                f"no checkpoint given and the shipped one at {DEFAULT_CKPT} is missing; "
                "train one with `python train/pretrain.py` or pass --ckpt PATH"
            )
    try:
        model = load_checkpoint(ckpt, device=resolve_device(device))
        model.compute_dtype = resolve_dtype(dtype, next(model.parameters()).device)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    p = model.config.patch
    if resolution < p or resolution % p:
        fail(f"--resolution {resolution} must be a positive multiple of the model's patch size {p}")
    try:
        loaded = load_clip(clip, cameras=cameras, max_frames=max_frames, size=resolution, multiple=p, sfm=sfm)
    except (ClipError, ValueError) as e:
        fail(getattr(e, "cli", str(e)))
    if len(loaded) == 0:
        fail(f"{clip}: the clip has no frames")
    return model, loaded


def main(argv: list[str] | None = None) -> None:
    """fsm-view: parse, load, then start the GUI (imported only now)."""
    args = tyro.cli(Args, args=argv)
    model, clip = load_inputs(args.clip, args.ckpt, args.cameras, args.device, args.max_frames, args.resolution, not args.no_sfm, args.dtype)
    from fsm_viewer.app import serve

    serve(model, clip, args)


if __name__ == "__main__":
    main()

"""The command line shared by fsm-view and fsm-render: options, defaults, loading the inputs.

No GUI here (fsm-render must not import viser). torch and fsm are imported only inside
load_inputs: check_args refuses a bad command line (missing files, a file that is not a
checkpoint, impossible sizes) in a fraction of a second, before they load.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import zipfile
from pathlib import Path
from typing import Literal

import tyro

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / "assets" / "sample" / "sample.mp4"
DEFAULT_CKPT = REPO / "assets" / "fsm-small.pt"


@dataclasses.dataclass
class ClipArgs:
    """The clip and model options shared by fsm-view and fsm-render."""

    clip: tyro.conf.Positional[Path] = DEFAULT_CLIP
    """Video, image folder, or camera file (cameras next to a video/folder are found by name).
    Default: the shipped sample clip."""
    ckpt: Path | None = None
    """Model checkpoint (.pt). Default: the shipped assets/fsm-small.pt."""
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


def check_checkpoint_file(path: Path) -> str | None:
    """Why `path` cannot be a checkpoint, judged from the file alone (no torch), or None.
    torch.save writes a zip archive holding <name>/data.pkl."""
    if not path.is_file():
        return f"{path}: no such checkpoint file"
    if path.stat().st_size == 0:
        return f"{path}: not a readable fsm-view checkpoint (empty file)"
    if not zipfile.is_zipfile(path):
        return f"{path}: not a readable fsm-view checkpoint (not a file written by torch.save)"
    with zipfile.ZipFile(path) as z:
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
            return f"{path}: not a readable fsm-view checkpoint (a zip archive, but not one written by torch.save)"
    return None


def check_args(args: ClipArgs, prog: str = "fsm-view") -> None:
    """Every check that needs no torch: files exist and look right, sizes are possible."""
    if not args.clip.exists():
        fail(f"{args.clip}: file not found", prog)
    if args.clip.is_file() and args.clip.stat().st_size == 0:
        fail(f"{args.clip}: empty file", prog)
    if args.cameras is not None and not args.cameras.is_file():
        fail(f"--cameras {args.cameras}: file not found", prog)
    if args.ckpt is not None and (why := check_checkpoint_file(args.ckpt)):
        fail(why, prog)
    if args.resolution < 1:
        fail(f"--resolution {args.resolution} must be positive", prog)
    for flag, value in (("--frames-per-chunk", args.frames_per_chunk), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            fail(f"{flag} {value} must be at least 1", prog)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", args.device):
        fail(f"--device {args.device!r}: use auto, cpu, cuda, cuda:N or mps", prog)


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_inputs(clip: Path, ckpt: Path | None, cameras: Path | None, device: str, max_frames: int | None, resolution: int,
                sfm: bool = True, dtype: str = "auto", prog: str = "fsm-view"):
    """(FSM, Clip): checkpoint and clip, or exit with code 2 and one clear message (before any
    server starts)."""
    from fsm import load_checkpoint
    from fsm.checkpoint import CheckpointError
    from fsm.io import ClipError, load_clip
    from fsm.precision import resolve_dtype

    if ckpt is None:
        ckpt = DEFAULT_CKPT
        if not ckpt.is_file():
            fail(
                f"no checkpoint given and the shipped one at {DEFAULT_CKPT} is missing; "
                "train one with `python train/pretrain.py` or pass --ckpt PATH", prog,
            )
    try:
        model = load_checkpoint(ckpt, device=resolve_device(device))
        model.compute_dtype = resolve_dtype(dtype, next(model.parameters()).device)
    except (CheckpointError, ValueError) as e:
        message = str(e).splitlines()[0]
        if "UnpicklingError" in message:  # torch.load(weights_only=True) refused; not its advice
            message = f"{ckpt}: not a readable fsm-view checkpoint (it stores Python objects, not only tensors and settings)"
        fail(message, prog)
    p = model.config.patch
    if resolution < p or resolution % p:
        fail(f"--resolution {resolution} must be a positive multiple of the model's patch size {p}", prog)
    try:
        loaded = load_clip(clip, cameras=cameras, max_frames=max_frames, size=resolution, multiple=p, sfm=sfm)
    except (ClipError, ValueError) as e:
        fail(getattr(e, "cli", str(e)), prog)
    if len(loaded) == 0:
        fail(f"{clip}: the clip has no frames", prog)
    return model, loaded


def main(argv: list[str] | None = None) -> None:
    """fsm-view: parse, load, then start the GUI (imported only now)."""
    args = tyro.cli(Args, args=argv)
    check_args(args)
    if not 0 <= args.port <= 65535:
        fail(f"--port {args.port} is not a port number (0-65535)")
    model, clip = load_inputs(args.clip, args.ckpt, args.cameras, args.device, args.max_frames, args.resolution, not args.no_sfm, args.dtype)
    from fsm_viewer.app import serve

    serve(model, clip, args)


if __name__ == "__main__":
    main()

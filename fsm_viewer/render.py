"""fsm-render: the viewer's "Render video" without a browser.

    fsm-render clip.mp4 --ckpt fsm.pt --path path.json --out video.mp4

Streams the whole clip into the model (as the viewer's Start does), then renders every frame
of the camera path saved from the viewer's Path tab and writes an H.264 mp4.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tyro

from fsm.stream import StreamSession
from fsm_viewer.cli import ClipArgs, fail, load_inputs
from fsm_viewer.paths import CameraPath, PathError, render_path_video


@dataclasses.dataclass
class Args(ClipArgs):
    """Render a camera/time path (saved from fsm-view) through a streamed clip into an mp4."""

    path: Path = Path("path.json")
    """Camera path JSON saved from the viewer's Path tab."""
    out: Path = Path("video.mp4")
    """Output video (H.264 mp4)."""
    head: str | None = None
    """Decoding head (default: the checkpoint's first)."""


def run(args: Args) -> int:
    """Returns the number of frames written."""
    try:
        path = CameraPath.load(args.path)
    except PathError as e:
        fail(str(e))
    model, clip = load_inputs(args.clip, args.ckpt, args.cameras, args.device, args.max_frames, args.resolution, not args.no_sfm, args.dtype)
    head = args.head or model.config.heads[0]
    if head not in model.config.heads:
        fail(f"--head {head!r}: {args.ckpt} has heads {list(model.config.heads)}")
    session = StreamSession.for_clip(model, clip, model.stream_config(frames_per_chunk=args.frames_per_chunk))
    session.feed(clip.frames, clip.c2w, clip.fxfycxcy, clip.times)
    session.flush()
    render = lambda c2w, K, t, H, W: session.render(c2w, K, t, H, W, head=head).float().cpu()
    progress = lambda done, total: print(f"\rfsm-render: frame {done}/{total}", end="", file=sys.stderr, flush=True)
    n = render_path_video(render, path, args.out, model.config.patch, progress)
    print(f"\nfsm-render: wrote {n} frames to {args.out}", file=sys.stderr)
    return n


def main(argv: list[str] | None = None) -> None:
    run(tyro.cli(Args, args=argv))


if __name__ == "__main__":
    main()

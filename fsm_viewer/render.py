"""fsm-render: the viewer's "Render video" without a browser.

    fsm-render clip.mp4 --ckpt fsm.pt --path path.json --out video.mp4

Streams the whole clip into the model (as the viewer's Start does), with the stream settings
stored in the path file when it has them (the viewer saves its memory's), then renders every
frame of the camera path saved from the viewer's Path tab and writes an H.264 mp4. Progress
bars on stderr for both; the checkpoint's notice, if any, first.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tyro

from fsm_viewer.cli import ClipArgs, check_args, fail, load_inputs
from fsm_viewer.paths import CameraPath, PathError

PROG = "fsm-render"


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
    # everything that needs no model first: a bad command line is refused before torch loads
    check_args(args, PROG)
    try:
        path = CameraPath.load(args.path)
    except PathError as e:
        fail(str(e), PROG)
    if args.out.suffix.lower() != ".mp4":
        fail(f"--out {args.out}: the output is an H.264 .mp4 file", PROG)
    if not args.out.parent.is_dir():
        fail(f"--out {args.out}: folder {args.out.parent} does not exist", PROG)

    from tqdm import tqdm

    from fsm.model import StreamConfig
    from fsm.stream import StreamSession
    from fsm_viewer.video import render_path_video

    model, clip = load_inputs(args.clip, args.ckpt, args.cameras, args.device, args.max_frames, args.resolution, not args.no_sfm, args.dtype, PROG)
    if model.metadata.get("notice"):
        print(f"{PROG}: note: {model.metadata['notice']}", file=sys.stderr)
    head = args.head or model.config.heads[0]
    if head not in model.config.heads:
        fail(f"--head {head!r}: {args.ckpt} has heads {list(model.config.heads)}", PROG)
    try:  # the path's stream settings (what the viewer's memory had), --frames-per-chunk over them
        base = StreamConfig.from_dict(path.stream) if path.stream is not None else None
    except (TypeError, ValueError) as e:
        fail(f"{args.path}: unusable \"stream\" settings ({type(e).__name__}: {e})", PROG)
    stream = model.stream_config(base, frames_per_chunk=args.frames_per_chunk)
    session = StreamSession.for_clip(model, clip, stream)
    n = stream.frames_per_chunk
    with tqdm(total=len(clip), desc=f"{PROG}: streaming", unit="frame", file=sys.stderr) as bar:
        for a in range(0, len(clip), n):
            b = min(a + n, len(clip))
            session.feed(clip.frames[a:b], clip.c2w[a:b], clip.fxfycxcy[a:b], clip.times[a:b])
            bar.update(b - a)
        session.flush()
    render = lambda c2w, K, t, H, W: session.render(c2w, K, t, H, W, head=head).float().cpu()
    with tqdm(total=path.num_frames, desc=f"{PROG}: rendering", unit="frame", file=sys.stderr) as bar:
        frames = render_path_video(render, path, args.out, model.config.patch, lambda done, total: bar.update(done - bar.n))
    print(f"{PROG}: wrote {frames} frames to {args.out}", file=sys.stderr)
    return frames


def main(argv: list[str] | None = None) -> None:
    run(tyro.cli(Args, args=argv))


if __name__ == "__main__":
    main()

"""Video through PyAV: probe, decode selected frames, encode H.264.

Every PyAV/FFmpeg error is re-raised as a ClipError naming the file, so a broken video never
surfaces as a traceback from inside the decoder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import Interpolation
import numpy as np
import torch

from fsm.cameras import CoverCrop
from fsm.io.clip import ClipError

# swscale's default YUV->RGB path repeats each chroma sample over 2x2 pixels and reads about
# one level dark; full chroma interpolation + accurate rounding fixes both (12 dB better on a
# smooth colour test image) for ~1.5 ms per 512^2 frame.
_TO_RGB = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND


@dataclass
class VideoInfo:
    n_frames: int | None  # from the container; None when it does not say (e.g. some .webm)
    fps: float | None
    height: int
    width: int
    codec: str


@contextmanager
def _ffmpeg_errors(path: Path, doing: str):
    try:
        yield
    except av.error.FFmpegError as e:
        reason = e.strerror if getattr(e, "strerror", None) else str(e)
        raise ClipError(f"{path}: cannot {doing} video ({reason}; unreadable or truncated file?)") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise ClipError(f"{path}: no video stream in the file (zero frames)")
    return container.streams.video[0]


def probe_video(path: Path) -> VideoInfo:
    if not path.is_file():
        raise ClipError(f"{path}: video file not found")
    with _ffmpeg_errors(path, "open"), av.open(str(path)) as container:
        s = _video_stream(container, path)
        rate = s.average_rate or s.guessed_rate
        return VideoInfo(
            n_frames=s.frames or None,
            fps=float(rate) if rate else None,
            height=s.codec_context.height,
            width=s.codec_context.width,
            codec=s.codec_context.name,
        )


def count_video_frames(path: Path) -> int:
    """Frames in a video whose container does not say (e.g. some .webm): count the packets of the
    video stream, which needs no decoding."""
    with _ffmpeg_errors(path, "read"), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        return sum(1 for p in container.demux(stream) if p.size > 0)


def read_video_frames(path: Path, indices: list[int], crop: CoverCrop | None = None) -> torch.Tensor:
    """Frames at `indices` (increasing, in presentation order) -> (n,3,H,W) float32 in [0,1].

    Frames are counted as the decoder returns them; decoding stops at the last wanted frame and
    only wanted frames are converted to RGB.
    """
    info = probe_video(path)
    h, w = (crop.dst_h, crop.dst_w) if crop else (info.height, info.width)
    out = torch.empty(len(indices), 3, h, w)
    wanted = set(indices)
    batch: list[np.ndarray] = []  # uint8 (H,W,3) frames waiting for conversion
    done = 0  # frames of `out` filled so far

    def flush():
        # Converting and resizing a few frames at once is ~2x faster than one by one on CPU.
        nonlocal done
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)  # (B,3,H,W)
        # Resampling can overshoot [0, 1] by float rounding; the Clip contract is [0, 1].
        out[done : done + len(batch)] = crop.images(x).clamp_(0, 1) if crop else x
        done += len(batch)
        batch.clear()

    decoded = 0
    with _ffmpeg_errors(path, "decode"), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame + slice threads; decoded order is unchanged
        for frame in container.decode(stream):
            i = decoded
            decoded += 1
            if i not in wanted:
                continue
            if (frame.height, frame.width) != (info.height, info.width):
                raise ClipError(f"{path}: frame {i} is {frame.width}x{frame.height}, the stream {info.width}x{info.height}")
            batch.append(frame.to_ndarray(format="rgb24", interpolation=_TO_RGB))
            if len(batch) == 16:
                flush()
            if i == indices[-1]:
                break
    if decoded == 0:
        raise ClipError(f"{path}: the video has zero decodable frames")
    if decoded <= indices[-1]:
        raise ClipError(
            f"{path}: video ended after {decoded} frames but frame {indices[-1]} was asked for "
            f"(container says {info.n_frames}; truncated file or frame/camera count mismatch)"
        )
    if batch:
        flush()
    return out


def write_video(path: Path, frames: torch.Tensor, fps: float, crf: int = 18) -> None:
    """(N,3,H,W) float in [0,1] -> H.264 (libx264, yuv420p) in any container FFmpeg writes."""
    n, _, h, w = frames.shape
    if h % 2 or w % 2:
        raise ClipError(f"{path}: H.264 with yuv420p needs even width and height, got {w}x{h}")
    rgb = (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    with _ffmpeg_errors(path, "write"), av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001000), options={"crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[i]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush delayed frames

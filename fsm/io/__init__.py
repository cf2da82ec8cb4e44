"""Reading and writing clips: video or image folders plus one camera per frame.

    clip = load_clip("clip.mp4", size=256)     # sidecar cameras found next to the video
    write_clip("out.mp4", clip.frames, clip.cameras, clip.fps)   # + out.json

Formats and conventions: docs/clips.md.
"""

from fsm.io.clip import Cameras, Clip, ClipError
from fsm.io.formats import CAMERA_FORMATS, read_cameras, write_cameras
from fsm.io.load import load_clip
from fsm.io.write import write_clip, write_images

__all__ = [
    "CAMERA_FORMATS",
    "Cameras",
    "Clip",
    "ClipError",
    "load_clip",
    "read_cameras",
    "write_cameras",
    "write_clip",
    "write_images",
]

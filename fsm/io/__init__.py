"""Reading and writing clips: video or image folders plus one camera per frame.

    clip = load_clip("clip.mp4", size=256)     # sidecar cameras found next to the video
    write_clip("out.mp4", clip.frames, clip.cameras, clip.fps)   # + out.json
    estimate_cameras("phone.mp4")              # no camera file: COLMAP writes phone.json

Formats and conventions: docs/clips.md.
"""

from fsm.io.clip import Cameras, CamerasNotFound, Clip, ClipError
from fsm.io.formats import CAMERA_FORMATS, read_cameras, write_cameras
from fsm.io.load import load_clip
from fsm.io.sfm import estimate_cameras, sfm_cameras_path
from fsm.io.write import write_clip, write_images

__all__ = [
    "CAMERA_FORMATS",
    "Cameras",
    "CamerasNotFound",
    "Clip",
    "ClipError",
    "estimate_cameras",
    "load_clip",
    "read_cameras",
    "sfm_cameras_path",
    "write_cameras",
    "write_clip",
    "write_images",
]

"""Procedural 4D scenes rendered exactly by analytic ray casting.

There is no 4D data set to download, so training, evaluation and the shipped sample clip come
from here. One concept per module:

  vec.py       3-vector / 3x3 math written so a pixel's result never depends on its batch
  scene.py     the scene as plain tensors (planes, objects, textures, light, sky) and the
               closed-form motion of its objects (object_poses)
  tracing.py   exact ray-object and ray-plane hits, 8x8 ray tiles culled against bounding
               spheres; trace() (depth and object id per pixel)
  shading.py   procedural solid textures, Lambert + ambient light with hard shadows, sky;
               render() (images)
  builders.py  random scenes of three families: make_scene(seed, family)
  paths.py     camera trajectories (make_path -> Trajectory), frame_times, novel_cameras

Conventions: world z is up, lengths are metres-ish, time is in SECONDS (any real number; the
motions are defined for all t). Cameras are OpenCV c2w (x right, y down, z forward) with
fx fy cx cy in pixels, as in fsm.cameras.

    scene = make_scene(seed, family="room")             # deterministic by seed
    path = make_path(scene, kind="orbit")                # deterministic by scene seed and kind
    times = frame_times(96, fps=24.0)                    # (N,) seconds
    images = render(scene, path.c2w(times), path.fxfycxcy(len(times), 128, 128), times, 128, 128)

Everything random is drawn from a CPU torch.Generator seeded by the seed, so the same seed gives
bit-identical scene tensors everywhere and bit-identical renders on CPU.
"""

from fsm.data.synthetic.builders import FAMILIES, make_scene
from fsm.data.synthetic.paths import PATH_KINDS, Trajectory, frame_times, make_path, novel_cameras
from fsm.data.synthetic.tracing import trace
from fsm.data.synthetic.scene import (
    BLOBS, BOX, CHECKER, CYLINDER, ELLIPSOID, FLAT, GRADIENT, NOISE, STRIPES, Objects, Scene, Textures, new_objects,
    object_poses,
)  # fmt: skip
from fsm.data.synthetic.shading import render
from fsm.data.synthetic.vec import axis_angle

__all__ = [
    "BLOBS", "BOX", "CHECKER", "CYLINDER", "ELLIPSOID", "FAMILIES", "FLAT", "GRADIENT", "NOISE", "PATH_KINDS", "STRIPES",
    "Objects", "Scene", "Textures", "Trajectory", "axis_angle", "frame_times", "make_path", "make_scene", "new_objects",
    "novel_cameras", "object_poses", "render", "trace",
]  # fmt: skip

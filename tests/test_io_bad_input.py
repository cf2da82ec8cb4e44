"""Bad input to fsm.io: every case is one ClipError whose message names the file and the problem."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from fsm.io import ClipError, load_clip, write_cameras, write_clip, write_images
from fsm.io.video import write_video
from test_io import random_cameras, smooth_frames


def raises(fn, name: str, *problem: str) -> str:
    """fn() must raise ClipError naming `name` and containing every `problem` fragment."""
    with pytest.raises(ClipError) as info:
        fn()
    msg = str(info.value)
    assert name in msg, msg
    for fragment in problem:
        assert fragment in msg, msg
    return msg


@pytest.fixture
def clip_dir(tmp_path) -> Path:
    """A valid 6-frame clip: walk.mp4 + walk.json."""
    write_clip(tmp_path / "walk.mp4", smooth_frames(6, 48, 64), random_cameras(6, 48, 64), fps=30.0)
    return tmp_path


def own_cameras(tmp_path, name="cams.json", n=3, h=8, w=10, **edit) -> Path:
    """An fsm-view camera file; `edit` maps a frame number to a function changing its dict."""
    path = write_cameras(tmp_path / name, random_cameras(n, h, w), "fsm-view", fps=30.0)
    data = json.loads(path.read_text())
    for i, fn in edit.items():
        fn(data["frames"][int(i[1:])])
    path.write_text(json.dumps(data))
    return path


# ----------------------------------------------------------------------------------------------
# Videos


def test_truncated_video_without_index(clip_dir):
    video = clip_dir / "walk.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # the mp4 index (moov) is at the end: now gone
    raises(lambda: load_clip(video), "walk.mp4", "truncated")


def noise_video_index_first(path: Path, n: int = 30) -> bytes:
    """An mp4 with its index (moov) first (faststart); noise frames, so each frame is big."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(n):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            c.mux(s.encode(f))
        c.mux(s.encode())
    write_cameras(path.with_suffix(".json"), random_cameras(n, 48, 64), "fsm-view", fps=30.0)
    return path.read_bytes()


def test_truncated_video_with_index_first(tmp_path):
    # The container promises 30 frames, the data stops early.
    video = tmp_path / "cut.mp4"
    data = noise_video_index_first(video)
    video.write_bytes(data[: len(data) // 2])
    raises(lambda: load_clip(video), "cut.mp4", "truncated")


def test_corrupt_tail_is_not_decoded_when_not_needed(tmp_path):
    video = tmp_path / "tail.mp4"
    data = noise_video_index_first(video)
    half = len(data) // 2
    video.write_bytes(data[:half] + np.random.default_rng(1).bytes(len(data) - half))
    raises(lambda: load_clip(video), "tail.mp4", "cannot decode")
    # Decoding stops after the last frame asked for, so the intact start still loads.
    assert len(load_clip(video, max_frames=3)) == 3


def test_random_bytes_video(clip_dir):
    (clip_dir / "walk.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.mp4", "unreadable")


def test_zero_frame_video(tmp_path):
    video = tmp_path / "empty.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    write_cameras(tmp_path / "empty.json", random_cameras(2, 48, 64), "fsm-view", fps=30.0)
    raises(lambda: load_clip(video), "empty.mp4", "zero frames")


def test_count_mismatch_says_both_counts(clip_dir):
    (clip_dir / "walk.json").unlink()
    write_cameras(clip_dir / "walk.txt", random_cameras(5, 48, 64), "realestate10k")
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.mp4", "6 frames", "5 cameras", "mismatch")


def test_camera_index_beyond_video(clip_dir):
    write_cameras(clip_dir / "walk.json", random_cameras(9, 48, 64), "fsm-view", fps=30.0, video="walk.mp4")
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.mp4", "6 frames", "9 cameras", "mismatch")


def test_missing_files(clip_dir):
    raises(lambda: load_clip(clip_dir / "nope.mp4"), "nope.mp4", "not found")
    raises(lambda: load_clip(clip_dir / "walk.mp4", cameras=clip_dir / "nope.json"), "nope.json", "not found")
    data = json.loads((clip_dir / "walk.json").read_text())
    data["video"] = "gone.mp4"
    (clip_dir / "walk.json").write_text(json.dumps(data))
    raises(lambda: load_clip(clip_dir / "walk.json"), "gone.mp4", "not found")


def test_no_camera_file_next_to_video(clip_dir):
    (clip_dir / "walk.json").unlink()
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.mp4", "no camera file found", "walk.json")


def test_aspect_ratio_disagrees(clip_dir):
    write_cameras(clip_dir / "walk.json", random_cameras(6, 48, 48), "fsm-view", fps=30.0, video="walk.mp4")
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.json", "48x48", "64x48", "aspect")


# ----------------------------------------------------------------------------------------------
# Camera files


def test_nan_pose(tmp_path):
    path = own_cameras(tmp_path, f1=lambda f: f["c2w"][0].__setitem__(3, float("nan")))
    raises(lambda: load_clip(path), "cams.json", "camera 1", "non-finite")


def test_scaled_rotation_is_not_rigid(tmp_path):
    def scale(f):
        f["c2w"] = (np.array(f["c2w"]) @ np.diag([1.1, 1.1, 1.1, 1.0])).tolist()

    raises(lambda: load_clip(own_cameras(tmp_path, f2=scale)), "cams.json", "camera 2", "not a rigid pose")


def test_reflection_is_not_rigid(tmp_path):
    def mirror(f):
        f["c2w"] = (np.array(f["c2w"]) @ np.diag([-1.0, 1.0, 1.0, 1.0])).tolist()

    raises(lambda: load_clip(own_cameras(tmp_path, f0=mirror)), "cams.json", "camera 0", "det")


def test_missing_intrinsics(tmp_path):
    path = write_cameras(tmp_path / "opencv_cameras.json", random_cameras(2, 8, 10), "lact", image_files=["a.png", "b.png"])
    data = json.loads(path.read_text())
    del data[1]["fx"]
    path.write_text(json.dumps(data))
    raises(lambda: load_clip(path), "opencv_cameras.json", "entry 1", "'fx'", "missing intrinsics")
    # RealEstate10K: a line cut short.
    txt = tmp_path / "short.txt"
    txt.write_text("url\n" + " ".join(["1"] * 17) + "\n")
    raises(lambda: load_clip(txt), "short.txt", "line 2", "expected 19")
    # nerfstudio: neither a focal length nor a field of view.
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 8)).save(tmp_path / "img" / "0.png")
    ns = tmp_path / "transforms.json"
    ns.write_text(json.dumps({"frames": [{"file_path": "img/0.png", "transform_matrix": np.eye(4).tolist()}]}))
    raises(lambda: load_clip(ns), "transforms.json", "fl_x", "missing intrinsics")


def test_unknown_camera_formats(tmp_path):
    (tmp_path / "what.json").write_text(json.dumps({"foo": 1, "frames": [{"bar": 2}]}))
    raises(lambda: load_clip(tmp_path / "what.json"), "what.json", "unknown camera format")
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    raises(lambda: load_clip(tmp_path / "list.json"), "list.json", "unknown camera format")
    write_video(tmp_path / "v.mp4", smooth_frames(2, 48, 64), 30.0)
    (tmp_path / "v.yaml").write_text("cams: []")
    raises(lambda: load_clip(tmp_path / "v.mp4", cameras=tmp_path / "v.yaml"), "v.yaml", "unknown camera format")
    (tmp_path / "broken.json").write_text('{"format": "fsm-view-cameras", ')
    raises(lambda: load_clip(tmp_path / "broken.json"), "broken.json", "not valid JSON")
    own = json.loads(write_cameras(tmp_path / "new.json", random_cameras(1, 8, 8), fps=1.0).read_text())
    (tmp_path / "new.json").write_text(json.dumps({**own, "version": 99}))
    raises(lambda: load_clip(tmp_path / "new.json"), "new.json", "version 99")


# ----------------------------------------------------------------------------------------------
# Image folders and image paths


def test_zero_frame_folder(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    own_cameras(folder, "cameras.json")
    raises(lambda: load_clip(folder), "shots", "no images", "zero frames")


def test_mixed_image_sizes(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    own_cameras(folder, "cameras.json")
    Image.new("RGB", (10, 8)).save(folder / "0.png")
    Image.new("RGB", (10, 8)).save(folder / "1.png")
    Image.new("RGB", (12, 8)).save(folder / "2.png")
    raises(lambda: load_clip(folder), "2.png", "12x8", "10x8", "different aspect ratios")


def test_corrupt_image(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    own_cameras(folder, "cameras.json", n=2)
    Image.new("RGB", (10, 8)).save(folder / "0.png")
    (folder / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    raises(lambda: load_clip(folder), "1.png", "cannot read image")


@pytest.mark.parametrize("bad", ["../escape.png", "images/../../escape.png", "/etc/escape.png"])
def test_file_path_escaping_the_clip_folder(tmp_path, bad):
    clip = tmp_path / "clip"
    files = write_images(clip / "images", smooth_frames(2, 8, 10))
    Image.new("RGB", (10, 8)).save(tmp_path / "escape.png")  # exists, and is still refused
    rel = [f"images/{files[0].name}", bad]
    path = write_cameras(clip / "opencv_cameras.json", random_cameras(2, 8, 10), "lact", image_files=rel)
    raises(lambda: load_clip(path), "opencv_cameras.json", repr(bad), "escapes the clip folder")


def test_listed_image_missing(tmp_path):
    write_images(tmp_path / "images", smooth_frames(1, 8, 10))
    path = write_cameras(tmp_path / "opencv_cameras.json", random_cameras(2, 8, 10), "lact",
                         image_files=["images/00000.png", "images/00001.png"])
    raises(lambda: load_clip(path), "00001.png", "not found")


def test_nerfstudio_all_images_missing(tmp_path):
    path = write_cameras(tmp_path / "transforms.json", random_cameras(2, 8, 10), "nerfstudio", image_files=["a.png", "b.png"])
    with pytest.warns(UserWarning):
        raises(lambda: load_clip(path), "transforms.json", "none of the 2 images")


# ----------------------------------------------------------------------------------------------
# Writing


def test_write_clip_refuses_inconsistent_input(tmp_path):
    cams = random_cameras(4, 48, 64)
    raises(lambda: write_clip(tmp_path / "a.mp4", smooth_frames(3, 48, 64), cams, 30.0), "a.mp4", "3 frames", "4 cameras")
    raises(lambda: write_clip(tmp_path / "b.mp4", smooth_frames(4, 40, 64), cams, 30.0), "b.mp4", "64x40", "64x48")
    odd = random_cameras(2, 47, 64)
    raises(lambda: write_clip(tmp_path / "c.mp4", torch.zeros(2, 3, 47, 64), odd, 30.0), "c.mp4", "even")
    assert not (tmp_path / "a.json").exists()  # nothing half-written


# ----------------------------------------------------------------------------------------------
# Arguments, duplicates, times, encodings (issue 13, part 4)


@pytest.mark.parametrize("size", [0, -8, (0, 16), (16, -1), (16, 16, 3)])
def test_size_not_positive(clip_dir, size):
    raises(lambda: load_clip(clip_dir / "walk.mp4", size=size), "walk.mp4", "size must be")


def test_stride_zero_names_the_file(clip_dir):
    raises(lambda: load_clip(clip_dir / "walk.mp4", stride=0), "walk.mp4", "stride", ">= 1")
    raises(lambda: load_clip(clip_dir / "walk.mp4", max_frames=0), "walk.mp4", "max_frames", ">= 1")


@pytest.mark.parametrize("data", [
    {"camera_model": "OPENCV", "fl_x": 10, "frames": []},  # nerfstudio with no frames
    {"scene_name": "s", "video_path": "s.mp4", "frames": []},  # stereo4d
    [],  # LaCT list
])
def test_empty_frames_list(tmp_path, data):
    path = tmp_path / "cams.json"
    path.write_text(json.dumps(data))
    raises(lambda: load_clip(path), "cams.json", "is empty (zero cameras)")


def test_duplicate_frames(clip_dir, tmp_path):
    # two poses for one image
    files = write_images(tmp_path / "images", smooth_frames(3, 8, 10))
    rel = [str(f.relative_to(tmp_path)) for f in files]
    rel[2] = rel[1]
    write_cameras(tmp_path / "opencv_cameras.json", random_cameras(3, 8, 10), "lact", image_files=rel)
    raises(lambda: load_clip(tmp_path / "opencv_cameras.json"), "opencv_cameras.json", "00001.png", "duplicate")
    # one video frame listed twice
    data = json.loads((clip_dir / "walk.json").read_text())
    data["frames"][3]["index"] = 2
    (clip_dir / "walk.json").write_text(json.dumps(data))
    raises(lambda: load_clip(clip_dir / "walk.mp4"), "walk.json", "frame 2 is listed twice")


@pytest.mark.parametrize("times", [[0.0, 0.1, 0.1], [0.0, 0.2, 0.1]])
def test_times_repeat_or_go_backwards(tmp_path, times):
    path = own_cameras(tmp_path, **{f"f{i}": (lambda f, t=t: f.update(time=t)) for i, t in enumerate(times)})
    raises(lambda: load_clip(path), "cams.json", "timestamps must increase", "camera 2")


def test_json_with_byte_order_mark_is_accepted(clip_dir):
    side = clip_dir / "walk.json"
    side.write_bytes(b"\xef\xbb\xbf" + side.read_bytes())
    clip = load_clip(clip_dir / "walk.mp4")
    assert len(clip) == 6


def test_gif_clip_loads_as_a_video(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (20, 16), c) for c in colours]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    write_cameras(tmp_path / "anim.json", random_cameras(3, 16, 20), "fsm-view", fps=10.0, video="anim.gif")
    clip = load_clip(tmp_path / "anim.gif")
    torch.testing.assert_close(clip.frames.mean((2, 3)), torch.tensor(colours, dtype=torch.float32) / 255, atol=0.03, rtol=0)
    assert load_clip(tmp_path / "anim.json").frames.shape == (3, 3, 16, 20)  # the camera file finds the .gif too


def test_file_path_without_suffix(tmp_path):
    files = write_images(tmp_path / "images", smooth_frames(2, 8, 10))
    rel = [str(f.relative_to(tmp_path).with_suffix("")) for f in files]  # "images/00000"
    write_cameras(tmp_path / "opencv_cameras.json", random_cameras(2, 8, 10), "lact", image_files=rel)
    assert load_clip(tmp_path / "opencv_cameras.json").frames.shape == (2, 3, 8, 10)
    rel[1] = "images/gone"
    write_cameras(tmp_path / "opencv_cameras.json", random_cameras(2, 8, 10), "lact", image_files=rel)
    raises(lambda: load_clip(tmp_path / "opencv_cameras.json"), "gone", "not found", "no suffix")


def square_pixel_cameras(n, h, w):
    cams = random_cameras(n, h, w)
    cams.fxfycxcy[:, 1] = cams.fxfycxcy[:, 0]
    return cams


def test_realestate10k_intrinsics_for_another_aspect_warn(tmp_path):
    frames = smooth_frames(3, 48, 64)
    write_video(tmp_path / "clip.mp4", frames, 30.0)
    write_cameras(tmp_path / "clip.txt", square_pixel_cameras(3, 36, 64), "realestate10k")  # 16:9 intrinsics
    with pytest.warns(UserWarning, match=r"clip.txt.*1\.778:1.*64x48"):
        load_clip(tmp_path / "clip.mp4")
    write_cameras(tmp_path / "clip.txt", square_pixel_cameras(3, 48, 64), "realestate10k")  # matching aspect
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_clip(tmp_path / "clip.mp4")


def test_cli_wording_names_the_flag(clip_dir):
    (clip_dir / "walk.json").unlink()
    with pytest.raises(ClipError) as info:
        load_clip(clip_dir / "walk.mp4")
    assert "cameras=PATH" in str(info.value) and "--cameras PATH" in info.value.cli


@pytest.mark.parametrize("model", ["OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE624"])
def test_nerfstudio_camera_model_not_pinhole_is_refused(tmp_path, model):
    files = write_images(tmp_path / "images", smooth_frames(2, 8, 10))
    write_cameras(tmp_path / "transforms.json", random_cameras(2, 8, 10), "nerfstudio",
                  image_files=[str(f.relative_to(tmp_path)) for f in files])
    data = json.loads((tmp_path / "transforms.json").read_text())
    data["camera_model"] = model
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    raises(lambda: load_clip(tmp_path / "transforms.json"), "transforms.json", repr(model), "cannot use")


def test_nerfstudio_bad_intrinsic_matrix(tmp_path):
    files = write_images(tmp_path / "images", smooth_frames(1, 8, 10))
    write_cameras(tmp_path / "transforms.json", random_cameras(1, 8, 10), "nerfstudio", image_files=[str(files[0].relative_to(tmp_path))])
    data = json.loads((tmp_path / "transforms.json").read_text())
    for k in ("fl_x", "fl_y", "cx", "cy"):
        data.pop(k, None)
    data["frames"][0]["K"] = [[5.0, 0.0, 4.0], [0.0, 5.0, 4.0]]
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    raises(lambda: load_clip(tmp_path / "transforms.json"), "transforms.json", "intrinsic matrix")


def test_llff_bad_array_and_counts(tmp_path):
    np.save(tmp_path / "poses_bounds.npy", np.zeros((3, 15)))
    raises(lambda: load_clip(tmp_path / "poses_bounds.npy"), "poses_bounds.npy", "(N, 17)", "(3, 15)")
    a = np.zeros((3, 17))
    a[:, [1, 5, 12]] = 1.0  # a rigid [down, right, back] rotation
    a[:, 4], a[:, 9], a[:, 14] = 8, 10, 9  # h, w, focal
    np.save(tmp_path / "poses_bounds.npy", a)
    write_images(tmp_path / "images", smooth_frames(2, 8, 10))
    raises(lambda: load_clip(tmp_path), "poses_bounds.npy", "3 poses", "2 images")


def test_colmap_fisheye_refused(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "OPENCV_FISHEYE", 10.0, 10, 8))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.png", camera_id=1, image_id=1), pycolmap.Rigid3d())
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    rec.write_text(tmp_path / "sparse" / "0")
    write_images(tmp_path / "images", smooth_frames(1, 8, 10), pattern="a.png")
    raises(lambda: load_clip(tmp_path), "sparse/0", "OPENCV_FISHEYE", "cannot use")
    (tmp_path / "sparse" / "0" / "images.txt").write_text("garbage\n")
    with pytest.raises(ClipError, match="sparse/0"):
        load_clip(tmp_path)

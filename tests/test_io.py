"""fsm.io: reading the real Stereo4D clip, round trips through every camera format, projections
through converted cameras, write_clip -> load_clip. Bad input: tests/test_io_bad_input.py."""

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from fsm.cameras import project_points
from fsm.io import CAMERA_FORMATS, Cameras, ClipError, load_clip, read_cameras, write_cameras, write_clip, write_images
from fsm.io.video import write_video

DOG = SHARED_DATA / "stereo4d_dog"
DOG_JSON = DOG / "fZcNop_Aenw_88573338.jsonl"
DOG_VIDEO = DOG / "fZcNop_Aenw_88573338-left_rectified.mp4"
needs_dog = pytest.mark.skipif(not DOG_JSON.is_file(), reason=f"real clip not present at {DOG}")


# ----------------------------------------------------------------------------------------------
# Synthetic clips


def random_cameras(n: int, height: int, width: int, fps: float = 30.0, seed: int = 0) -> Cameras:
    """Random rigid poses (QR of Gaussian matrices, det +1), distinct fx/fy, off-centre cx/cy."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    q[torch.linalg.det(q) < 0, :, 0] *= -1
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = q
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    K = torch.tensor([0.9 * width, 0.8 * width, 0.47 * width, 0.53 * height]) * (1 + 0.01 * torch.arange(n))[:, None]
    times = torch.arange(n, dtype=torch.float64) / fps
    return Cameras(c2w=c2w.float(), fxfycxcy=K.float(), times=times, height=height, width=width)


def smooth_frames(n: int, height: int, width: int) -> torch.Tensor:
    """Low-frequency colour waves that move over time: compress well, so H.264 is near lossless."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    t = torch.arange(n, dtype=torch.float32)[:, None, None, None]
    c = torch.arange(3, dtype=torch.float32)[None, :, None, None]
    return 0.5 + 0.35 * torch.sin(2 * math.pi * (0.8 * x + 0.6 * y + 0.05 * t + c / 3))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def write_in_format(folder: Path, fmt: str, frames: torch.Tensor, cams: Cameras, fps: float) -> Path:
    """Frames + cameras written as `fmt` would be found in the wild; returns the camera file."""
    video_formats = {"fsm-view": "clip.json", "stereo4d": "clip.jsonl", "realestate10k": "clip.txt"}
    if fmt in video_formats:
        write_video(folder / "clip.mp4", frames, fps)
        return write_cameras(folder / video_formats[fmt], cams, fmt, fps=fps, video="clip.mp4")
    files = write_images(folder / "images", frames)
    rel = [str(f.relative_to(folder)) for f in files]
    name = {"nerfstudio": "transforms.json", "lact": "opencv_cameras.json"}[fmt]
    return write_cameras(folder / name, cams, fmt, image_files=rel)


# ----------------------------------------------------------------------------------------------
# The real clip


@needs_dog
def test_stereo4d_counts_and_cameras_from_file():
    raw = json.loads(DOG_JSON.read_text())
    cf = read_cameras(DOG_JSON)
    assert cf.format == "stereo4d" and len(cf) == 199
    assert cf.frame_indices.tolist() == list(range(199))
    assert cf.video == DOG_VIDEO
    with av.open(str(DOG_VIDEO)) as c:  # the container's own frame count, no decoding
        assert c.streams.video[0].frames == 199
    # c2w is the inverse of the file's w2c.
    w2c = np.array([f["w2c"] for f in raw["frames"]])
    np.testing.assert_allclose(cf.c2w @ w2c, np.broadcast_to(np.eye(4), w2c.shape), atol=1e-6)


@needs_dog
def test_stereo4d_video_with_discovered_sidecar_full_size():
    raw = json.loads(DOG_JSON.read_text())["frames"]
    clip = load_clip(DOG_VIDEO, stride=50, max_frames=4)  # the .jsonl is found from the video
    assert clip.source["camera_format"] == "stereo4d"
    assert clip.frames.shape == (4, 3, 512, 512)
    assert clip.source["frame_indices"] == [0, 50, 100, 150]
    f = raw[100]
    torch.testing.assert_close(clip.fxfycxcy[2], torch.tensor([f["fx"], f["fy"], f["cx"], f["cy"]]).float())
    torch.testing.assert_close(clip.c2w[2], torch.linalg.inv(torch.tensor(f["w2c"], dtype=torch.float64)).float())
    torch.testing.assert_close(clip.times, torch.tensor([0, 50, 100, 150], dtype=torch.float64) / 30)
    assert clip.fps == pytest.approx(30 / 50)
    # Frame 150 as PyAV decodes it with default settings (fsm.io interpolates chroma, so not
    # bit-equal: 45 dB apart; the neighbouring frames 149 and 151 are 34 and 36 dB away).
    with av.open(str(DOG_VIDEO)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == 150:
                ref = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255
                break
    assert psnr(clip.frames[3], ref) > 40


@needs_dog
def test_stereo4d_all_frames_at_128():
    clip = load_clip(DOG_JSON, size=128)  # decodes all 199 frames
    assert clip.frames.shape == (199, 3, 128, 128)
    assert 0 <= clip.frames.min() and clip.frames.max() <= 1 and clip.frames.std() > 0.05
    f0 = json.loads(DOG_JSON.read_text())["frames"][0]
    torch.testing.assert_close(clip.fxfycxcy[0], 0.25 * torch.tensor([f0["fx"], f0["fy"], f0["cx"], f0["cy"]]).float())
    torch.testing.assert_close(clip.times, torch.arange(199, dtype=torch.float64) / 30)
    assert (clip.cameras.height, clip.cameras.width) == (128, 128)


# ----------------------------------------------------------------------------------------------
# Every format: written, read back, compared with the true cameras


@pytest.mark.parametrize("fmt", CAMERA_FORMATS)
def test_format_round_trip(tmp_path, fmt):
    fps = 24.0
    cams = random_cameras(6, 48, 64, fps=fps, seed=1)
    frames = smooth_frames(6, 48, 64)
    cam_file = write_in_format(tmp_path, fmt, frames, cams, fps)
    clip = load_clip(cam_file)
    assert clip.source["camera_format"] == fmt
    assert clip.frames.shape == (6, 3, 48, 64)
    torch.testing.assert_close(clip.c2w, cams.c2w, atol=2e-6, rtol=0)
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy, atol=0, rtol=1e-6)
    # Image formats carry no times: frame position / 30 (the default rate).
    expected_times = cams.times if fmt != "nerfstudio" and fmt != "lact" else torch.arange(6, dtype=torch.float64) / 30
    torch.testing.assert_close(clip.times, expected_times, atol=1e-6, rtol=0)
    assert psnr(clip.frames, frames) > 35


def test_write_clip_load_clip_round_trip(tmp_path):
    cams = random_cameras(8, 48, 64, fps=25.0, seed=2)
    frames = smooth_frames(8, 48, 64)
    json_path = write_clip(tmp_path / "walk.mp4", frames, cams, fps=25.0)
    assert json_path == tmp_path / "walk.json"
    clip = load_clip(tmp_path / "walk.mp4")
    assert len(clip) == 8 and clip.frames.shape[-2:] == (48, 64) and clip.fps == 25.0
    assert torch.equal(clip.c2w, cams.c2w) and torch.equal(clip.fxfycxcy, cams.fxfycxcy)
    assert torch.equal(clip.times, cams.times)
    assert psnr(clip.frames, frames) > 35
    # Stride / max_frames pick frames and their cameras together.
    sub = load_clip(tmp_path / "walk.mp4", stride=3, max_frames=2)
    assert sub.source["frame_indices"] == [0, 3]
    assert torch.equal(sub.c2w, cams.c2w[[0, 3]])
    torch.testing.assert_close(sub.frames, clip.frames[[0, 3]])


# ----------------------------------------------------------------------------------------------
# Projections through converted cameras land on the right pixel


def test_nerfstudio_opengl_projection(tmp_path):
    # An OpenGL camera at `eye`, rotated about the world y axis; in OpenGL camera axes
    # (x right, y up, z backward) a point at camera coords (X, Y, Z<0) appears at
    # u = cx + fx X / -Z, v = cy - fy Y / -Z (image v grows downward).
    a = 0.3
    R_gl = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    eye = np.array([0.5, -0.2, 3.0])
    X_cam = np.array([0.4, 0.25, -2.0])
    point = R_gl @ X_cam + eye
    fx, fy, cx, cy = 70.0, 60.0, 31.0, 25.0
    u_true, v_true = cx + fx * X_cam[0] / -X_cam[2], cy - fy * X_cam[1] / -X_cam[2]

    write_images(tmp_path / "img", torch.full((1, 3, 48, 64), 0.5))
    c2w_gl = np.eye(4)
    c2w_gl[:3, :3], c2w_gl[:3, 3] = R_gl, eye
    (tmp_path / "transforms.json").write_text(json.dumps({
        "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": 64, "h": 48,
        "frames": [{"file_path": "img/00000.png", "transform_matrix": c2w_gl.tolist()}]}))
    clip = load_clip(tmp_path / "transforms.json")
    uv, z = project_points(torch.tensor(point).float()[None], clip.c2w[0], clip.fxfycxcy[0])
    assert z.item() == pytest.approx(2.0, abs=1e-5)  # in front of the camera, OpenCV z forward
    torch.testing.assert_close(uv[0], torch.tensor([u_true, v_true]).float(), atol=1e-4, rtol=0)


def test_realestate10k_normalised_intrinsics_projection(tmp_path):
    W, H = 64, 48  # non-square, so fx (by W) and fy (by H) scale differently
    fxn, fyn, cxn, cyn = 0.9, 1.1, 0.45, 0.55
    w2c = np.eye(4)[:3]  # camera at the origin looking down +z
    line = " ".join(map(str, [1000000, fxn, fyn, cxn, cyn, 0, 0, *w2c.reshape(-1)]))
    (tmp_path / "seq.txt").write_text("https://www.youtube.com/watch?v=x\n" + line + "\n")
    write_video(tmp_path / "seq.mp4", torch.full((1, 3, H, W), 0.5), 30.0)
    clip = load_clip(tmp_path / "seq.mp4")
    point = torch.tensor([[0.3, -0.2, 2.0]])
    uv, _ = project_points(point, clip.c2w[0], clip.fxfycxcy[0])
    expected = torch.tensor([fxn * W * 0.3 / 2 + cxn * W, fyn * H * -0.2 / 2 + cyn * H])
    torch.testing.assert_close(uv[0], expected, atol=1e-4, rtol=0)
    assert clip.times.tolist() == [1.0]


def blob_centroid(img: torch.Tensor) -> torch.Tensor:
    """(3,H,W) bright blob on black -> its centroid in pixel coordinates (+0.5 centres)."""
    w = img.mean(0).clamp(min=0)
    w = torch.where(w > 0.05 * w.max(), w, torch.zeros_like(w))
    v, u = torch.meshgrid(torch.arange(w.shape[0]) + 0.5, torch.arange(w.shape[1]) + 0.5, indexing="ij")
    return torch.stack([(w * u).sum(), (w * v).sum()]) / w.sum()


@pytest.mark.parametrize("size, out_hw", [((32, 32), (32, 32)), ((24, 40), (24, 40)), (16, (16, 24)), (20, (20, 32))])
def test_projection_after_resize_and_crop(tmp_path, size, out_hw):
    # A Gaussian blob drawn where a 3D point projects in a 96x64 image; after cover-resize + crop
    # the point projected through the returned cameras must sit on the blob.
    H, W = 64, 96
    cams = random_cameras(1, H, W, seed=3)
    c2w, K = cams.c2w[0], torch.tensor([80.0, 75.0, 50.0, 30.0])
    point = (c2w[:3, :3] @ torch.tensor([0.2, 0.1, 3.0]) + c2w[:3, 3])[None]
    uv0, _ = project_points(point, c2w, K)
    u0, v0 = uv0[0]
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    blob = torch.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * 5.0**2)).expand(1, 3, H, W)
    files = write_images(tmp_path / "frames", blob)
    cams = Cameras(c2w=c2w[None], fxfycxcy=K[None], times=cams.times, height=H, width=W)
    cam_file = write_cameras(tmp_path / "opencv_cameras.json", cams, "lact", image_files=[f"frames/{files[0].name}"])
    clip = load_clip(cam_file, size=size)  # an int is the short side; the long side a multiple of 8
    h, w = out_hw
    assert clip.frames.shape == (1, 3, h, w)
    uv, _ = project_points(point, clip.c2w[0], clip.fxfycxcy[0])
    scale = max(h / H, w / W)
    torch.testing.assert_close(blob_centroid(clip.frames[0]), uv[0], atol=0.05 + 0.1 * scale, rtol=0)
    # Focal lengths scale by the cover factor (up to rounding of the resized size).
    torch.testing.assert_close(clip.fxfycxcy[0, :2], K[:2] * scale, atol=0, rtol=0.02)


def test_intrinsics_rescaled_to_decoded_size(tmp_path):
    # Cameras stated for 128x96 images, frames stored at 64x48: intrinsics halve.
    cams = random_cameras(2, 96, 128, seed=4)
    write_video(tmp_path / "clip.mp4", smooth_frames(2, 48, 64), 30.0)
    write_cameras(tmp_path / "clip.json", cams, "fsm-view", fps=30.0, video="clip.mp4")
    clip = load_clip(tmp_path / "clip.mp4")
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy / 2)


# ----------------------------------------------------------------------------------------------
# Finding files; image folders


def test_sidecar_discovery_and_override(tmp_path):
    cams_a = random_cameras(3, 48, 64, seed=5)
    cams_b = random_cameras(3, 48, 64, seed=6)
    write_clip(tmp_path / "a.mp4", smooth_frames(3, 48, 64), cams_a, fps=30.0)
    write_cameras(tmp_path / "a.txt", cams_b, "realestate10k")
    clip = load_clip(tmp_path / "a.mp4")  # same-stem .json wins over .txt
    assert clip.source["camera_format"] == "fsm-view" and torch.equal(clip.c2w, cams_a.c2w)
    clip = load_clip(tmp_path / "a.mp4", cameras=tmp_path / "a.txt")
    assert clip.source["camera_format"] == "realestate10k"
    torch.testing.assert_close(clip.c2w, cams_b.c2w, atol=2e-6, rtol=0)


def test_image_folder_natural_order_and_rgba(tmp_path):
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for k in (10, 2, 1):  # lexical order would be 1, 10, 2
        Image.fromarray(np.full((8, 10, 3), 20 * k, np.uint8)).save(folder / f"f{k}.png")
    cams = random_cameras(3, 8, 10, fps=10.0, seed=7)
    write_cameras(folder / "cameras.json", cams, "fsm-view", fps=10.0)
    clip = load_clip(folder)
    assert [round(float(x) * 255) for x in clip.frames[:, 0, 0, 0]] == [20, 40, 200]
    torch.testing.assert_close(clip.times, torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
    # An RGBA frame (LaCT convention): composited on white.
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # red, half transparent
    Image.fromarray(rgba).save(folder / "f2.png")
    clip = load_clip(folder)
    a = 128 / 255
    torch.testing.assert_close(clip.frames[1, :, 0, 0], torch.tensor([1.0, 1 - a, 1 - a]), atol=1e-6, rtol=0)


def test_nerfstudio_missing_images_skipped_and_distortion_reported(tmp_path):
    cams = random_cameras(4, 48, 64, seed=8)
    write_images(tmp_path / "images", smooth_frames(4, 48, 64))
    rel = [f"images/{i:05d}.png" for i in range(4)]
    path = write_cameras(tmp_path / "transforms.json", cams, "nerfstudio", image_files=rel)
    data = json.loads(path.read_text())
    data["frames"] = [{**data["frames"][0], "file_path": "images/gone.png"}] + data["frames"]
    data["k1"] = -0.05
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning) as record:
        clip = load_clip(tmp_path)  # the folder: transforms.json is found inside it
    messages = " ".join(str(w.message) for w in record)
    assert "gone.png" in messages and "distortion" in messages
    assert clip.source["distortion"] == {"k1": -0.05}
    assert clip.source["skipped_missing_images"] == ["images/gone.png"]
    assert len(clip) == 4
    torch.testing.assert_close(clip.c2w, cams.c2w, atol=2e-6, rtol=0)


def test_instant_ngp_camera_angle_x(tmp_path):
    # Blender / instant-ngp style: field of view instead of focal length, no w/h, no suffix.
    write_images(tmp_path / "train", torch.full((1, 3, 40, 50), 0.5), pattern="r_{}.png")
    angle = 0.69
    (tmp_path / "transforms_train.json").write_text(json.dumps({
        "camera_angle_x": angle, "frames": [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]}))
    clip = load_clip(tmp_path / "transforms_train.json")
    f = 0.5 * 50 / math.tan(angle / 2)
    torch.testing.assert_close(clip.fxfycxcy[0], torch.tensor([f, f, 25.0, 20.0]))


def test_other_container_and_codec(tmp_path):
    # VP9 in WebM: a container that states no frame count, so counts are checked while decoding.
    frames, cams = smooth_frames(5, 48, 64), random_cameras(5, 48, 64, fps=30.0, seed=9)
    with av.open(str(tmp_path / "v.webm"), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=30, options={"crf": "10", "b": "0"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in (frames * 255).round().byte().permute(0, 2, 3, 1).numpy():
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    write_cameras(tmp_path / "v.json", cams, "fsm-view", fps=30.0, video="v.webm")
    clip = load_clip(tmp_path / "v.webm", max_frames=4)
    assert clip.source["codec"] == "vp9" and clip.frames.shape == (4, 3, 48, 64)
    assert psnr(clip.frames, frames[:4]) > 35
    write_cameras(tmp_path / "v.json", random_cameras(7, 48, 64), "fsm-view", fps=30.0, video="v.webm")
    with pytest.raises(ClipError, match=r"v\.webm: video ended after 5 frames but frame 6"):
        load_clip(tmp_path / "v.webm")


# ----------------------------------------------------------------------------------------------
# More camera layouts (issue 13, part 2)


@pytest.mark.parametrize("key", ["K", "intrinsic_matrix"])
def test_nerfstudio_intrinsics_as_a_matrix(tmp_path, key):
    cams = random_cameras(3, 24, 32)
    path = write_in_format(tmp_path, "nerfstudio", smooth_frames(3, 24, 32), cams, 30.0)
    data = json.loads(path.read_text())
    for f in data["frames"]:
        fx, fy, cx, cy = (f.pop(k) for k in ("fl_x", "fl_y", "cx", "cy"))
        f[key] = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
    path.write_text(json.dumps(data))
    clip = load_clip(path)
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy)
    torch.testing.assert_close(clip.c2w, cams.c2w, atol=1e-6, rtol=0)


def square_pixel_centred(n, h, w):
    """Cameras as LLFF states them: one focal length, principal point at the image centre."""
    cams = random_cameras(n, h, w)
    cams.fxfycxcy[:] = torch.tensor([0.9 * w, 0.9 * w, w / 2, h / 2])
    return cams


def test_llff_poses_bounds(tmp_path):
    n, h, w = 4, 24, 32
    cams = square_pixel_centred(n, h, w)
    c2w = cams.c2w.double().numpy()
    # LLFF's 3x5 [down, right, back | position | h w f], written here from the OpenCV axes
    m = np.concatenate([c2w[:, :3, 1:2], c2w[:, :3, 0:1], -c2w[:, :3, 2:3], c2w[:, :3, 3:4],
                        np.tile([[h], [w], [0.9 * w]], (n, 1, 1))], 2)
    np.save(tmp_path / "poses_bounds.npy", np.concatenate([m.reshape(n, 15), np.tile([0.5, 9.0], (n, 1))], 1))
    frames = smooth_frames(n, h, w)
    write_images(tmp_path / "images", frames, pattern="IMG_{}.png")  # natural order: IMG_2 before IMG_10
    write_images(tmp_path / "images_2", torch.nn.functional.avg_pool2d(frames, 2))
    clip = load_clip(tmp_path)  # the project folder: poses_bounds.npy inside, images/ first
    assert clip.source["camera_format"] == "llff" and clip.frames.shape == (n, 3, h, w)
    torch.testing.assert_close(clip.c2w, cams.c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy)
    half = load_clip(tmp_path / "images_2")  # a downsampled folder: intrinsics scaled to it
    assert half.frames.shape == (n, 3, h // 2, w // 2)
    torch.testing.assert_close(half.fxfycxcy, cams.fxfycxcy / 2)
    torch.testing.assert_close(half.c2w, cams.c2w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_sparse_model(tmp_path, binary):
    pycolmap = pytest.importorskip("pycolmap")
    n, h, w = 3, 24, 32
    cams = random_cameras(n, h, w)
    rec = pycolmap.Reconstruction()
    names = [f"frame_{i}.png" for i in (10, 2, 1)]  # model order differs from natural name order
    order = np.argsort([10, 2, 1])  # -> frames 1, 2, 10
    for cam_id, i in enumerate(range(n), start=1):
        fx, fy, cx, cy = cams.fxfycxcy[i].double().tolist()
        rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(cam_id, "PINHOLE", fx, w, h))
        rec.cameras[cam_id].params = [fx, fy, cx, cy]
        w2c = np.linalg.inv(cams.c2w[i].double().numpy())
        rec.add_image_with_trivial_frame(pycolmap.Image(name=names[i], camera_id=cam_id, image_id=i + 1), pycolmap.Rigid3d(w2c[:3]))
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(tmp_path / "sparse" / "0")
    frames = smooth_frames(n, h, w)
    (tmp_path / "images").mkdir()
    for i in range(n):
        write_images(tmp_path / "images", frames[i : i + 1], pattern=names[i])
    clip = load_clip(tmp_path)  # project folder with images/ beside sparse/
    assert clip.source["camera_format"] == "colmap"
    torch.testing.assert_close(clip.c2w, cams.c2w[order], atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy[order])
    torch.testing.assert_close(clip.frames, frames[order], atol=2 / 255, rtol=0)
    for other in (tmp_path / "sparse" / "0", tmp_path / "images"):  # the model itself, or the images folder
        torch.testing.assert_close(load_clip(other).c2w, clip.c2w)


def test_mixed_sizes_of_one_aspect(tmp_path):
    """Frames of different sizes but one aspect ratio: each is resized, its intrinsics scaled."""
    cams = random_cameras(3, 48, 64)
    frames = smooth_frames(3, 48, 64)
    files = write_images(tmp_path / "images", frames)
    Image.fromarray((frames[1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize((128, 96), Image.BICUBIC).save(files[1])
    Image.fromarray((frames[2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize((32, 24), Image.BOX).save(files[2])
    # the camera file states each frame at the size it was taken: 64x48, 128x96, 32x24
    per_frame = write_cameras(tmp_path / "transforms.json", cams, "nerfstudio", image_files=[f"images/{f.name}" for f in files])
    data = json.loads(per_frame.read_text())
    for i, (f, s) in enumerate(zip(data["frames"], (1, 2, 0.5))):
        f.update(w=64 * s, h=48 * s, **dict(zip(("fl_x", "fl_y", "cx", "cy"), (cams.fxfycxcy[i] * s).tolist())))
    per_frame.write_text(json.dumps(data))
    clip = load_clip(per_frame)  # default size: the first frame's, 64x48
    assert clip.frames.shape == (3, 3, 48, 64)
    torch.testing.assert_close(clip.fxfycxcy, cams.fxfycxcy, rtol=1e-5, atol=1e-4)
    assert psnr(clip.frames[1], frames[1]) > 30 and psnr(clip.frames[2], frames[2]) > 25
    small = load_clip(per_frame, size=24)  # short side 24 -> 24x32 for every frame
    assert small.frames.shape == (3, 3, 24, 32)
    torch.testing.assert_close(small.fxfycxcy, cams.fxfycxcy / 2, rtol=1e-5, atol=1e-4)


def test_non_square_clip_streams_and_renders(tmp_path):
    """A 64x48 clip at size=16 keeps its aspect (16x24 after a sliver of crop), streams through the
    model chunk by chunk and renders at its own and at other non-square sizes; a path export too."""
    from fsm.model import FSM
    from fsm.stream import StreamSession
    from fsm_viewer.paths import CameraPath, Keyframe
    from fsm_viewer.video import render_path_video

    cams = random_cameras(4, 48, 64)
    write_clip(tmp_path / "wide.mp4", smooth_frames(4, 48, 64), cams, fps=30.0)
    clip = load_clip(tmp_path / "wide.mp4", size=16)
    assert clip.frames.shape == (4, 3, 16, 24) and (clip.cameras.height, clip.cameras.width) == (16, 24)
    torch.manual_seed(0)
    model = FSM.from_preset("tiny", heads=("lvsm", "4dgs")).eval()
    session = StreamSession.for_clip(model, clip, stream=model.stream_config(frames_per_chunk=2))
    session.feed(clip.frames, clip.c2w, clip.fxfycxcy, clip.times)
    assert session.frames_ingested == 4 and session.image_size == (16, 24)
    for h, w in ((16, 24), (24, 16), (8, 32)):
        K = torch.tensor([w * 0.9, w * 0.9, w / 2, h / 2])
        for head in ("lvsm", "4dgs"):
            image = session.render(clip.c2w[1], K, float(clip.times[1]), h, w, head=head)
            assert image.shape == (3, h, w) and torch.isfinite(image).all()
    keys = [Keyframe(c2w=clip.c2w[i].numpy(), time=float(clip.times[i]), fov=1.0) for i in (0, 3)]
    path = CameraPath(keyframes=keys, fps=10.0, duration=0.3, height=16, aspect=1.5)
    n = render_path_video(lambda c, k, t, h, w: session.render(c, k, t, h, w), path, tmp_path / "path.mp4")
    with av.open(str(tmp_path / "path.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (24, 16) and n >= 1

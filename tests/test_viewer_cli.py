"""The command line: fsm-render imports no GUI; a bad command line is refused before torch loads;
fsm-render shows progress and streams with the settings saved in the path file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

import fsm
from fsm_viewer.paths import CameraPath, Keyframe
from tests.test_viewer import orbit_clip

REPO = Path(__file__).resolve().parents[1]


def imported_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_fsm_render_does_not_import_the_gui():
    modules = imported_after("import fsm_viewer.render")
    assert "fsm_viewer.render" in modules and "fsm_viewer.cli" in modules  # the check itself works
    assert "viser" not in modules and "fsm_viewer.app" not in modules and "fsm_viewer.panels" not in modules


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from fsm.io import write_clip

    tmp = tmp_path_factory.mktemp("cli")
    clip = orbit_clip(n=6, size=48)
    video = tmp / "clip.mp4"
    write_clip(video, clip.frames, clip.cameras, clip.fps)
    torch.manual_seed(0)
    model = fsm.FSM.from_preset("tiny")
    model.metadata = {"notice": "an untrained test model"}
    fsm.save_checkpoint(tmp / "tiny.pt", model, metadata=model.metadata)
    (tmp / "junk.pt").write_bytes(b"junk")
    (tmp / "empty.pt").write_bytes(b"")
    import zipfile

    with zipfile.ZipFile(tmp / "other.zip", "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    path = CameraPath([Keyframe(clip.c2w[0].double().numpy(), 0.0, 0.9), Keyframe(clip.c2w[5].double().numpy(), 0.5, 0.9)], fps=8, duration=1.0, height=32)
    path.save(tmp / "path.json")
    (tmp / "bad_path.json").write_text(json.dumps({"format": "nope"}))
    return tmp


def run_cli(tool: str, argv: list[str]) -> tuple[int, str, bool]:
    """(exit code, stderr, whether torch was imported) of fsm-view's or fsm-render's main in a
    fresh interpreter."""
    module = {"fsm-view": "fsm_viewer.cli", "fsm-render": "fsm_viewer.render"}[tool]
    code = (
        "import sys\n"
        f"from {module} import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "    code = 0\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('torch' in sys.modules, code)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    torch_loaded, exit_code = p.stdout.split()[-2:]
    return int(exit_code), p.stderr, torch_loaded == "True"


@pytest.mark.parametrize(
    "tool,argv,message",
    [
        ("fsm-view", ["{tmp}/nope.mp4", "--ckpt", "{tmp}/tiny.pt"], "nope.mp4: file not found"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/missing.pt"], "missing.pt: no such checkpoint file"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/junk.pt"], "junk.pt: not a readable fsm-view checkpoint"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/empty.pt"], "empty.pt: not a readable fsm-view checkpoint (empty file)"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/other.zip"], "other.zip: not a readable fsm-view checkpoint"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--cameras", "{tmp}/no.json"], "--cameras"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--max-frames", "0"], "--max-frames 0 must be at least 1"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--frames-per-chunk", "0"], "--frames-per-chunk 0"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--resolution", "0"], "--resolution 0"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--port", "70000"], "--port 70000"),
        ("fsm-view", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--device", "gpu"], "--device 'gpu'"),
        ("fsm-render", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--path", "{tmp}/none.json"], "none.json: cannot read camera path"),
        ("fsm-render", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--path", "{tmp}/bad_path.json"], "bad_path.json: not an fsm-view camera path"),
        ("fsm-render", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--path", "{tmp}/path.json", "--out", "{tmp}/v.gif"], "--out"),
        ("fsm-render", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/tiny.pt", "--path", "{tmp}/path.json", "--out", "{tmp}/no/v.mp4"], "does not exist"),
        ("fsm-render", ["{tmp}/clip.mp4", "--ckpt", "{tmp}/junk.pt", "--path", "{tmp}/path.json"], "junk.pt: not a readable"),
    ],
)
def test_bad_command_line_is_refused_before_torch_loads(files, tool, argv, message):
    code, err, torch_loaded = run_cli(tool, [a.format(tmp=files) for a in argv])
    assert code == 2
    assert err.startswith(f"{tool}: error: ") and err.strip().count("\n") == 0, err  # one line
    assert message in err, err
    assert not torch_loaded, "torch was imported before the command line was refused"


def test_fsm_render_progress_notice_and_the_paths_stream_settings(files, tmp_path, monkeypatch, capsys):
    from fsm.stream import StreamSession
    from fsm_viewer.render import main

    path = CameraPath.load(files / "path.json")
    path.stream = fsm.StreamConfig(frames_per_chunk=4, elastic=fsm.ElasticConfig.plain_lact()).to_dict()
    path.save(tmp_path / "path.json")
    sessions = []
    original = StreamSession.for_clip

    def spy(model, clip, stream=None, background=(0.0, 0.0, 0.0)):
        sessions.append(original(model, clip, stream, background))
        return sessions[-1]

    monkeypatch.setattr(StreamSession, "for_clip", staticmethod(spy))
    out = tmp_path / "video.mp4"
    main([str(files / "clip.mp4"), "--ckpt", str(files / "tiny.pt"), "--path", str(tmp_path / "path.json"), "--out", str(out), "--resolution", "32"])
    (session,) = sessions
    assert session.frames_per_chunk == 4 and session.elastic.lam == 0.0  # the path's settings
    assert [r.frames for r in session.history] == [4, 2]
    err = capsys.readouterr().err
    assert "fsm-render: note: an untrained test model" in err
    assert "fsm-render: streaming" in err and "6/6" in err and "fsm-render: rendering" in err and "8/8" in err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8

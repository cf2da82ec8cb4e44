"""Training samples (paper App. A.1) from the synthetic engine or from real clips, and the
held-out evaluation set.

A sample is a window of W consecutive frames of a camera trajectory. V_in input frames and
V_tgt target frames are drawn from it (disjoint, each sorted by time). For synthetic scenes a
share of the targets are *novel* cameras: displaced off the trajectory and rendered at an input
frame's time, i.e. true novel view-time pairs that no input saw. Timestamps are normalised to
[-1, 1] over the window (first frame -1, last +1) and poses are normalised per sample over the
input cameras with fsm.cameras.normalize_poses; targets get the same transform.

    source = SyntheticSource(SampleConfig(num_input=8, num_target=8, window=32), device="cuda")
    batch = source.sample(4, torch.Generator().manual_seed(0))   # Sample, B = 4
    batch.inputs.images  # (4, 8, 3, 128, 128)

    for inputs, targets in heldout_views("sparse", num_input=8, num_target=8):
        ...

Training scenes use seeds in TRAIN_SEEDS; held-out scenes use seeds below it, so the sampler can
never produce a held-out scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import torch

from fsm.cameras import PoseNormalization, normalize_poses, normalize_times
from fsm.data.synthetic import FAMILIES, PATH_KINDS, frame_times, make_path, make_scene, novel_cameras, render, trace
from fsm.model import Views

TRAIN_SEEDS = (1_000_000, 2**31 - 1)  # [low, high): every training scene's seed
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


@dataclass
class SampleConfig:
    num_input: int = 8
    num_target: int = 8
    window: int = 32  # frames the inputs and targets are drawn from
    height: int = 128
    width: int = 128
    novel_share: float = 0.25  # share of targets from off-trajectory cameras (synthetic only)
    fps: float = 24.0  # synthetic frame rate
    max_start: float = 30.0  # synthetic window starts uniformly in [0, max_start] seconds
    families: tuple[str, ...] = FAMILIES
    supersample: int = 1
    shadows: bool = True

    def __post_init__(self):
        if self.num_input < 1 or self.num_target < 0:
            raise ValueError(f"need num_input >= 1 and num_target >= 0, got {self.num_input}, {self.num_target}")
        n_on = self.num_target - self.num_novel
        if self.num_input + n_on > self.window:
            raise ValueError(f"window of {self.window} frames cannot hold {self.num_input} inputs + {n_on} on-trajectory targets")
        if not 0.0 <= self.novel_share <= 1.0:
            raise ValueError(f"novel_share must be in [0, 1], got {self.novel_share}")

    @property
    def num_novel(self) -> int:
        return round(self.novel_share * self.num_target)


@dataclass
class Sample:
    """A batch of B samples in the model's frame (normalised poses, times in [-1, 1])."""

    inputs: Views  # images (B,V_in,3,H,W), c2w (B,V_in,4,4), fxfycxcy (B,V_in,4), times (B,V_in)
    targets: Views  # the same with V_tgt views
    normalization: list[PoseNormalization]  # per sample: world -> model frame
    time_span: torch.Tensor  # (B,2) float64 seconds of the window's first and last frame
    novel: torch.Tensor  # (B,V_tgt) bool: target camera is off the trajectory
    meta: list[dict] = field(default_factory=list)  # per sample: where it came from
    # (B,V_in,H,W) distance along each input pixel's ray in model units (inf: sky); synthetic
    # scenes only (the engine traces it exactly), None for real clips
    input_depth: torch.Tensor | None = None


class SampleSource(Protocol):
    def sample(self, batch_size: int, generator: torch.Generator) -> Sample: ...


# ----------------------------------------------------------------------------------------------
# Shared assembly


def _assemble(images, c2w, fxfycxcy, times, is_input, span, novel, meta, depth=None) -> Sample:
    """One sample (B=1) from per-view world-frame tensors; is_input (V,) bool splits the views.

    Inputs and targets are each sorted by time; poses normalised over the inputs. depth (V,H,W)
    world distances along the pixel rays (optional) is kept for the inputs, in model units.
    """
    device = images.device
    out = []
    for mask in (is_input, ~is_input):
        idx = mask.nonzero().squeeze(1)
        idx = idx[torch.argsort(times[idx], stable=True)]
        out.append(idx)
    i_in, i_tgt = out
    c2w_in, norm = normalize_poses(c2w[i_in].cpu())
    c2w_tgt = norm.c2w_to_normalized(c2w[i_tgt].cpu())
    t_norm = normalize_times(times, span).to(torch.float32)

    def views(idx, c2w_n):
        return Views(c2w_n[None].to(device), fxfycxcy[idx][None].to(device), t_norm[idx][None].to(device), images[idx][None])

    input_depth = None if depth is None else (depth[i_in.to(depth.device)] / norm.scale)[None]
    return Sample(
        views(i_in, c2w_in), views(i_tgt, c2w_tgt), [norm], torch.tensor([span], dtype=torch.float64), novel[i_tgt][None], [meta],
        input_depth,
    )


def collate(samples: list[Sample]) -> Sample:
    """Stack samples along the batch axis."""
    cat = lambda views: Views(*(torch.cat([getattr(v, k) for v in views]) for k in ("c2w", "fxfycxcy", "times", "images")))
    return Sample(
        cat([s.inputs for s in samples]),
        cat([s.targets for s in samples]),
        [n for s in samples for n in s.normalization],
        torch.cat([s.time_span for s in samples]),
        torch.cat([s.novel for s in samples]),
        [m for s in samples for m in s.meta],
        None if any(s.input_depth is None for s in samples) else torch.cat([s.input_depth for s in samples]),
    )


# ----------------------------------------------------------------------------------------------
# Synthetic source


def synthetic_sample(seed: int, family: str, path_kind: str | None, path_variant: int, cfg: SampleConfig,
                     generator: torch.Generator, device="cpu") -> Sample:  # fmt: skip
    """One training sample (B=1) from scene `seed`; frame choice and novel cameras use `generator`."""
    scene = make_scene(seed, family)
    path = make_path(scene, path_kind, path_variant)
    start = float(torch.rand((), generator=generator, dtype=torch.float64)) * cfg.max_start
    window_times = frame_times(cfg.window, cfg.fps, start)  # (W,) seconds
    n_novel = cfg.num_novel
    n_on = cfg.num_target - n_novel
    pick = torch.randperm(cfg.window, generator=generator)[: cfg.num_input + n_on]
    frames_in, frames_on = pick[: cfg.num_input], pick[cfg.num_input :]
    # Novel targets: each displaced off the trajectory camera of a random input frame, same time.
    source = frames_in[torch.randint(cfg.num_input, (n_novel,), generator=generator)]
    c2w_path = path.c2w(window_times)
    c2w = torch.cat([c2w_path[frames_in], c2w_path[frames_on], novel_cameras(scene, c2w_path[source], generator)])
    times = torch.cat([window_times[frames_in], window_times[frames_on], window_times[source]])
    V = times.shape[0]
    fxfycxcy = path.fxfycxcy(V, cfg.height, cfg.width)
    images = render(scene, c2w, fxfycxcy, times, cfg.height, cfg.width, device=device,
                    supersample=cfg.supersample, shadows=cfg.shadows)  # fmt: skip
    is_input = torch.arange(V) < cfg.num_input
    novel = torch.arange(V) >= cfg.num_input + n_on
    depth = _input_depth(scene, c2w, fxfycxcy, times, is_input, cfg.height, cfg.width, device)
    frames = torch.cat([frames_in, frames_on, source])
    meta = dict(source="synthetic", seed=seed, family=scene.family, path=path.kind, path_variant=path_variant,
                start=start, frames=frames.tolist())  # fmt: skip
    span = (float(window_times[0]), float(window_times[-1]))
    return _assemble(images, c2w, fxfycxcy.to(device), times, is_input, span, novel, meta, depth)


def _input_depth(scene, c2w, fxfycxcy, times, is_input, height, width, device) -> torch.Tensor:
    """(V,H,W) exact distance along each pixel ray for the input views (inf elsewhere and in the sky)."""
    depth = torch.full((c2w.shape[0], height, width), float("inf"), device=device)
    idx = is_input.nonzero().squeeze(1)
    depth[idx.to(device)] = trace(scene, c2w[idx], fxfycxcy[idx], times[idx], height, width, device=device)[0]
    return depth


class SyntheticSource:
    """Infinite training samples from the procedural engine, rendered on `device`.

    Scene seeds are drawn from TRAIN_SEEDS, families from cfg.families, camera paths at random.
    """

    def __init__(self, cfg: SampleConfig, device="cpu"):
        unknown = set(cfg.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown scene families {sorted(unknown)}; expected some of {FAMILIES}")
        self.cfg, self.device = cfg, torch.device(device)

    def sample(self, batch_size: int, generator: torch.Generator) -> Sample:
        items = []
        for _ in range(batch_size):
            seed, family, kind, variant = draw_training_scene(generator, self.cfg.families)
            items.append(synthetic_sample(seed, family, kind, variant, self.cfg, generator, self.device))
        return collate(items)


def draw_training_scene(generator: torch.Generator, families=FAMILIES) -> tuple[int, str, str, int]:
    """(seed, family, path kind, path variant) of a random training scene; seed in TRAIN_SEEDS."""
    seed = int(torch.randint(*TRAIN_SEEDS, (1,), generator=generator))
    family = families[int(torch.randint(len(families), (1,), generator=generator))]
    kind = PATH_KINDS[int(torch.randint(len(PATH_KINDS), (1,), generator=generator))]
    variant = int(torch.randint(1 << 20, (1,), generator=generator))
    return seed, family, kind, variant


# ----------------------------------------------------------------------------------------------
# Real clips


def find_clips(paths) -> list[Path]:
    """Clip paths from files and folders: a folder holding videos or sub-folders is a folder of
    clips (videos by suffix, each sub-folder one image-folder clip); any other folder is a clip."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such clip or folder")
        if p.is_file():
            found.append(p)
            continue
        videos = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
        subdirs = sorted(q for q in p.iterdir() if q.is_dir())
        found += videos + subdirs if videos or subdirs else [p]
    if not found:
        raise ValueError(f"no clips found in {[str(p) for p in paths]}")
    return found


class ClipSource:
    """Training samples from real posed clips (anything fsm.io.load_clip reads).

    Clips are loaded on first use at the training resolution (resize to cover + centre crop,
    intrinsics adjusted by load_clip) and the last `cache` of them kept in memory. All targets
    are on the trajectory (cfg.novel_share is ignored): a real clip has no image for an invented
    camera.
    """

    def __init__(self, paths, cfg: SampleConfig, device="cpu", cache: int = 16):
        if cfg.num_input + cfg.num_target > cfg.window:  # every target is a clip frame (novel_share is ignored)
            raise ValueError(f"window of {cfg.window} frames cannot hold {cfg.num_input} inputs + {cfg.num_target} targets")
        self.paths = find_clips(paths if isinstance(paths, (list, tuple)) else [paths])
        self.cfg, self.device, self.cache_size = cfg, torch.device(device), cache
        self._cache: dict[Path, object] = {}

    def _clip(self, path: Path):
        from fsm.io import load_clip  # fsm.io pulls in PyAV; only this source needs it

        if path not in self._cache:
            clip = load_clip(path, size=(self.cfg.height, self.cfg.width))
            need = self.cfg.num_input + self.cfg.num_target
            if len(clip) < need:
                raise ValueError(f"{path}: {len(clip)} frames, fewer than the {need} inputs + targets a sample needs")
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = clip
        return self._cache[path]

    def sample(self, batch_size: int, generator: torch.Generator) -> Sample:
        cfg, items = self.cfg, []
        for _ in range(batch_size):
            path = self.paths[int(torch.randint(len(self.paths), (1,), generator=generator))]
            clip = self._clip(path)
            W = min(cfg.window, len(clip))
            start = int(torch.randint(len(clip) - W + 1, (1,), generator=generator))
            n = cfg.num_input + cfg.num_target
            frames = start + torch.randperm(W, generator=generator)[:n]
            times = clip.times.to(torch.float64)
            span = (float(times[start]), float(times[start + W - 1]))
            is_input = torch.arange(n) < cfg.num_input
            meta = dict(source="clip", path=str(path), start=start, frames=frames.tolist())
            items.append(_assemble(clip.frames[frames].to(self.device), clip.c2w[frames], clip.fxfycxcy[frames],
                                   times[frames], is_input, span, torch.zeros(n, dtype=torch.bool), meta))  # fmt: skip
        return collate(items)


# ----------------------------------------------------------------------------------------------
# Held-out evaluation set


@dataclass(frozen=True)
class HeldoutScene:
    seed: int
    family: str
    path: str


# Fixed forever: every family with every camera path kind. Seeds are below TRAIN_SEEDS.
HELDOUT_SCENES = tuple(HeldoutScene(seed=k, family=FAMILIES[k % 3], path=PATH_KINDS[k // 3]) for k in range(12))
# Validation: built like the held-out set from seeds that neither training nor the held-out set
# uses, for choices made after training (train/calibrate_sweep.py) without looking at the test set.
VALIDATION_SCENES = tuple(HeldoutScene(seed=12 + k, family=FAMILIES[k % 3], path=PATH_KINDS[k // 3]) for k in range(12))
REGIMES = ("sparse", "continuous", "novel")


def heldout_samples(regime: str, num_input: int = 8, num_target: int = 8, height: int = 128, width: int = 128,
                    window: int | None = None, scenes=HELDOUT_SCENES, device="cpu", fps: float = 24.0,
                    supersample: int = 1) -> Iterator[Sample]:  # fmt: skip
    """One Sample (B=1) per held-out scene, the same on every call.

    sparse: a window (default 4 (V_in + V_tgt) frames) with the inputs spread evenly across it
        (first and last frame included) and the targets drawn among the frames in between.
    continuous: a contiguous run of V_in + V_tgt frames; targets are randomly masked frames
        inside it (never the first or last), the rest are inputs (frame interpolation, paper Fig. 5).
    novel: the inputs of "sparse"; every target is a camera displaced 0.5-1.5 m off the
        trajectory (fsm.data.synthetic.novel_cameras) at the time of a random input frame: the
        views a 4D model exists for, which no input saw.
    Every sample carries the inputs' exact depth (Sample.input_depth).
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown evaluation regime {regime!r}; expected one of {REGIMES}")
    n = num_input + num_target
    for sc in scenes:
        if sc.seed >= TRAIN_SEEDS[0]:
            raise ValueError(f"held-out scene seed {sc.seed} lies in the training range {TRAIN_SEEDS}")
        g = torch.Generator().manual_seed(sc.seed * 31 + REGIMES.index(regime))
        if regime in ("sparse", "novel"):
            W = window or 4 * n
            inputs = torch.linspace(0, W - 1, num_input).round().long().unique()
            rest = torch.tensor([f for f in range(W) if f not in set(inputs.tolist())])
            targets = rest[torch.randperm(rest.numel(), generator=g)[:num_target]]
        else:
            W = n
            inner = 1 + torch.randperm(W - 2, generator=g)[:num_target]
            targets = inner
            inputs = torch.tensor([f for f in range(W) if f not in set(inner.tolist())])
        if inputs.numel() != num_input or targets.numel() != num_target:
            raise ValueError(f"{regime}: a window of {W} frames cannot hold {num_input} inputs and {num_target} targets")
        scene = make_scene(sc.seed, sc.family)
        path = make_path(scene, sc.path)
        window_times = frame_times(W, fps)
        novel = torch.arange(n) >= num_input if regime == "novel" else torch.zeros(n, dtype=torch.bool)
        if regime == "novel":  # each target: off the trajectory, at the time of a random input
            targets = inputs[torch.randint(num_input, (num_target,), generator=g)]
        frames = torch.cat([inputs, targets])
        c2w, times = path.c2w(window_times[frames]), window_times[frames]
        if regime == "novel":
            c2w[num_input:] = novel_cameras(scene, c2w[num_input:], g)
        fxfycxcy = path.fxfycxcy(n, height, width)
        images = render(scene, c2w, fxfycxcy, times, height, width, device=device, supersample=supersample)
        is_input = torch.arange(n) < num_input
        depth = _input_depth(scene, c2w, fxfycxcy, times, is_input, height, width, device)
        meta = dict(source="heldout", regime=regime, seed=sc.seed, family=sc.family, path=sc.path, frames=frames.tolist())
        span = (float(window_times[0]), float(window_times[-1]))
        yield _assemble(images, c2w, fxfycxcy.to(device), times, is_input, span, novel, meta, depth)


def heldout_views(regime: str, **kwargs) -> Iterator[tuple[Views, Views]]:
    """(inputs, targets) per held-out scene, in the order of HELDOUT_SCENES; see heldout_samples."""
    for s in heldout_samples(regime, **kwargs):
        yield s.inputs, s.targets

"""StreamSession: feed a clip chunk by chunk, read the memory's statistics, render any (camera, time).

This is the public API the viewer and scripts use:

    model = fsm.load_checkpoint(path, device="cpu")
    session = StreamSession.for_clip(model, clip)           # or StreamSession(model, clip_norm, stream)
    records = session.feed(images, c2w, fxfycxcy, times)   # whole chunks are processed as they fill
    session.flush()                                         # process the partial tail, if any
    image = session.render(c2w, fxfycxcy, time, height, width)     # head="4dgs" with that head
    gaussians = session.gaussians(time)                     # 4DGS head: 3D Gaussians at that time
    session.history                                         # one ChunkRecord per processed chunk
    session.state(layer)                                    # that layer's ElasticState

Cameras and times are given in the clip's own world frame and seconds; the session maps them
into the model's frame with its ClipNormalization (pose normalisation + time span).
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass

import torch

from fsm.cameras import ClipNormalization
from fsm.gaussians import Gaussians3D, Gaussians4D
from fsm.lacet import ElasticConfig, ElasticState, UpdateStats
from fsm.model import FSM, StreamConfig, Views
from fsm.splat import MARGINAL_CULL, frame_order, render_4dgs, slice_visible, widen


@dataclass
class ChunkRecord:
    """What happened when one chunk was ingested."""

    index: int  # chunk number, from 0
    frames: int  # frames in this chunk
    frames_total: int  # frames ingested so far, this chunk included
    time_range: tuple[float, float]  # first and last frame time (seconds)
    seconds: float  # wall time of the update
    layers: list[UpdateStats]  # per layer: drift, update norm, importance summary per matrix

    def to_dict(self) -> dict:
        return asdict(self)


class StreamSession:
    def __init__(
        self,
        model: FSM,
        clip_norm: ClipNormalization | None = None,
        stream: StreamConfig | None = None,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ):
        """clip_norm: the clip's world frame and seconds -> the model's (default: identity, times
        already in [-1, 1]; for a clip use StreamSession.for_clip). stream: chunking, elastic
        settings, 4DGS virtual-view budget (default: the model's, model.stream).
        background: 4DGS head's render background colour."""
        self.model = model
        self.clip_norm = clip_norm if clip_norm is not None else ClipNormalization()
        self.stream = model.stream_config(stream)
        self.device = next(model.parameters()).device
        self.history: list[ChunkRecord] = []
        self.frames_ingested = 0
        self.image_size: tuple[int, int] | None = None  # (H, W) of the fed frames
        self._pending: list[tuple[torch.Tensor, ...]] = []  # frames waiting for a full chunk
        # 4DGS head: a bounded, evenly strided subset of the fed frames (model frame), re-queried
        # as virtual views; the decoded Gaussians are cached until the next chunk.
        self.background = torch.tensor(background, dtype=torch.float32, device=self.device)
        self._virtual: list[Views] = []
        self._virtual_stride = 1
        self._gaussians: Gaussians4D | None = None
        # geo 4DGS head: whole chunks kept (evenly spread, at most max_kept_frames frames), each with
        # the gs_sweep_back chunks fed before it (its extra plane-sweep sources); a render at time t
        # decodes the kept frames nearest t, cached per frame until the next chunk
        self._kept: list[tuple[Views, list[Views]]] = []  # (chunk, the chunks before it)
        self._recent: list[Views] = []  # the last gs_sweep_back chunks fed
        self._kept_stride = 1
        self._decoded_frames: dict[tuple[int, int], Gaussians4D] = {}
        with torch.inference_mode():
            self._states = model.init_states(1, self.elastic)

    @staticmethod
    def for_clip(model: FSM, clip, stream: StreamConfig | None = None, background=(0.0, 0.0, 0.0)) -> "StreamSession":
        """A session for a clip (anything with c2w (N,4,4) and times (N,), e.g. fsm.io.Clip): poses
        normalised over all its cameras, its [first, last] time mapped to [-1, 1]."""
        return StreamSession(model, ClipNormalization.for_clip(clip.c2w, clip.times), stream, background)

    # -- reading -------------------------------------------------------------------------------

    @property
    def frames_per_chunk(self) -> int:
        return self.stream.frames_per_chunk

    @property
    def elastic(self) -> ElasticConfig:
        return self.stream.elastic

    @property
    def num_layers(self) -> int:
        return len(self._states)

    @property
    def pending_frames(self) -> int:
        return sum(p[0].shape[0] for p in self._pending)

    def state(self, layer: int) -> ElasticState:
        return self._states[layer]

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, images, c2w, fxfycxcy, times) -> list[ChunkRecord]:
        """Queue frames (N,3,H,W) [0,1], (N,4,4), (N,4), (N,) seconds; ingest every full chunk.

        Returns the records of the chunks processed by this call (possibly none).
        """
        images, c2w, fxfycxcy, times = self._check_frames(images, c2w, fxfycxcy, times)
        self._pending.append((images, c2w, fxfycxcy, times))
        records = []
        while self.pending_frames >= self.frames_per_chunk:
            records.append(self._ingest(self._take(self.frames_per_chunk)))
        return records

    def flush(self) -> ChunkRecord | None:
        """Ingest the frames still waiting (a partial last chunk)."""
        if not self.pending_frames:
            return None
        return self._ingest(self._take(self.pending_frames))

    def _take(self, n: int) -> tuple[torch.Tensor, ...]:
        merged = [torch.cat(parts) for parts in zip(*self._pending)]
        chunk = [m[:n] for m in merged]
        rest = [m[n:] for m in merged]
        self._pending = [tuple(rest)] if rest[0].shape[0] else []
        return tuple(chunk)

    @torch.inference_mode()
    def _ingest(self, frames: tuple[torch.Tensor, ...]) -> ChunkRecord:
        images, c2w, fxfycxcy, times = frames
        start = _time.perf_counter()
        views = self._views(c2w, fxfycxcy, times, images)
        self._states, stats = self.model.ingest(self._states, views, self.elastic, with_stats=True)
        n = images.shape[0]
        if "4dgs" in self.model.config.heads and self._geo:
            self._keep_chunk(views, index=len(self.history))
        elif "4dgs" in self.model.config.heads:
            self._remember_virtual_views(views, first_index=self.frames_ingested)
        self._gaussians = None
        self._decoded_frames = {}
        self.frames_ingested += n
        record = ChunkRecord(
            index=len(self.history),
            frames=n,
            frames_total=self.frames_ingested,
            time_range=(float(times[0]), float(times[-1])),
            seconds=_time.perf_counter() - start,
            layers=stats,
        )
        self.history.append(record)
        return record

    # -- rendering -----------------------------------------------------------------------------

    @torch.inference_mode()
    def render(self, c2w, fxfycxcy, time, height: int, width: int, head: str = "lvsm") -> torch.Tensor:
        """Render with the memory as it is now. One camera (4,4),(4,) -> (3,H,W); V cameras
        (V,4,4),(V,4) with V times -> (V,3,H,W). Values in [0, 1], on the session's device."""
        single = torch.as_tensor(c2w).dim() == 2
        c2w = torch.as_tensor(c2w, dtype=torch.float32, device=self.device).reshape(-1, 4, 4)
        fxfycxcy = torch.as_tensor(fxfycxcy, dtype=torch.float32, device=self.device).reshape(-1, 4)
        times = torch.as_tensor(time, dtype=torch.float64).reshape(-1).expand(c2w.shape[0])
        if not (torch.isfinite(c2w).all() and torch.isfinite(fxfycxcy).all() and torch.isfinite(times).all()):
            raise ValueError("render camera or time is not finite")
        if head not in self.model.config.heads:
            raise ValueError(f"unknown head {head!r}; this model has {self.model.config.heads}")
        views = self._views(c2w, fxfycxcy, times)
        if head == "lvsm":
            image = self.model.render_lvsm(self._states, views, height, width)[0]
        elif self._geo:  # each view from the kept frames nearest its time (fsm.splat.render_4dgs)
            cfg, images = self.model.config, []
            for v in range(views.num_views):
                t = views.times[0, v].item()
                g, frame_times = self._nearest_decoded(t, cfg.gs_front + cfg.gs_fill)
                images.append(render_4dgs(g, t, views.c2w[0, v], views.fxfycxcy[0, v], width, height, cull_below=MARGINAL_CULL,
                                          clamp=True, frame_times=frame_times, front=cfg.gs_front, fill=cfg.gs_fill))  # fmt: skip
            image = torch.stack(images)
        else:
            g = self._decoded()  # culled as the 4DGS reference culls, clamped for display
            image = torch.stack([
                render_4dgs(g, views.times[0, v].item(), views.c2w[0, v], views.fxfycxcy[0, v], width, height,
                            cull_below=MARGINAL_CULL, background=self.background, clamp=True)
                for v in range(views.num_views)
            ])  # fmt: skip
        return image[0] if single else image

    @torch.inference_mode()
    def gaussians(self, time: float, prune_below: float = MARGINAL_CULL, footprint_px: float = 0.0) -> Gaussians3D:
        """4DGS head: the scene's 3D Gaussians at `time` (seconds), in the clip's world frame.

        Gaussians whose temporal marginal is below `prune_below` or whose opacity cannot reach
        the rasterizer's alpha threshold are dropped (fsm.splat.slice_visible).

        footprint_px (geo head): widen each Gaussian by that many pixels of its own input frame
        (in quadrature). The model's rasterizer adds 0.3 px^2 in the pixels of the frames it was
        trained at; a renderer drawing at another resolution (the browser) adds it in its own,
        and the 0.3-pixel splats stop overlapping: sqrt(0.3) restores what the model saw."""
        t = self.clip_norm.times(torch.tensor([float(time)], dtype=torch.float64)).item()
        if self._geo:  # the frame(s) nearest t; their fill layer needs two-pass compositing
            decoded, _, sources = self._nearest_decoded(t, self.model.config.gs_front, with_cameras=True)
            if footprint_px > 0:
                decoded = widen(decoded, sources.c2w[0], sources.fxfycxcy[0], footprint_px)
        else:
            decoded = self._decoded()
        g = slice_visible(decoded, t, prune_below)
        n = self.clip_norm.poses
        return Gaussians3D(n.points_to_world(g.means), n.covariances_to_world(g.covariances), g.rgb, g.opacities)

    def _decoded(self) -> Gaussians4D:
        """The scene's 4D Gaussians (N,) from the virtual views, decoded once per chunk."""
        if self._gaussians is None:
            if not self._virtual:
                raise ValueError("the 4DGS head needs at least one ingested chunk (feed frames first)")
            virtual = Views(*(torch.cat([getattr(v, k) for v in self._virtual], dim=1) for k in ("c2w", "fxfycxcy", "times", "images")))
            self._gaussians = self.model.decode_gaussians(self._states, virtual)[0]
        return self._gaussians

    @property
    def _geo(self) -> bool:
        return self.model.config.gs_head == "geo"

    def _keep_chunk(self, views: Views, index: int) -> None:
        """Keep every `stride`-th chunk whole (its frames are each other's plane-sweep sources, with
        those of the gs_sweep_back chunks before it); over budget, drop every other kept chunk and
        double the stride."""
        back = self.model.config.gs_sweep_back
        if index % self._kept_stride == 0:
            self._kept.append((views, self._recent))
        self._recent = (self._recent + [views])[-back:] if back else []
        while sum(c.num_views for c, _ in self._kept) > self.stream.max_kept_frames and len(self._kept) > 1:
            self._kept = self._kept[::2]
            self._kept_stride *= 2

    def _nearest_decoded(self, t: float, count: int, with_cameras: bool = False):
        """The Gaussians of the `count` kept frames nearest normalised time t, frame by frame
        ((count * pixels,) and their frames' times (count,)), decoding each frame once per chunk;
        with_cameras: also the frames' Views (c2w, fxfycxcy of each, batch of one)."""
        if not self._kept:
            raise ValueError("the 4DGS head needs at least one ingested chunk (feed frames first)")
        kept = [chunk for chunk, _ in self._kept]
        frames = [(c, i) for c, chunk in enumerate(kept) for i in range(chunk.num_views)]
        times = torch.stack([kept[c].times[0, i] for c, i in frames])
        picked = [frames[k] for k in frame_order(times, t)[:count].tolist()]
        for c in {c for c, i in picked}:
            todo = [i for cc, i in picked if cc == c and (c, i) not in self._decoded_frames]
            if todo:
                chunks = [*self._kept[c][1], kept[c]]  # the chunks before it, then the chunk: its sweep's groups
                starts = [sum(x.num_views for x in chunks[:k]) for k in range(len(chunks) + 1)]
                views = Views(*(torch.cat([getattr(x, k) for x in chunks], dim=1) for k in ("c2w", "fxfycxcy", "times", "images")))
                groups = [list(range(a, b)) for a, b in zip(starts, starts[1:])]
                g = self.model.decode_gaussians(self._states, views, groups=groups, refs=[starts[-2] + i for i in todo])[0]
                per = g.mean_t.shape[0] // len(todo)
                for k, i in enumerate(todo):
                    self._decoded_frames[(c, i)] = g[k * per : (k + 1) * per]
        parts = [self._decoded_frames[f] for f in picked]
        g = Gaussians4D(**{k: torch.cat([getattr(p, k) for p in parts]) for k in vars(parts[0])})
        times = torch.stack([kept[c].times[0, i] for c, i in picked])
        if not with_cameras:
            return g, times
        cams = Views(*(torch.stack([getattr(kept[c], k)[0, i] for c, i in picked])[None] for k in ("c2w", "fxfycxcy", "times")))
        return g, times, cams

    def _remember_virtual_views(self, views: Views, first_index: int) -> None:
        """Keep every `stride`-th fed frame; when over budget, drop every other kept frame and
        double the stride, so the kept frames stay evenly spread over the whole clip."""
        for i in range(views.num_views):
            if (first_index + i) % self._virtual_stride == 0:
                self._virtual.append(views[i : i + 1])
            while len(self._virtual) > self.stream.max_virtual_views:
                self._virtual = self._virtual[::2]
                self._virtual_stride *= 2

    # -- helpers -------------------------------------------------------------------------------

    def _views(self, c2w, fxfycxcy, times, images=None) -> Views:
        """Clip-frame tensors of one clip -> a batch-of-one Views in the model's frame."""
        t = self.clip_norm.times(times).to(torch.float32)
        return Views(
            c2w=self.clip_norm.c2w(c2w)[None],
            fxfycxcy=fxfycxcy[None],
            times=t.to(self.device)[None],
            images=None if images is None else images[None],
        )

    def _check_frames(self, images, c2w, fxfycxcy, times):
        images = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        c2w = torch.as_tensor(c2w, dtype=torch.float32, device=self.device)
        fxfycxcy = torch.as_tensor(fxfycxcy, dtype=torch.float32, device=self.device)
        times = torch.as_tensor(times, dtype=torch.float64)
        n = images.shape[0] if images.dim() == 4 else -1
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N,3,H,W), got {tuple(images.shape)}")
        if c2w.shape != (n, 4, 4) or fxfycxcy.shape != (n, 4) or times.shape != (n,):
            raise ValueError(
                f"{n} frames but cameras {tuple(c2w.shape)}, intrinsics {tuple(fxfycxcy.shape)}, "
                f"times {tuple(times.shape)} (expected ({n},4,4), ({n},4), ({n},))"
            )
        for name, x in (("images", images), ("c2w", c2w), ("fxfycxcy", fxfycxcy), ("times", times)):
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} contain NaN or inf")
        size = tuple(images.shape[-2:])
        if self.image_size is None:
            self.image_size = size
        elif size != self.image_size:
            raise ValueError(f"frames of size {size} fed to a session streaming {self.image_size} frames")
        return images, c2w, fxfycxcy, times

    # -- read-only views for plots (the viewer's panels read these, not the states) ------------

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.model.config.heads)

    def importance(self, layer: int, matrix: str) -> torch.Tensor:
        """(in, out) importance F of one fast-weight matrix of one layer, as a float32 CPU copy."""
        return self._states[layer].importance[matrix][0].detach().float().cpu().clone()

    def chunk_stats(self, stat: str, matrix: str) -> torch.Tensor:
        """(chunks, layers) float64: one UpdateStats field (drift, update_norm, importance_mean,
        importance_max, importance_frac_above_mean) of `matrix`, for every processed chunk."""
        rows = [[getattr(s, stat)[matrix] for s in r.layers] for r in self.history]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(self.history), self.num_layers)

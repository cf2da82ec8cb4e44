"""The FSM model: tokenizer, LaCET blocks, backbone and the LVSM head (paper Sec. 3.1, App. A.2).

Data flow for one clip (B clips in a batch):

    input views  --tokenize-->  (B, V, T, D) --chunk of frames--> every block: attention within
                 each view, fast-weight UPDATE with the chunk's tokens (+ apply), FFN
    target views --tokenize (RGB zeroed)--> every block: attention within each view, fast-weight
                 APPLY with the current state, FFN --> LVSM head --> RGB
    4DGS head:   the input views again, as apply-only "virtual views" (RGB kept) --> pixel-aligned
                 4D Gaussians (the paper's head: 20 numbers per pixel; the geo head, fsm/geohead.py:
                 input colours, plane-sweep depth) --> slice at the target time, rasterize

T = (H/p)(W/p) tokens per view. Target views never see each other, so they can be rendered
one at a time, and the same chunk loop serves training (forward) and streaming (fsm.stream.StreamSession).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsm.cameras import pixel_rays, plucker_rays
from fsm.gaussians import RAW_DIM, Gaussians4D, activate_gaussians
from fsm.lacet import ElasticConfig, ElasticState, FastWeightLayer, UpdateStats
from fsm.geohead import READOUTS, GeoGaussianHead, depth_size, frame_spacing, shrink_views
from fsm.patches import patchify, unpatchify
from fsm.planesweep import NO_COST, chunk_groups, plane_sweep_cost
from fsm.precision import autocast
from fsm.splat import render_4dgs

HEADS = ("lvsm", "4dgs")  # decoding heads a config may ask for
GS_HEADS = ("paper", "geo")  # designs of the 4DGS head
GS_RANGES = {"paper": (0.01, 100.0), "geo": (0.3, 3000.0)}  # default (near, far) of each
# the geo head's depth options no weight depends on: a checkpoint's weights may be read with others (set_depth_options)
DEPTH_OPTIONS = ("gs_readout", "gs_depth_size", "gs_sweep_back", "gs_sweep_keep")
# the geo head's depth modules: config flag -> parameter prefix. Each starts as the identity, so it may be
# added to a checkpoint without it (train --init-from), --depth-only trains exactly these, and a
# checkpoint with any of them keeps the sweep temperature it was trained at (calibrate_sweep).
DEPTH_MODULES = {"gs_refine": "gaussian_head.refine.", "gs_edge": "gaussian_head.edge."}


@dataclass(frozen=True)
class FSMConfig:
    """The architecture: what a checkpoint's weights must match. It rebuilds the model."""

    preset: str = "custom"
    dim: int = 768  # token width D
    depth: int = 24  # LaCET blocks
    attn_heads: int = 12  # window attention heads (head dim = dim / attn_heads)
    fw_hidden: int = 1536  # fast-weight SwiGLU hidden width Dh
    ffn_hidden: int = 3072
    patch: int = 8
    muon_steps: int = 5  # Newton-Schulz steps per update; 0 = plain gradient step
    base_lr: float = 0.01  # fast-weight learning rate at zero logit (softplus head bias)
    heads: tuple[str, ...] = ("lvsm",)
    # 4DGS depth range along each pixel ray, model units; None = the head's own (gs_range)
    gs_near: float | None = None
    gs_far: float | None = None
    # 4DGS head design: "paper" regresses all 20 numbers per pixel (Sec. 3.1); "geo" is the
    # geometry-grounded head of fsm/geohead.py (input colour + residual, plane-sweep depth).
    gs_head: str = "paper"
    gs_planes: int = 32  # geo: depth planes of the plane sweep (log-spaced in [gs_near, gs_far])
    gs_sweep: bool = True  # geo: feed the plane-sweep costs (False: a constant, the ablation without the cue)
    gs_refine: bool = False  # geo: a 3D U-Net over the cost volume corrects the plane logits (geohead.CostRegularizer)
    gs_edge: bool = False  # geo: the plane logits re-mixed from each pixel's 5x5 neighbours (geohead.EdgePropagation)
    # geo: depth (the sweep, the head's CNN, the depth modules) worked out on the views area-downsampled by the
    # smallest integer factor that brings their short side to at most this many pixels, its plane logits then
    # upsampled (geohead.depth_size); None = at full resolution
    gs_depth_size: int | None = None
    gs_readout: str = "mode"  # geo: depth read around the most likely plane or the risk minimiser (geohead.plane_readout)
    # geo: plane-sweep sources = the view's own chunk + the gs_sweep_back chunks before it; each pixel and plane
    # pools the gs_sweep_keep fraction of them that agree best (fsm.planesweep.plane_sweep_cost)
    gs_sweep_back: int = 0
    gs_sweep_keep: float = 1.0
    gs_front: int = 1  # geo: a render at time t shows the Gaussians of the frame(s) nearest t ...
    gs_fill: int = 4  # ... over those of the next nearest frames, which fill its holes

    def __post_init__(self):
        if self.dim % self.attn_heads:
            raise ValueError(f"dim {self.dim} is not divisible by attn_heads {self.attn_heads}")
        unknown = set(self.heads) - set(HEADS)
        if unknown or not self.heads:
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")
        if self.gs_head not in GS_HEADS:
            raise ValueError(f"gs_head must be one of {GS_HEADS}, got {self.gs_head!r}")
        if self.gs_readout not in READOUTS:
            raise ValueError(f"gs_readout must be one of {READOUTS}, got {self.gs_readout!r}")
        if self.gs_depth_size is not None and self.gs_depth_size < 8:
            raise ValueError(f"gs_depth_size must be None or >= 8 pixels, got {self.gs_depth_size}")
        if self.gs_sweep_back < 0 or not 0.0 < self.gs_sweep_keep <= 1.0:
            raise ValueError(f"gs_sweep_back must be >= 0 and gs_sweep_keep in (0, 1], got {self.gs_sweep_back}, {self.gs_sweep_keep}")
        if self.gs_planes < 3:  # the readout takes a plane and its two neighbours
            raise ValueError(f"gs_planes must be >= 3, got {self.gs_planes}")

    @property
    def gs_range(self) -> tuple[float, float]:
        """(near, far) of the 4DGS head: the paper's [0.01, 100] for its head; [0.3, 3000] for the
        geo head, whose log-spaced planes must reach the depths a short or panning camera path
        gives after pose normalisation (scene depths of hundreds of units, README)."""
        near, far = GS_RANGES[self.gs_head]
        return (near if self.gs_near is None else self.gs_near, far if self.gs_far is None else self.gs_far)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = list(self.heads)
        return d

    @staticmethod
    def from_dict(d: dict) -> "FSMConfig":
        _check_keys(FSMConfig, d)
        d = dict(d)
        if "heads" in d:
            d["heads"] = tuple(d["heads"])
        return FSMConfig(**d)


@dataclass(frozen=True)
class StreamConfig:
    """How a clip is run through the fast weights: settings of a run, not of the architecture.

    The same weights stream with any of them. A checkpoint stores the ones it was trained with
    (model.stream); they are the defaults, and FSM.stream_config is the one place overrides
    are applied."""

    frames_per_chunk: int = 8  # fast-weight chunk, in whole frames (2048 tokens at 128x128)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    max_virtual_views: int = 16  # paper 4DGS head: fed frames kept (evenly spread) to re-query as virtual views
    max_kept_frames: int = 512  # geo 4DGS head: fed frames kept (whole chunks, evenly spread) to render from

    def __post_init__(self):
        if self.frames_per_chunk < 1:
            raise ValueError(f"frames_per_chunk must be >= 1, got {self.frames_per_chunk}")
        if self.max_virtual_views < 1:
            raise ValueError(f"max_virtual_views must be >= 1, got {self.max_virtual_views}")
        if self.max_kept_frames < self.frames_per_chunk:
            raise ValueError(f"max_kept_frames ({self.max_kept_frames}) must hold at least one chunk ({self.frames_per_chunk} frames)")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "StreamConfig":
        _check_keys(StreamConfig, d)
        d = dict(d)
        if "elastic" in d:
            d["elastic"] = ElasticConfig(**d["elastic"])
        return StreamConfig(**d)


def _check_keys(cls, d: dict) -> None:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")


PRESETS: dict[str, FSMConfig] = {
    # unit tests: a forward pass in milliseconds on CPU
    "tiny": FSMConfig(preset="tiny", dim=64, depth=2, attn_heads=2, fw_hidden=128, ffn_hidden=256),
    # the shipped model, sized by measurement on a 2-core CPU (see bench/ and README)
    "small": FSMConfig(preset="small", dim=256, depth=8, attn_heads=4, fw_hidden=512, ffn_hidden=1024),
    # the paper's (App. A.2)
    "base": FSMConfig(preset="base", dim=768, depth=24, attn_heads=12, fw_hidden=1536, ffn_hidden=3072),
}
# Run settings a preset starts with when they differ from StreamConfig's defaults.
PRESET_STREAMS: dict[str, StreamConfig] = {
    "tiny": StreamConfig(frames_per_chunk=2),  # tests: a few frames still make several chunks
}


def preset(name: str, **overrides) -> FSMConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass
class Views:
    """A batch of posed views in the model's frame: normalised poses, times in [-1, 1]."""

    c2w: torch.Tensor  # (B, V, 4, 4)
    fxfycxcy: torch.Tensor  # (B, V, 4) pixels
    times: torch.Tensor  # (B, V) normalised
    images: torch.Tensor | None = None  # (B, V, 3, H, W) in [0, 1]; None for queries

    def __getitem__(self, index) -> "Views":
        """Select along the view axis: views[a:b] keeps views a..b-1 of every batch element."""
        pick = lambda x: None if x is None else x[:, index]
        return Views(pick(self.c2w), pick(self.fxfycxcy), pick(self.times), pick(self.images))

    @property
    def num_views(self) -> int:
        return self.c2w.shape[1]


# ----------------------------------------------------------------------------------------------
# Building blocks


class Tokenizer(nn.Module):
    """Per pixel [RGB in [-1,1] (zeros for queries), Plücker (6), time (1)] -> patches -> Linear -> LN."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(10 * patch * patch, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, views: Views, height: int, width: int) -> torch.Tensor:
        B, V = views.c2w.shape[:2]
        p = self.patch
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
        rays = plucker_rays(views.c2w.reshape(B * V, 4, 4), views.fxfycxcy.reshape(B * V, 4), height, width)
        rays = rays.reshape(B, V, 6, height, width)
        if views.images is None:
            rgb = rays.new_zeros(B, V, 3, height, width)
        else:
            rgb = views.images.to(rays.dtype) * 2 - 1
        t = views.times.to(rays.dtype)[:, :, None, None, None].expand(B, V, 1, height, width)
        return self.norm(self.proj(patchify(torch.cat([rgb, rays, t], dim=2), p)))


class WindowAttention(nn.Module):
    """Self-attention within each view's tokens, with QK-norm (RMSNorm per head)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-5)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-5)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, V, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B * V, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(self.q_norm(q.float()), self.k_norm(k.float()), v)  # (B*V, heads, T, hd); norms in fp32
        return self.out(y.transpose(1, 2).reshape(B, V, T, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LaCETBlock(nn.Module):
    """Pre-LN residual: window attention -> fast-weight layer -> FFN."""

    def __init__(self, cfg: FSMConfig):
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(cfg.dim), WindowAttention(cfg.dim, cfg.attn_heads)
        self.fw_norm = nn.LayerNorm(cfg.dim)
        self.fw = FastWeightLayer(cfg.dim, cfg.fw_hidden, cfg.muon_steps, cfg.base_lr)
        self.ffn_norm, self.ffn = nn.LayerNorm(cfg.dim), FeedForward(cfg.dim, cfg.ffn_hidden)

    def ingest(self, x, state: ElasticState, elastic: ElasticConfig, with_stats: bool):
        """Input tokens of one chunk (B, V, T, D): update the state with them, then read it."""
        B, V, T, D = x.shape
        x = x + self.attn(self.attn_norm(x))
        y, state, stats = self.fw.update(self.fw_norm(x).reshape(B, V * T, D), state, elastic, with_stats)
        x = x + y.reshape(B, V, T, D)
        return x + self.ffn(self.ffn_norm(x)), state, stats

    def query(self, x, state: ElasticState):
        """Query tokens (B, V, T, D): read the state, never write it."""
        B, V, T, D = x.shape
        x = x + self.attn(self.attn_norm(x))
        x = x + self.fw.apply(self.fw_norm(x).reshape(B, V * T, D), state).reshape(B, V, T, D)
        return x + self.ffn(self.ffn_norm(x))


class LVSMHead(nn.Module):
    """LayerNorm -> Linear(D, 3 p^2) -> sigmoid, unpatchified to RGB."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 3 * patch * patch)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.sigmoid(unpatchify(self.proj(self.norm(tokens)), self.patch, height, width))


class GaussianHead(nn.Module):
    """LayerNorm -> Linear(D, 20 p^2): 20 raw numbers per pixel -> pixel-aligned 4D Gaussians."""

    def __init__(self, dim: int, patch: int, near: float, far: float):
        super().__init__()
        self.patch, self.near, self.far = patch, near, far
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, RAW_DIM * patch * patch)

    def forward(self, tokens: torch.Tensor, views: Views, height: int, width: int) -> Gaussians4D:
        """tokens (B, V, T, D) of virtual views -> Gaussians with leading dims (B, V*H*W)."""
        B, V = tokens.shape[:2]
        raw = unpatchify(self.proj(self.norm(tokens)), self.patch, height, width)  # (B, V, 20, H, W)
        raw = raw.permute(0, 1, 3, 4, 2).reshape(B, V * height * width, RAW_DIM)
        origins, dirs = pixel_rays(views.c2w.reshape(B * V, 4, 4), views.fxfycxcy.reshape(B * V, 4), height, width)
        frame_time = views.times[:, :, None].expand(B, V, height * width).reshape(B, -1)
        return activate_gaussians(raw, origins.reshape(B, -1, 3), dirs.reshape(B, -1, 3), frame_time, self.near, self.far)


def render_gaussians(
    g: Gaussians4D, targets: Views, height: int, width: int, frame_times: torch.Tensor | None = None, front: int = 1, fill: int = 0
) -> torch.Tensor:
    """Each scene's Gaussians (B, N) seen by every target view: (B, V, 3, H, W), uncull'd (training).

    frame_times (B, V_in): the Gaussians are laid out frame by frame (N = V_in * pixels) and a
    target at time t shows the `front` frames nearest t over the next `fill` (fsm.splat.render_4dgs)."""
    B, V = targets.c2w.shape[:2]
    images = [
        render_4dgs(g[b], targets.times[b, v], targets.c2w[b, v], targets.fxfycxcy[b, v], width, height,
                    frame_times=None if frame_times is None else frame_times[b], front=front, fill=fill)  # fmt: skip
        for b in range(B)
        for v in range(V)
    ]
    return torch.stack(images).reshape(B, V, 3, height, width)


# ----------------------------------------------------------------------------------------------
# The model


class FSM(nn.Module):
    def __init__(self, config: FSMConfig, stream: StreamConfig | None = None):
        super().__init__()
        self.config = config
        self.stream = stream if stream is not None else StreamConfig()  # run defaults; see stream_config
        self.metadata: dict = {}  # training metadata, filled by fsm.load_checkpoint
        # the blocks' compute dtype: set it with fsm.precision.resolve_dtype (bf16 = autocast);
        # tokenizer, residual stream, heads and fast-weight state stay fp32 either way
        self.compute_dtype = torch.float32
        self.tokenizer = Tokenizer(config.dim, config.patch)
        self.blocks = nn.ModuleList(LaCETBlock(config) for _ in range(config.depth))
        if "lvsm" in config.heads:
            self.lvsm_head = LVSMHead(config.dim, config.patch)
        if "4dgs" in config.heads and config.gs_head == "paper":
            self.gaussian_head = GaussianHead(config.dim, config.patch, *config.gs_range)
        elif "4dgs" in config.heads:
            self.gaussian_head = GeoGaussianHead(config.dim, config.patch, config.gs_planes, *config.gs_range, refine=config.gs_refine,
                                                 edge=config.gs_edge)

    @staticmethod
    def from_preset(name: str, stream: StreamConfig | None = None, **overrides) -> "FSM":
        return FSM(preset(name, **overrides), stream if stream is not None else PRESET_STREAMS.get(name))

    def set_depth_options(
        self, gs_readout: str | None = None, gs_depth_size: int | None = None, gs_sweep_back: int | None = None,
        gs_sweep_keep: float | None = None,
    ) -> None:
        """Change the geo head's weight-free depth options that are not None: the readout's centre plane
        ("mode" / "risk"), the depth size (gs_depth_size; 0 = full resolution) and the plane sweep's
        sources (gs_sweep_back chunks back, the gs_sweep_keep fraction that agrees best)."""
        if self.config.gs_head != "geo" or "4dgs" not in self.config.heads:
            raise ValueError("depth options: only the geo 4DGS head reads depth planes")
        given = {"gs_readout": gs_readout, "gs_depth_size": gs_depth_size, "gs_sweep_back": gs_sweep_back, "gs_sweep_keep": gs_sweep_keep}
        changes = {k: v for k, v in given.items() if v is not None}
        if changes.get("gs_depth_size") == 0:  # 0: full resolution, stored as None
            changes["gs_depth_size"] = None
        self.config = replace(self.config, **changes)  # validates them; decode_geo reads them from here

    def stream_config(self, base: StreamConfig | None = None, **overrides) -> StreamConfig:
        """The run settings to use: `base` (default: this model's, self.stream) with every
        override that is not None applied. The one place run-setting defaults are resolved."""
        base = self.stream if base is None else base
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    # -- the memory ------------------------------------------------------------------------

    def init_states(self, batch: int, elastic: ElasticConfig | None = None) -> list[ElasticState]:
        elastic = self.stream_config(elastic=elastic).elastic
        return [blk.fw.init_state(batch, elastic) for blk in self.blocks]

    def ingest(
        self, states: list[ElasticState], chunk: Views, elastic: ElasticConfig | None = None, with_stats: bool = False
    ) -> tuple[list[ElasticState], list[UpdateStats | None]]:
        """Update every layer's fast weights with one chunk of input views (images required)."""
        if chunk.images is None:
            raise ValueError("input views need images")
        elastic = self.stream_config(elastic=elastic).elastic
        H, W = chunk.images.shape[-2:]
        x = self.tokenizer(chunk, H, W)
        new_states, stats = [], []
        with autocast(x.device, self.compute_dtype):
            for blk, state in zip(self.blocks, states):
                x, state, s = blk.ingest(x, state, elastic, with_stats)
                new_states.append(state)
                stats.append(s)
        return new_states, stats

    def query(self, states: list[ElasticState], views: Views, height: int, width: int) -> torch.Tensor:
        """Output tokens (B, V, T, D) of query views; their RGB is used only if views.images is set."""
        x = self.tokenizer(views, height, width)
        with autocast(x.device, self.compute_dtype):
            for blk, state in zip(self.blocks, states):
                x = blk.query(x, state)
        return x

    def render_lvsm(self, states: list[ElasticState], targets: Views, height: int, width: int) -> torch.Tensor:
        """RGB (B, V, 3, H, W) of target views (RGB channels zeroed) with the LVSM head."""
        if not hasattr(self, "lvsm_head"):
            raise ValueError(f"this model has no LVSM head (heads: {self.config.heads})")
        queries = replace(targets, images=None)
        return self.lvsm_head(self.query(states, queries, height, width), height, width)

    def decode_gaussians(
        self, states: list[ElasticState], virtual_views: Views, groups: list[list[int]] | None = None, refs: list[int] | None = None
    ) -> Gaussians4D:
        """Pixel-aligned 4D Gaussians (leading dims (B, V*H*W)) from input views re-queried
        apply-only with the current fast weights (their RGB is kept: they are "virtual views").

        Geo head only: groups are the plane-sweep neighbourhoods (lists of view indices; default:
        chunks of the model's frames_per_chunk, as ingested); refs decodes only those views (in
        that order), the others serving as plane-sweep sources."""
        if not hasattr(self, "gaussian_head"):
            raise ValueError(f"this model has no 4DGS head (heads: {self.config.heads})")
        H, W = virtual_views.images.shape[-2:]
        if self.config.gs_head == "paper":
            return self.gaussian_head(self.query(states, virtual_views, H, W), virtual_views, H, W)
        return self.decode_geo(states, virtual_views, groups, refs)[0]

    def sweep_cost(self, v: Views, groups: list[list[int]], refs: list[int] | None = None) -> torch.Tensor:
        """The geo head's plane-sweep costs (B, R, P, h, w) of the R = len(refs) views against their
        groups (and the gs_sweep_back groups before), at the head's depth size (h x w = geohead.depth_size);
        NO_COST everywhere without gs_sweep."""
        H, W = v.images.shape[-2:]
        h, w = depth_size(H, W, self.config.gs_depth_size)
        refs = list(range(v.num_views)) if refs is None else list(refs)
        planes = self.gaussian_head.planes
        if not self.config.gs_sweep:
            return v.images.new_full((v.images.shape[0], len(refs), planes.shape[0], h, w), NO_COST)
        images, fxfycxcy = shrink_views(v.images, v.fxfycxcy, h, w)
        c = self.config
        return torch.stack([plane_sweep_cost(images[b], v.c2w[b], fxfycxcy[b], groups, planes, refs, c.gs_sweep_back, c.gs_sweep_keep)
                            for b in range(v.c2w.shape[0])])  # fmt: skip

    def decode_geo(
        self, states: list[ElasticState], v: Views, groups: list[list[int]] | None = None, refs: list[int] | None = None
    ) -> tuple[Gaussians4D, torch.Tensor]:
        """The geo head's Gaussians (as decode_gaussians) and its depth-plane logits (B, R, P, H, W)
        for the R = len(refs) decoded views (what training's plane classification needs)."""
        H, W = v.images.shape[-2:]
        groups = groups or chunk_groups(v.num_views, self.stream.frames_per_chunk)
        refs = list(range(v.num_views)) if refs is None else list(refs)
        picked = v[refs]
        cost = self.sweep_cost(v, groups, refs)
        gap = frame_spacing(v.times, groups)[:, refs]
        tokens = self.query(states, picked, H, W)
        g, _, logits = self.gaussian_head(tokens, cost, picked.images, picked.c2w, picked.fxfycxcy, picked.times, gap, self.config.gs_readout)
        return g, logits

    # -- training ----------------------------------------------------------------------------

    def forward(
        self,
        inputs: Views,
        targets: Views,
        frames_per_chunk: int | None = None,
        elastic: ElasticConfig | None = None,
        heads: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Feed the inputs in chunks of whole frames, then render the targets with each head:
        {head: (B, Vt, 3, H, W)} for `heads` (default: all the model has). "depth" in heads adds
        the 4DGS head's depth of every input pixel, {"depth": (B, V_in, H, W)}, and for the geo head
        its depth-plane logits, {"depth_logits": (B, V_in, P, H, W)}.

        The same chunk loop as StreamSession, so a streamed clip equals this batched pass.
        """
        heads = heads or self.config.heads
        if "depth" in heads and "4dgs" not in heads:
            heads = (*heads, "4dgs")
        run = self.stream_config(frames_per_chunk=frames_per_chunk, elastic=elastic)
        fpc = run.frames_per_chunk
        H, W = inputs.images.shape[-2:]
        states = self.init_states(inputs.c2w.shape[0], run.elastic)
        for start in range(0, inputs.num_views, fpc):
            states, _ = self.ingest(states, inputs[start : start + fpc], run.elastic)
        out = {}
        for head in heads:
            if head == "lvsm":
                out[head] = self.render_lvsm(states, targets, H, W)
            elif head == "4dgs":
                groups = chunk_groups(inputs.num_views, fpc)
                if self.config.gs_head == "geo":
                    g, logits = self.decode_geo(states, inputs, groups)
                    out[head] = render_gaussians(g, targets, H, W, inputs.times, self.config.gs_front, self.config.gs_fill)
                    if "depth" in heads:
                        out["depth_logits"] = logits
                else:
                    g = self.decode_gaussians(states, inputs, groups)
                    out[head] = render_gaussians(g, targets, H, W)
                if "depth" in heads:  # distance of each pixel's Gaussian along its ray: (B, V_in, H, W)
                    origins = inputs.c2w[:, :, None, :3, 3].expand(-1, -1, H * W, -1).reshape(g.means_xyz.shape)
                    out["depth"] = (g.means_xyz - origins).norm(dim=-1).reshape(*inputs.c2w.shape[:2], H, W)
            elif head == "depth":
                continue
            else:
                raise ValueError(f"unknown head {head!r}; this model has {self.config.heads}")
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

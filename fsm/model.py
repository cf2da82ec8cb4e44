"""The FSM model: tokenizer, LaCET blocks, backbone and the LVSM head (paper Sec. 3.1, App. A.2).

Data flow for one clip (B clips in a batch):

    input views  --tokenize-->  (B, V, T, D) --chunk of frames--> every block: attention within
                 each view, fast-weight UPDATE with the chunk's tokens (+ apply), FFN
    target views --tokenize (RGB zeroed)--> every block: attention within each view, fast-weight
                 APPLY with the current state, FFN --> LVSM head --> RGB
    4DGS head:   the input views again, as apply-only "virtual views" (RGB kept) --> 20 numbers
                 per pixel --> pixel-aligned 4D Gaussians --> slice at the target time, rasterize

T = (H/p)(W/p) tokens per view. Target views never see each other, so they can be rendered
one at a time, and the same chunk loop serves training (forward) and streaming (StreamSession).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsm.cameras import pixel_rays, plucker_rays
from fsm.gaussians import RAW_DIM, Gaussians4D, activate_gaussians, slice_4dgs
from fsm.lacet import ElasticConfig, ElasticState, FastWeightLayer, UpdateStats
from fsm.precision import autocast
from fsm.raster import rasterize

HEADS = ("lvsm", "4dgs")  # decoding heads a config may ask for


@dataclass(frozen=True)
class FSMConfig:
    """Architecture + default inference chunking. A checkpoint stores this; it rebuilds the model."""

    preset: str = "custom"
    dim: int = 768  # token width D
    depth: int = 24  # LaCET blocks
    attn_heads: int = 12  # window attention heads (head dim = dim / attn_heads)
    fw_hidden: int = 1536  # fast-weight SwiGLU hidden width Dh
    ffn_hidden: int = 3072
    patch: int = 8
    muon_steps: int = 5  # Newton-Schulz steps per update; 0 = plain gradient step
    base_lr: float = 0.01  # fast-weight learning rate at zero logit (softplus head bias)
    frames_per_chunk: int = 8  # fast-weight chunk, in whole frames (2048 tokens at 128x128)
    heads: tuple[str, ...] = ("lvsm",)
    gs_near: float = 0.01  # 4DGS depth range along each pixel ray (paper Sec. 3.1), scene units
    gs_far: float = 100.0
    elastic: ElasticConfig = field(default_factory=ElasticConfig)

    def __post_init__(self):
        if self.dim % self.attn_heads:
            raise ValueError(f"dim {self.dim} is not divisible by attn_heads {self.attn_heads}")
        unknown = set(self.heads) - set(HEADS)
        if unknown or not self.heads:
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["heads"] = list(self.heads)
        return d

    @staticmethod
    def from_dict(d: dict) -> "FSMConfig":
        known = {f.name for f in fields(FSMConfig)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        d = dict(d)
        if "elastic" in d:
            d["elastic"] = ElasticConfig(**d["elastic"])
        if "heads" in d:
            d["heads"] = tuple(d["heads"])
        return FSMConfig(**d)


PRESETS: dict[str, FSMConfig] = {
    # unit tests: a forward pass in milliseconds on CPU
    "tiny": FSMConfig(preset="tiny", dim=64, depth=2, attn_heads=2, fw_hidden=128, ffn_hidden=256, frames_per_chunk=2),
    # the shipped model, sized by measurement on a 2-core CPU (see bench/ and README)
    "small": FSMConfig(preset="small", dim=256, depth=8, attn_heads=4, fw_hidden=512, ffn_hidden=1024),
    # the paper's (App. A.2)
    "base": FSMConfig(preset="base", dim=768, depth=24, attn_heads=12, fw_hidden=1536, ffn_hidden=3072),
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


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, V, C, H, W) -> (B, V, T, C*p*p), T = (H/p)(W/p) in row-major patch order."""
    B, V, C, H, W = x.shape
    x = x.reshape(B, V, C, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(B, V, (H // p) * (W // p), C * p * p)


def unpatchify(x: torch.Tensor, p: int, height: int, width: int) -> torch.Tensor:
    """(B, V, T, C*p*p) -> (B, V, C, H, W)."""
    B, V, T, D = x.shape
    C = D // (p * p)
    x = x.reshape(B, V, height // p, width // p, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, V, C, height, width)


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


def render_gaussians(g: Gaussians4D, targets: Views, height: int, width: int) -> torch.Tensor:
    """Slice each scene's Gaussians (B, N) at every target's time and rasterize: (B, V, 3, H, W)."""
    B, V = targets.c2w.shape[:2]
    images = []
    for b in range(B):
        scene = Gaussians4D(**{k: v[b] for k, v in vars(g).items()})
        for v in range(V):
            g3 = slice_4dgs(scene, targets.times[b, v])
            images.append(rasterize(g3.means, g3.covariances, g3.rgb, g3.opacities, targets.c2w[b, v], targets.fxfycxcy[b, v], width, height).rgb)
    return torch.stack(images).reshape(B, V, 3, height, width)


# ----------------------------------------------------------------------------------------------
# The model


class FSM(nn.Module):
    def __init__(self, config: FSMConfig):
        super().__init__()
        self.config = config
        self.metadata: dict = {}  # training metadata, filled by fsm.load_checkpoint
        # the blocks' compute dtype: set it with fsm.precision.resolve_dtype (bf16 = autocast);
        # tokenizer, residual stream, heads and fast-weight state stay fp32 either way
        self.compute_dtype = torch.float32
        self.tokenizer = Tokenizer(config.dim, config.patch)
        self.blocks = nn.ModuleList(LaCETBlock(config) for _ in range(config.depth))
        if "lvsm" in config.heads:
            self.lvsm_head = LVSMHead(config.dim, config.patch)
        if "4dgs" in config.heads:
            self.gaussian_head = GaussianHead(config.dim, config.patch, config.gs_near, config.gs_far)

    @staticmethod
    def from_preset(name: str, **overrides) -> "FSM":
        return FSM(preset(name, **overrides))

    # -- the memory ------------------------------------------------------------------------

    def init_states(self, batch: int, elastic: ElasticConfig | None = None) -> list[ElasticState]:
        elastic = elastic or self.config.elastic
        return [blk.fw.init_state(batch, elastic) for blk in self.blocks]

    def ingest(
        self, states: list[ElasticState], chunk: Views, elastic: ElasticConfig | None = None, with_stats: bool = False
    ) -> tuple[list[ElasticState], list[UpdateStats | None]]:
        """Update every layer's fast weights with one chunk of input views (images required)."""
        if chunk.images is None:
            raise ValueError("input views need images")
        elastic = elastic or self.config.elastic
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

    def decode_gaussians(self, states: list[ElasticState], virtual_views: Views) -> Gaussians4D:
        """Pixel-aligned 4D Gaussians (leading dims (B, V*H*W)) from input views re-queried
        apply-only with the current fast weights (their RGB is kept: they are "virtual views")."""
        if not hasattr(self, "gaussian_head"):
            raise ValueError(f"this model has no 4DGS head (heads: {self.config.heads})")
        H, W = virtual_views.images.shape[-2:]
        return self.gaussian_head(self.query(states, virtual_views, H, W), virtual_views, H, W)

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
        {head: (B, Vt, 3, H, W)} for `heads` (default: all the model has).

        The same chunk loop as StreamSession, so a streamed clip equals this batched pass.
        """
        heads = heads or self.config.heads
        fpc = frames_per_chunk or self.config.frames_per_chunk
        H, W = inputs.images.shape[-2:]
        states = self.init_states(inputs.c2w.shape[0], elastic)
        for start in range(0, inputs.num_views, fpc):
            states, _ = self.ingest(states, inputs[start : start + fpc], elastic)
        out = {}
        for head in heads:
            if head == "lvsm":
                out[head] = self.render_lvsm(states, targets, H, W)
            elif head == "4dgs":
                out[head] = render_gaussians(self.decode_gaussians(states, inputs), targets, H, W)
            else:
                raise ValueError(f"unknown head {head!r}; this model has {self.config.heads}")
        return out

    def start_stream(self, time_span: tuple[float, float], **kwargs):
        """A fresh StreamSession over this model (see fsm.stream.StreamSession for the options)."""
        from fsm.stream import StreamSession

        return StreamSession(self, time_span=time_span, **kwargs)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

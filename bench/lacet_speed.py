"""Throughput of the fast-weight memory with and without elastic consolidation.

Two scopes, each timed forward and forward+backward, variants alternating in one run:
  step   the fast-weight step alone: per chunk, update (closed-form gradient, Muon) +
         consolidation + weight norm, then apply the new weights to the chunk's queries;
         q, k, v and learning rates are precomputed (no projections, no norms)
  layer  the whole FastWeightLayer (projections, RMSNorm, output projection included)
Variants: LaCT (lambda = 0) and LaCET (paper defaults), in fp32 and in bf16 autocast
(fsm.precision), plus, with `--official DIR`, the official LaCT release's fast-weight function
(DIR/lact_ttt.py, e.g. a scratch clone of github.com/a1600012888/LaCT's lact_nvs) run eager
on the fp32 tensors: it does its Newton-Schulz in bf16 and the rest in fp32. Our bf16 step gets
q, k, v in bf16, as the layer produces them under autocast (learning rates stay fp32).

    python bench/lacet_speed.py                                   # CPU, the small preset's layer
    python bench/lacet_speed.py --official /work/scratch/lact/lact_nvs
    python bench/lacet_speed.py --device cuda --dim 768 --dtypes fp32 bf16
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from fsm.lacet import ElasticConfig, FastWeightLayer, lacet_step, swiglu_apply
from fsm.precision import autocast, resolve_dtype


@dataclass
class Args:
    dim: int = 256  # model width D (fast-weight hidden = 2 D)
    chunk_tokens: int = 2048  # tokens per chunk (8 frames at 128x128)
    chunks: int = 4
    batch: int = 1
    muon_steps: int = 5
    repeats: int = 5  # timed rounds per variant (median), after one warm-up round
    device: str = "cpu"
    threads: int = 1  # torch CPU threads
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    scopes: tuple[str, ...] = ("step", "layer")
    official: Path | None = None  # folder holding the official release's lact_ttt.py


def load_official(folder: Path):
    """The official fast-weight function, eager (its @torch.compile is switched off)."""
    if not (folder / "lact_ttt.py").is_file():
        raise SystemExit(f"--official {folder}: no lact_ttt.py there")
    try:
        import einops  # noqa: F401  (the file imports it for its nn.Module only, which we don't use)
    except ImportError:
        sys.modules["einops"] = types.SimpleNamespace(rearrange=None)
    torch._dynamo.config.disable = True  # the figures are eager; inductor needs a C++ build per shape
    sys.path.insert(0, str(folder))
    import lact_ttt

    return lact_ttt


def step_ours(layer, qkvlr, cfg, chunks, n):
    q, k, v, lr = qkvlr
    state = layer.init_state(q.shape[0], cfg)
    out = []
    for c in range(chunks):
        s = slice(c * n, (c + 1) * n)
        state, _ = lacet_step(state, k[:, s], v[:, s], lr[:, s], layer.muon_steps, cfg)
        out.append(swiglu_apply(state.weights, q[:, s]))
    return torch.cat(out, 1)


def step_official(lact_ttt, layer, qkvlr, chunks, n):
    q, k, v, lr = qkvlr
    B = q.shape[0]
    w = [getattr(layer, m).unsqueeze(0).expand(B, -1, -1) for m in ("w0", "w1", "w2")]
    order = [lact_ttt.TTTOperator(c * n, (c + 1) * n, True, True) for c in range(chunks)]
    out, *_ = lact_ttt.fast_weight_swish_glu_weight_norm_mini_batch_apply(
        *w, q, k, v, lr[..., 0:1], lr[..., 1:2], lr[..., 2:3], order, muon_update_steps=layer.muon_steps)
    return out


def layer_ours(layer, x, cfg, chunks, n):
    state = layer.init_state(x.shape[0], cfg)
    out = []
    for c in range(chunks):
        y, state, _ = layer.update(x[:, c * n : (c + 1) * n], state, cfg)
        out.append(y)
    return torch.cat(out, 1)


def timed(fn, backward: bool, device) -> float:
    """Seconds of one call. On CPU the process's CPU time: one thread, so it is the wall time of
    an unloaded core and does not count the time other jobs on a shared machine hold the core."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    if backward:
        fn().float().square().mean().backward()
    else:
        with torch.no_grad():
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - t0


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    layer = FastWeightLayer(args.dim, 2 * args.dim, muon_steps=args.muon_steps).to(device)
    x = torch.randn(args.batch, args.chunks * args.chunk_tokens, args.dim, device=device)
    qkvlr = {}  # per dtype: q, k, v as the layer hands them to the step (bf16 under autocast), lr fp32
    for dt in (*args.dtypes, "fp32"):
        dtype = resolve_dtype(dt, device)
        with torch.no_grad(), autocast(device, dtype):
            qkvlr[dtype] = [t.detach().requires_grad_() for t in layer._qkv_lr(x)]
    tokens, n = args.batch * args.chunks * args.chunk_tokens, args.chunk_tokens
    lact_ttt = load_official(args.official) if args.official else None
    plain, elastic = ElasticConfig.plain_lact(), ElasticConfig()

    variants = {}  # name -> (scope, dtype, fn)
    for scope in args.scopes:
        for dt in args.dtypes:
            dtype = resolve_dtype(dt, device)
            for label, cfg in (("LaCT", plain), ("LaCET", elastic)):
                if scope == "step":
                    fn = lambda cfg=cfg, t=qkvlr[dtype]: step_ours(layer, t, cfg, args.chunks, n)
                else:
                    fn = lambda cfg=cfg: layer_ours(layer, x, cfg, args.chunks, n)
                variants[f"{scope} {label} {dt}"] = (scope, dtype, fn)
        if scope == "step" and lact_ttt is not None:
            fn = lambda: step_official(lact_ttt, layer, qkvlr[torch.float32], args.chunks, n)  # as the issue measured it
            variants["step official-LaCT (NS bf16)"] = (scope, torch.float32, fn)

    print(f"fast-weight memory D={args.dim} Dh={2 * args.dim}, {args.chunks} chunks x {args.chunk_tokens} tokens, "
          f"batch {args.batch}, Muon {args.muon_steps} steps, {device}, {torch.get_num_threads()} thread(s), "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, median of {args.repeats}\n")
    results = {}
    for backward in (False, True):
        times = {name: [] for name in variants}
        for _ in range(args.repeats + 1):  # first round warms up
            for name, (_, dtype, fn) in variants.items():
                with autocast(device, dtype):
                    times[name].append(timed(fn, backward, device))
        for name, t in times.items():
            results[name, backward] = tokens / sorted(t[1:])[len(t[1:]) // 2]  # median

    ref = "step official-LaCT (NS bf16)"
    print("| variant | fwd tokens/s | fwd+bwd tokens/s | vs LaCT same scope+dtype (fwd / fwd+bwd) |"
          + (" vs official (fwd / fwd+bwd) |" if lact_ttt else ""))
    print("|---|---|---|---|" + ("---|" if lact_ttt else ""))
    for name in variants:
        fwd, bwd = results[name, False], results[name, True]
        lact = name.replace("LaCET", "LaCT")
        rel = f"{fwd / results[lact, False]:.3f} / {bwd / results[lact, True]:.3f}" if lact in variants and lact != name else ""
        row = f"| {name} | {fwd:,.0f} | {bwd:,.0f} | {rel} |"
        if lact_ttt:
            row += f" {fwd / results[ref, False]:.2f}x / {bwd / results[ref, True]:.2f}x |" if name.startswith("step") else " |"
        print(row)


if __name__ == "__main__":
    main(tyro.cli(Args))

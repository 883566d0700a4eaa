"""Mamba-2 mixer with mamba_ssm's parameter names and shapes, and a one-position ``step``.

The same weights run two ways: on CPU (or when forced) the chunked SSD of ``ssd.py`` in plain
PyTorch; on CUDA, when mamba_ssm is installed, its fused chunked-scan kernel.

Parameters (as ``mamba_ssm.modules.mamba2.Mamba2``)::

    in_proj   Linear(d_model -> 2*d_inner + 2*ngroups*d_state + nheads), no bias; output order z, xBC, dt
    conv1d    depthwise causal Conv1d over xBC (channels d_inner + 2*ngroups*d_state), with bias
    dt_bias   (nheads,)      A_log (nheads,)      D (nheads,)
    norm      gated RMSNorm over d_inner: rmsnorm(y * silu(z)) * weight (norm after gate)
    out_proj  Linear(d_inner -> d_model), no bias
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .. import backends
from .layers import HI_DTYPE, hi
from .ssd import ssd_scan

__all__ = ["Mamba2", "Mamba2Cache", "GatedRMSNorm", "gated_rmsnorm_ref"]


@dataclass
class Mamba2Cache:
    """Recurrent state of one Mamba-2 layer for incremental decoding."""

    conv_state: torch.Tensor  # (B, conv_dim, d_conv): the last d_conv inputs of the convolution
    ssm_state: torch.Tensor  # (B, nheads, headdim, d_state), fp32


class GatedRMSNorm(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over groups of ``group_size`` channels, in fp32."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor, proj_weight: torch.Tensor | None = None) -> torch.Tensor:
        """With ``proj_weight`` (d_out, d), the output projected by it (``F.linear``, no bias):
        then the normalised activation is not kept for the projection's backward but rebuilt
        there, where the norm's own backward rebuilds it anyway."""
        if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (y, z, self.weight, proj_weight)
        ):
            return _GatedRMSNormFn.apply(y, z, self.weight, proj_weight, self.group_size, self.eps)
        out = gated_rmsnorm_ref(y, z, self.weight, self.group_size, self.eps)
        return out if proj_weight is None else F.linear(out, proj_weight)


def gated_rmsnorm_ref(y, z, weight, group_size: int, eps: float) -> torch.Tensor:
    """``rmsnorm(y * silu(z)) * weight`` in plain PyTorch (the reference; autograd differentiates it)."""
    h = hi(y) * F.silu(hi(z))
    h = rearrange(h, "... (g c) -> ... g c", c=group_size)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = rearrange(h, "... g c -> ... (g c)")
    return (h * hi(weight)).to(y.dtype)


class _GatedRMSNormFn(torch.autograd.Function):
    """:func:`gated_rmsnorm_ref`, optionally followed by a projection, with a hand-written
    backward that keeps only y, z and the reciprocal RMS (autograd would keep five activations of
    y's size, and the projection its input) and makes about half the passes over them that
    autograd's graph makes (on CPU each pass is a trip through memory)."""

    @staticmethod
    def forward(ctx, y, z, weight, proj_weight, group_size, eps):
        h = rearrange(hi(y) * F.silu(hi(z)), "... (g c) -> ... g c", c=group_size)
        ms = torch.linalg.vector_norm(h, dim=-1, keepdim=True).square_().div_(group_size)  # (..., g, 1)
        rstd = ms.add_(eps).rsqrt_()
        ctx.save_for_backward(y, z, weight, proj_weight, rstd)
        ctx.group_size = group_size
        out = rearrange(h.mul_(rstd), "... g c -> ... (g c)").mul_(hi(weight)).to(y.dtype)
        return out if proj_weight is None else F.linear(out, proj_weight)

    @staticmethod
    def backward(ctx, grad):
        y, z, weight, proj_weight, rstd = ctx.saved_tensors
        c = ctx.group_size
        y32, z32, w = hi(y), hi(z), hi(weight)
        gate = F.silu(z32)
        h_norm = rearrange(y32 * gate, "... (g c) -> ... g c", c=c).mul_(rstd)  # normalised, before weight
        h_norm = rearrange(h_norm, "... g c -> ... (g c)")
        grad_proj = None
        if proj_weight is not None:
            # In the gradient's dtype: under autocast the forward's projection ran in bf16/fp16.
            if ctx.needs_input_grad[3]:
                out = (h_norm * w).to(grad.dtype)  # the projection's input, rebuilt
                grad_proj = (grad.reshape(-1, grad.shape[-1]).t() @ out.reshape(-1, out.shape[-1])).to(proj_weight.dtype)
                del out
            grad = grad @ proj_weight.to(grad.dtype)
        # Temporaries are dropped as soon as they are used: in a training step this backward runs
        # with nearly every activation still kept, where live memory peaks.
        g = hi(grad)
        gh = g * h_norm
        grad_weight = gh.reshape(-1, gh.shape[-1]).sum(0)
        # d rmsnorm: rstd * (g w - h_norm * mean(g w h_norm)) over each group
        dot = torch.einsum("...gc,gc->...g", rearrange(gh, "... (g c) -> ... g c", c=c), w.view(-1, c))
        del gh
        grad_h = rearrange(g * w, "... (g c) -> ... g c", c=c)
        del g, grad
        h_norm = rearrange(h_norm, "... (g c) -> ... g c", c=c)
        grad_h = grad_h.addcmul_(h_norm, dot.unsqueeze(-1), value=-1.0 / c).mul_(rstd)
        del h_norm
        grad_h = rearrange(grad_h, "... g c -> ... (g c)")
        grad_y = (grad_h * gate).to(y.dtype)
        del gate
        grad_z = torch.ops.aten.silu_backward(grad_h.mul_(y32), z32).to(z.dtype)
        return grad_y, grad_z, grad_weight.to(weight.dtype), grad_proj, None, None


def conv_silu_ref(xBC: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``silu(causal depthwise convolution)``: (B, L, C) -> (B, L, C); weight (C, 1, K), bias (C,).

    Run as a 2-D convolution over (B, C, 1, L) in channels-last memory, which is xBC's own
    (B, L, C) layout: no transposed copies in or out, and oneDNN's channels-last depthwise
    kernels (CPU) are 2-3x faster than Conv1d's on the transposed input. The reference: autograd
    differentiates it."""
    return F.silu(_causal_depthwise_conv(xBC, weight, bias))


def _causal_depthwise_conv(xBC, weight, bias, anti_causal: bool = False) -> torch.Tensor:
    """(B, L, C) -> (B, L, C): out[l] = sum_j weight[j] x[l - (K-1) + j] (+ bias); anti-causal:
    out[l] = sum_j weight[j] x[l + j]."""
    length, channels, k = xBC.shape[1], xBC.shape[2], weight.shape[-1]
    x = xBC.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C, 1, L), channels-last strides
    y = F.conv2d(x, weight.unsqueeze(2), bias, padding=(0, k - 1), groups=channels)  # (B, C, 1, L + K - 1)
    y = y[..., k - 1:] if anti_causal else y[..., :length]
    return y.permute(0, 2, 3, 1).squeeze(1)  # (B, L, C)


class _ConvSiluFn(torch.autograd.Function):
    """:func:`conv_silu_ref` with a hand-written backward that keeps only its input (a view of
    in_proj's output, kept anyway) and reruns the convolution. On CPU oneDNN's depthwise
    convolution backward is slow (about 14 ms of a 16,384-position layer's step, measured; the
    forward takes 2.5): here the input's gradient is the same convolution run forward over the
    gradient with the taps reversed, and each tap's weight gradient one multiply-and-sum over a
    shifted view. Computed in fp32 whatever the forward's dtype (autocast)."""

    @staticmethod
    def forward(ctx, xBC, weight, bias):
        ctx.save_for_backward(xBC, weight, bias)
        return conv_silu_ref(xBC, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        xBC, weight, bias = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):  # fp32 even if called under autocast
            x32, w32 = hi(xBC), hi(weight)
            length, k = x32.shape[1], w32.shape[-1]
            b32 = hi(bias) if bias is not None else None
            pre = _causal_depthwise_conv(x32, w32, b32)  # (B, L, C), before the silu
            grad_pre = torch.ops.aten.silu_backward(hi(grad), pre)
            del pre
            grad_bias = grad_pre.sum((0, 1)) if bias is not None else None
            # out[l] = sum_j w[j] x[l - (K-1) + j]  =>  grad_x[m] = sum_j w[K-1-j] grad_pre[m + j]
            grad_x = _causal_depthwise_conv(grad_pre, w32.flip(-1), None, anti_causal=True)
            # grad_w[c, j] = sum over rows and positions of grad_pre[l] * x[l - s], s = K-1-j
            # (no pairs when s >= L: a sequence shorter than the kernel)
            grad_w = torch.stack([(grad_pre[:, s:] * x32[:, :max(length - s, 0)]).sum((0, 1))
                                  for s in range(k - 1, -1, -1)], -1)  # (C, K)
        return grad_x.to(xBC.dtype), grad_w.unsqueeze(1).to(weight.dtype), (
            grad_bias.to(bias.dtype) if bias is not None else None)


class Mamba2(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.ngroups = ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim, padding=d_conv - 1
        )
        # dt_bias = softplus^-1(dt) for dt log-uniform in [dt_min, dt_max] (mamba_ssm's init).
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    # ----------------------------------------------------------------------------- helpers
    def _split(self, zxbcdt: torch.Tensor):
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _in_proj(self, u: torch.Tensor):
        """z, xBC, dt from in_proj. Training on CPU, as three products with slices of its weight:
        the backward of one product split three ways concatenates the three gradients into a
        new (B, L, 2 d_inner + 2 G N + H) tensor first, a pass through memory that costs more
        there than the two extra (small) products (cpu_small models' training steps 2-7 % faster at
        1 kb, level at 16 kb: benchmarks/RESULTS.md). A wrapped projection (a peft LoRA layer, whose
        ``.weight`` is its base weight alone) is called as a module, so that its adapter counts."""
        if u.device.type == "cpu" and torch.is_grad_enabled() and type(self.in_proj) is nn.Linear:
            w = self.in_proj.weight
            cuts = (0, self.d_inner, self.d_inner + self.conv_dim, w.shape[0])
            return tuple(F.linear(u, w[a:b]) for a, b in zip(cuts, cuts[1:]))
        return self._split(self.in_proj(u))

    def _split_xbc(self, xBC: torch.Tensor):
        gn = self.ngroups * self.d_state
        return torch.split(xBC, [self.d_inner, gn, gn], dim=-1)

    # ----------------------------------------------------------------------------- forward
    def forward(
        self, u: torch.Tensor, mask: torch.Tensor | None = None, cache: Mamba2Cache | None = None
    ) -> torch.Tensor:
        """u: (B, L, d_model); mask: (B, L) bool, right-padded. With ``cache``, fill it with each
        row's state after its last real position (for decoding that follows)."""
        z, xBC, dt = self._in_proj(u)
        if cache is not None:
            cache.conv_state = self._last_conv_inputs(xBC, mask)
        y = self._mixed(xBC, dt, mask, cache)
        return self._norm_out(y, z)

    def _mixed(self, xBC, dt, mask, cache: Mamba2Cache | None = None) -> torch.Tensor:
        """The layer between its projections: convolution, step sizes and scan of in_proj's xBC
        (B, L, conv_dim) and dt (B, L, H) -> y (B, L, d_inner), before the gated norm."""
        xBC = self._conv_silu(xBC)  # (B, L, conv_dim)
        dt = F.softplus(hi(dt) + hi(self.dt_bias))  # (B, L, H)
        if mask is not None:
            # dt = 0 at padding: the state passes through unchanged, so the final state is each
            # row's state after its last real base. Outputs at real positions are unaffected.
            dt = dt * mask[..., None]
        y, final_state = self._scan(xBC, dt, None, want_final=cache is not None)
        if cache is not None:
            cache.ssm_state = hi(final_state)
        return y

    def _scan(self, xBC, dt, initial_state, want_final: bool):
        """The state-space scan of the convolved xBC (B, L, conv_dim) with step sizes dt (B, L, H)
        fp32, from ``initial_state`` (B, H, P, N) or zeros. Returns (y + D x (B, L, d_inner), the
        final state or None)."""
        x, Bm, Cm = self._split_xbc(xBC)
        A = -torch.exp(hi(self.A_log))  # (H,)
        x = rearrange(x, "b l (h p) -> b l h p", p=self.headdim)
        Bm = rearrange(Bm, "b l (g n) -> b l g n", g=self.ngroups)
        Cm = rearrange(Cm, "b l (g n) -> b l g n", g=self.ngroups)

        kernel = backends.mamba_ssm_ops() if backends.use_fast_path(xBC) else None
        if kernel is not None:
            out = kernel(
                x, dt.float(), A.float(), Bm, Cm, chunk_size=self.chunk_size, D=self.D.float(),
                dt_bias=None, dt_softplus=False, return_final_states=want_final,
                initial_states=None if initial_state is None else initial_state.float(),
            )
            y, final_state = out if want_final else (out, None)
        else:
            x32 = hi(x)
            y, final_state = ssd_scan(  # the scan of dt * x, dt folded into its decay factors
                x32, dt * A, hi(Bm), hi(Cm), chunk_size=self.chunk_size, initial_state=initial_state,
                return_final_state=True, x_scale=dt,
            )
            y = torch.addcmul(y, x32, hi(self.D)[:, None]).to(x.dtype)  # + D x, the skip
        return rearrange(y, "b l h p -> b l (h p)"), final_state

    @torch.no_grad()
    def extend(self, u: torch.Tensor, cache: Mamba2Cache) -> torch.Tensor:
        """Continue from ``cache`` over a block of positions (no padding): u (B, K, d_model) ->
        (B, K, d_model), the cache moved past the block. The same outputs as one forward over
        everything seen so far, at a cost that does not grow with it."""
        z, xBC, dt = self._split(self.in_proj(u))
        # the convolution sees the last d_conv inputs before the block (zeros before the start)
        conv_in = torch.cat([rearrange(cache.conv_state, "b c k -> b k c").to(xBC.dtype), xBC], dim=1)
        cache.conv_state = rearrange(conv_in[:, -self.d_conv:], "b k c -> b c k").contiguous()
        xBC = conv_silu_ref(conv_in, self.conv1d.weight, self.conv1d.bias)[:, self.d_conv:]
        dt = F.softplus(hi(dt) + hi(self.dt_bias))  # (B, K, H)
        y, final_state = self._scan(xBC, dt, cache.ssm_state, want_final=True)
        cache.ssm_state = hi(final_state)
        return self._norm_out(y, z)

    def _norm_out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """out_proj(norm(y, z)). The norm and out_proj as one function (out_proj's input is not kept;
        it has no bias), unless out_proj is wrapped (a peft LoRA layer: its ``.weight`` is the base
        weight alone), which is then called as a module."""
        if type(self.out_proj) is nn.Linear:
            return self.norm(y, z, self.out_proj.weight)
        return self.out_proj(self.norm(y, z))

    def _conv_silu(self, xBC: torch.Tensor) -> torch.Tensor:
        """silu(causal depthwise convolution): (B, L, conv_dim) -> (B, L, conv_dim)."""
        w, b = self.conv1d.weight, self.conv1d.bias
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xBC, w, b))):
            return conv_silu_ref(xBC, w, b)
        if xBC.device.type == "cpu" and not backends.reference_forced():
            return _ConvSiluFn.apply(xBC, w, b)  # oneDNN's depthwise backward is the slow part
        # Rerun in the backward pass rather than keep the padded input and the pre-activation:
        # two activations of the layer's widest size for one depthwise convolution's work.
        return checkpoint(conv_silu_ref, xBC, w, b, use_reentrant=False)

    def _last_conv_inputs(self, xBC: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, conv_dim, d_conv): each row's last d_conv convolution inputs, zeros before its start."""
        batch, length, _ = xBC.shape
        lengths = mask.sum(-1) if mask is not None else torch.full((batch,), length, device=xBC.device)
        padded = F.pad(xBC, (0, 0, self.d_conv, 0))  # d_conv zeros in front
        idx = lengths[:, None] + torch.arange(self.d_conv, device=xBC.device)[None, :]  # (B, d_conv)
        window = torch.gather(padded, 1, idx[..., None].expand(-1, -1, self.conv_dim))
        return window.transpose(1, 2).contiguous()

    # -------------------------------------------------------------------------------- step
    def allocate_cache(self, batch: int, device=None, dtype=None) -> Mamba2Cache:
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        return Mamba2Cache(
            conv_state=torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
            ssm_state=torch.zeros(
                batch, self.nheads, self.headdim, self.d_state, device=device, dtype=HI_DTYPE(self.A_log)
            ),
        )

    def step(self, u: torch.Tensor, cache: Mamba2Cache, active: torch.Tensor | None = None) -> torch.Tensor:
        """One position. u: (B, d_model) -> (B, d_model). Rows where ``active`` is False compute an
        output (to be discarded) but leave their cache untouched."""
        z, xBC, dt = self._split(self.in_proj(u))
        conv_state = torch.cat([cache.conv_state[..., 1:], xBC[..., None].to(cache.conv_state.dtype)], -1)
        weight = rearrange(self.conv1d.weight, "c 1 w -> c w")
        xBC = F.silu((conv_state * weight).sum(-1) + self.conv1d.bias).to(u.dtype)
        x, Bm, Cm = self._split_xbc(xBC)

        with torch.autocast(u.device.type, enabled=False):  # the state update stays in fp32
            dt = F.softplus(hi(dt) + hi(self.dt_bias))  # (B, H)
            A = -torch.exp(hi(self.A_log))
            x = hi(rearrange(x, "b (h p) -> b h p", p=self.headdim))
            rep = self.nheads // self.ngroups
            Bm = hi(rearrange(Bm, "b (g n) -> b g n", g=self.ngroups)).repeat_interleave(rep, dim=1)
            Cm = hi(rearrange(Cm, "b (g n) -> b g n", g=self.ngroups)).repeat_interleave(rep, dim=1)
            ssm_state = cache.ssm_state * torch.exp(dt * A)[..., None, None] + torch.einsum(
                "bhp,bhn->bhpn", x * dt[..., None], Bm
            )
            y = torch.einsum("bhpn,bhn->bhp", ssm_state, Cm) + x * hi(self.D)[:, None]
        if active is None:
            cache.conv_state, cache.ssm_state = conv_state, ssm_state
        else:
            keep = active.view(-1, 1, 1)
            cache.conv_state = torch.where(keep, conv_state, cache.conv_state)
            cache.ssm_state = torch.where(keep[..., None], ssm_state, cache.ssm_state)
        y = self.norm(rearrange(y, "b h p -> b (h p)").to(u.dtype), z)
        return self.out_proj(y)


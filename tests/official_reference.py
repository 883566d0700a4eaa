"""A naive, loop-based forward pass with the semantics of the official goombalab/hnet model.

It reads nothing but a state dict with the official key names and an official config, and is
written from the official code's behaviour, one position at a time, without any of hnet_dna's
modules. The tests compare it with ``HNetForCausalLM`` on official-format checkpoints, so a
convention slip (SwiGLU halves, rotary layout, window bounds, routing q/k, EMA start, residual
placement, width padding) shows up as a mismatch.

Single sequence, no padding, fp64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hnet_dna.config import HNetConfig, parse_layout


def rmsnorm(x, w, eps=1e-5):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def mamba2(sd, p, cfg: HNetConfig, x):
    ssm = cfg.ssm_cfg
    L, d = x.shape
    d_inner = ssm.expand * d
    nheads = d_inner // ssm.headdim
    gn = ssm.ngroups * ssm.d_state
    zxbcdt = x @ sd[p + "in_proj.weight"].T
    z, xbc, dt = zxbcdt[:, :d_inner], zxbcdt[:, d_inner : 2 * d_inner + 2 * gn], zxbcdt[:, 2 * d_inner + 2 * gn :]
    w, bias = sd[p + "conv1d.weight"][:, 0], sd[p + "conv1d.bias"]
    K = w.shape[1]
    conv = torch.stack(
        [bias + sum(w[:, k] * xbc[t - K + 1 + k] for k in range(K) if t - K + 1 + k >= 0) for t in range(L)]
    )
    xbc = F.silu(conv)
    xs, Bs, Cs = xbc[:, :d_inner], xbc[:, d_inner : d_inner + gn], xbc[:, d_inner + gn :]
    A = -torch.exp(sd[p + "A_log"])
    Dskip = sd[p + "D"]
    dt = F.softplus(dt + sd[p + "dt_bias"])
    heads_per_group = nheads // ssm.ngroups
    y = torch.zeros(L, d_inner, dtype=x.dtype)
    for h in range(nheads):
        g = h // heads_per_group
        state = torch.zeros(ssm.headdim, ssm.d_state, dtype=x.dtype)
        for t in range(L):
            xh = xs[t, h * ssm.headdim : (h + 1) * ssm.headdim]
            Bt = Bs[t, g * ssm.d_state : (g + 1) * ssm.d_state]
            Ct = Cs[t, g * ssm.d_state : (g + 1) * ssm.d_state]
            state = torch.exp(dt[t, h] * A[h]) * state + dt[t, h] * torch.outer(xh, Bt)
            y[t, h * ssm.headdim : (h + 1) * ssm.headdim] = state @ Ct + Dskip[h] * xh
    gated = y * F.silu(z)
    group = d_inner // ssm.ngroups
    normed = torch.cat(
        [rmsnorm(gated[:, i * group : (i + 1) * group], 1.0) for i in range(ssm.ngroups)], dim=-1
    ) * sd[p + "norm.weight"]
    return normed @ sd[p + "out_proj.weight"].T


def attention(sd, p, cfg: HNetConfig, stage, x):
    L, d = x.shape
    a = cfg.stage_attn(stage)
    H, rot, W = a["num_heads"], a["rotary_emb_dim"], a["window_size"]
    dh = d // H
    qkv = (x @ sd[p + "Wqkv.weight"].T).view(L, 3, H, dh)
    q, k, v = qkv[:, 0].clone(), qkv[:, 1].clone(), qkv[:, 2]
    inv_freq = (1.0 / 10000 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)).double()
    half = rot // 2
    for t in range(L):
        cos, sin = torch.cos(t * inv_freq), torch.sin(t * inv_freq)
        for m in (q, k):
            x1, x2 = m[t, :, :half].clone(), m[t, :, half:rot].clone()
            m[t, :, :half] = x1 * cos - x2 * sin
            m[t, :, half:rot] = x2 * cos + x1 * sin
    out = torch.zeros(L, H, dh, dtype=x.dtype)
    for i in range(L):
        lo = 0 if W < 0 else max(0, i - W)
        for h in range(H):
            s = torch.stack([q[i, h] @ k[j, h] for j in range(lo, i + 1)]) / math.sqrt(dh)
            out[i, h] = s.softmax(0) @ v[lo : i + 1, h]
    return out.reshape(L, d) @ sd[p + "out_proj.weight"].T


def isotropic(sd, p, cfg, stage, layout, x):
    residual = x
    for i, kind in enumerate(parse_layout(layout)):
        lp = f"{p}layers.{i}."
        h = rmsnorm(residual, sd[lp + "norm1.weight"])
        if kind in "mM":
            residual = residual + mamba2(sd, lp + "mixer.", cfg, h)
        else:
            residual = residual + attention(sd, lp + "mixer.", cfg, stage, h)
        if kind in "MT":
            h = rmsnorm(residual, sd[lp + "norm2.weight"])
            hidden = h @ sd[lp + "mlp.fc1.weight"].T
            y, gate = hidden.chunk(2, dim=-1)  # gate = second half
            residual = residual + (F.silu(gate) * y) @ sd[lp + "mlp.fc2.weight"].T
    return rmsnorm(residual, sd[p + "rmsnorm.weight"])


def stage_forward(sd, p, cfg: HNetConfig, stage, x):
    width = x.shape[-1]
    if p + "pad_dimension" in sd:
        x = torch.cat([x, sd[p + "pad_dimension"].expand(x.shape[0], -1)], -1)
    layout = cfg.stage_layout(stage)
    if len(layout) == 1:
        return isotropic(sd, p + "main_network.", cfg, stage, layout[0], x)[:, :width]
    h = isotropic(sd, p + "encoder.", cfg, stage, layout[0], x)
    residual = h @ sd[p + "residual_proj.weight"].T + sd[p + "residual_proj.bias"]
    wq, wk = sd[p + "routing_module.q_proj_layer.weight"], sd[p + "routing_module.k_proj_layer.weight"]
    probs = [1.0]
    for t in range(1, h.shape[0]):
        prev, cur = wq @ h[t - 1], wk @ h[t]
        cos = (prev @ cur) / (prev.norm() * cur.norm())
        probs.append(float(torch.clamp((1 - cos) / 2, 0, 1)))
    boundaries = [t for t, pt in enumerate(probs) if pt > 0.5]
    z = stage_forward(sd, p + "main_network.", cfg, stage + 1, h[boundaries])
    state = torch.zeros(h.shape[1], dtype=h.dtype)
    smoothed = []
    for j, t in enumerate(boundaries):
        P = min(max(probs[t], 1e-4), 1 - 1e-4)
        state = P * z[j] + (1 - P) * state
        smoothed.append(state)
    y = torch.stack([smoothed[sum(1 for b in boundaries if b <= t) - 1] for t in range(h.shape[0])])
    y = y + residual  # STE(c) = 1 in the forward pass
    return isotropic(sd, p + "decoder.", cfg, stage, layout[2], y)[:, :width]


def official_logits(state_dict: dict, cfg: HNetConfig, ids: torch.Tensor) -> torch.Tensor:
    """ids: (L,) -> logits (L, V)."""
    sd = {k: v.double() for k, v in state_dict.items()}
    x = sd["embeddings.weight"][ids]
    out = stage_forward(sd, "backbone.", cfg, 0, x)
    return out @ sd["lm_head.weight"].T

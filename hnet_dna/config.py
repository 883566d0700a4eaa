"""HNetConfig: the official goombalab/hnet fields plus hnet_dna's own, JSON in/out, presets.

A model has ``S + 1`` stages for ``S`` chunking levels. Stage 0 works at base-pair resolution;
stage ``s + 1`` sees the chunks that stage ``s`` routed. ``arch_layout`` nests the stages::

    ["m3T1", ["T15"], "m4"]        # encoder "m3T1", inner stage ["T15"], decoder "m4"
    ["T9"]                         # a single stage: an isotropic model (no chunking)

Layout strings are runs of ``<letter><count>``: ``m`` Mamba-2, ``M`` Mamba-2 + SwiGLU MLP,
``t`` attention, ``T`` attention + SwiGLU MLP.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["HNetConfig", "SSMConfig", "AttnConfig", "ConfigError", "presets", "parse_layout"]

LAYOUT_RE = re.compile(r"([mMtT])(\d+)")
OFFICIAL_FIELDS = (
    "arch_layout",
    "d_model",
    "d_intermediate",
    "vocab_size",
    "ssm_cfg",
    "attn_cfg",
    "tie_embeddings",
)


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model."""


def parse_layout(layout: str) -> list[str]:
    """``"m3T1"`` -> ``["m", "m", "m", "T"]``; raises :class:`ConfigError` on anything else."""
    if not isinstance(layout, str) or not layout:
        raise ConfigError(f"layout must be a non-empty string like 'm3T1', got {layout!r}")
    parts = LAYOUT_RE.findall(layout)
    if "".join(a + n for a, n in parts) != layout:
        raise ConfigError(
            f"layout {layout!r} is not a run of <block><count> pairs; blocks are m (Mamba-2), "
            "M (Mamba-2 + MLP), t (attention), T (attention + MLP), e.g. 'm3T1'"
        )
    return [a for a, n in parts for _ in range(int(n))]


@dataclass
class SSMConfig:
    """Mamba-2 mixer settings (mamba_ssm's ``Mamba2`` arguments). Each field is one value for
    every stage or, as the official ``get_stage_cfg`` allows, a list with one value per stage."""

    d_conv: int | list[int] = 4
    """Width of the causal depthwise convolution."""
    expand: int | list[int] = 2
    """Inner width = ``expand * d_model``."""
    d_state: int | list[int] = 128
    """SSM state size N per head."""
    chunk_size: int | list[int] = 256
    """Chunk length of the chunked SSD scan (speed only; results do not depend on it)."""
    headdim: int | list[int] = 64
    """Channels per SSM head (mamba_ssm default; the official configs leave it implicit)."""
    ngroups: int | list[int] = 1
    """Groups sharing B and C (mamba_ssm default)."""

    def for_stage(self, stage: int) -> "SSMConfig":
        """The settings of one stage, every field a single value."""
        return SSMConfig(**{k: v[stage] if isinstance(v, list) else v for k, v in asdict(self).items()})


@dataclass
class AttnConfig:
    """Attention settings, one entry per stage (outer first)."""

    num_heads: list[int] = field(default_factory=list)
    rotary_emb_dim: list[int] = field(default_factory=list)
    """Rotary embedding on the first ``rotary_emb_dim`` channels of each head (0 = none)."""
    window_size: list[int] = field(default_factory=list)
    """Sliding window W: query i sees keys i - W .. i; -1 = global."""


@dataclass
class HNetConfig:
    """Everything needed to build an :class:`~hnet_dna.HNetForCausalLM`.

    The first seven fields are the official goombalab/hnet config fields, with the same meaning;
    the rest are hnet_dna's own.
    """

    arch_layout: list = field(default_factory=lambda: ["m2", ["T2"], "m2"])
    """Nested layout, outer stage first (module docstring)."""
    d_model: list[int] = field(default_factory=lambda: [64, 64])
    """Width per stage; must not shrink going inward."""
    d_intermediate: list[int] = field(default_factory=lambda: [0, 128])
    """SwiGLU hidden width per stage (rounded up to a multiple of 128); 0 = no MLP blocks."""
    vocab_size: int = 8
    """8 for the nucleotide tokenizer (9 for a masked LM: <mask> is id 8), 256 for byte-level (official) models."""
    ssm_cfg: SSMConfig = field(default_factory=SSMConfig)
    attn_cfg: AttnConfig = field(default_factory=AttnConfig)
    tie_embeddings: bool = False
    """Share the input embedding matrix with the output head."""

    # --- hnet_dna's own fields ------------------------------------------------------------
    ratio_targets: list[float] = field(default_factory=list)
    """Target compression N per chunking level (outer first); empty = 3.0 each (the paper's DNA N)."""
    ratio_loss_weight: float = 0.03
    """alpha in L = L_AR + alpha * sum over levels of L_ratio (eq. 10)."""
    tokenizer_mode: str = ""
    """``"nucleotide"`` or ``"byte"``; empty = inferred from ``vocab_size`` (256 -> byte)."""
    lr_multipliers: list[float] = field(default_factory=list)
    """Relative learning rate per stage (outer first), divided by the first entry so that stage 0
    (base-pair resolution) runs at the task's ``lr``; empty = eq. 11 (see ``hnet_dna.optim``)."""
    initializer_range: float = 0.02
    """Std of the normal init of linear layers (output projections are scaled by depth)."""
    bidirectional: bool = False
    """A masked-LM H-Net (:class:`~hnet_dna.model.masked_lm.HNetForMaskedLM`): Mamba-2 layers read
    both ways, attention attends both ways, dechunking without the causal EMA."""

    def __post_init__(self):
        if isinstance(self.ssm_cfg, dict):
            self.ssm_cfg = _build(SSMConfig, self.ssm_cfg, "ssm_cfg")
        if isinstance(self.attn_cfg, dict):
            self.attn_cfg = _build(AttnConfig, self.attn_cfg, "attn_cfg")
        if not self.tokenizer_mode:
            self.tokenizer_mode = "byte" if self.vocab_size == 256 else "nucleotide"
        if not self.ratio_targets:
            self.ratio_targets = [3.0] * (self.num_stages - 1) if isinstance(self.d_model, list) else []
        self.validate()

    # ------------------------------------------------------------------------------ structure
    @property
    def num_stages(self) -> int:
        return len(self.d_model)

    def stage_layout(self, stage: int) -> list:
        """The nested layout list of ``stage`` (0 = outermost)."""
        layout = self.arch_layout
        for _ in range(stage):
            layout = layout[1]
        return layout

    def stage_attn(self, stage: int) -> dict:
        a = self.attn_cfg
        return {
            "num_heads": a.num_heads[stage],
            "rotary_emb_dim": a.rotary_emb_dim[stage] if a.rotary_emb_dim else 0,
            "window_size": a.window_size[stage] if a.window_size else -1,
        }

    def uses(self, letters: str) -> bool:
        """Whether any layout string of the model holds one of ``letters``."""
        return any(ch in letters for ch in json.dumps(self.arch_layout))

    def validate(self) -> None:
        """Raise :class:`ConfigError` with what is wrong and how to fix it."""
        n = self._check_layout(self.arch_layout, 0)
        for key, value in asdict(self.ssm_cfg).items():
            if isinstance(value, list) and len(value) != n:
                raise ConfigError(f"ssm_cfg.{key} must be one value or a list of {n} (one per stage), got {value!r}")
        for name in ("d_model", "d_intermediate"):
            v = getattr(self, name)
            if not isinstance(v, list) or len(v) != n or not all(isinstance(x, int) for x in v):
                raise ConfigError(f"{name} must be a list of {n} integers (one per stage), got {v!r}")
        for s in range(n - 1):
            if self.d_model[s + 1] < self.d_model[s]:
                raise ConfigError(
                    f"d_model must not shrink going inward: stage {s} has {self.d_model[s]}, "
                    f"stage {s + 1} has {self.d_model[s + 1]} (widths {self.d_model})"
                )
        for s in range(n):
            blocks = self._stage_blocks(s)
            if any(b in "MT" for b in blocks) and self.d_intermediate[s] <= 0:
                raise ConfigError(
                    f"stage {s} has blocks with an MLP (M or T) but d_intermediate[{s}] is "
                    f"{self.d_intermediate[s]}: give it a positive width"
                )
            if any(b in "mM" for b in blocks):
                ssm = self.ssm_cfg.for_stage(s)
                d_inner = ssm.expand * self.d_model[s]
                if d_inner % ssm.headdim or (d_inner // ssm.headdim) % ssm.ngroups:
                    raise ConfigError(
                        f"stage {s}: expand * d_model = {d_inner} must be a multiple of "
                        f"ssm_cfg.headdim = {ssm.headdim}, in a number of heads divisible by "
                        f"ngroups = {ssm.ngroups}"
                    )
            if any(b in "tT" for b in blocks):
                a = self.attn_cfg
                if len(a.num_heads) != n:
                    raise ConfigError(
                        f"attn_cfg.num_heads must have one entry per stage ({n}), got {a.num_heads!r}"
                    )
                for key in ("rotary_emb_dim", "window_size"):
                    val = getattr(a, key)
                    if val and len(val) != n:
                        raise ConfigError(f"attn_cfg.{key} must have {n} entries, got {val!r}")
                heads = a.num_heads[s]
                if heads <= 0 or self.d_model[s] % heads:
                    raise ConfigError(
                        f"stage {s}: d_model {self.d_model[s]} is not divisible by num_heads {heads}"
                    )
                rot = self.stage_attn(s)["rotary_emb_dim"]
                if rot % 2 or rot > self.d_model[s] // heads:
                    raise ConfigError(
                        f"stage {s}: rotary_emb_dim {rot} must be even and at most the head dim "
                        f"{self.d_model[s] // heads}"
                    )
        if len(self.ratio_targets) != n - 1 or any(t <= 1 for t in self.ratio_targets):
            raise ConfigError(
                f"ratio_targets must hold {n - 1} numbers > 1 (one per chunking level), "
                f"got {self.ratio_targets!r}"
            )
        if self.lr_multipliers and len(self.lr_multipliers) != n:
            raise ConfigError(f"lr_multipliers must have {n} entries, got {self.lr_multipliers!r}")
        if self.lr_multipliers and any(not m > 0 for m in self.lr_multipliers):
            raise ConfigError(f"lr_multipliers must be positive, got {self.lr_multipliers!r}")
        if self.tokenizer_mode not in ("nucleotide", "byte"):
            raise ConfigError(f"tokenizer_mode must be 'nucleotide' or 'byte', got {self.tokenizer_mode!r}")
        need = 256 if self.tokenizer_mode == "byte" else 9 if self.bidirectional else 8
        if self.vocab_size < need:
            raise ConfigError(
                f"vocab_size {self.vocab_size} is too small for the {self.tokenizer_mode} tokenizer "
                f"(needs {need}{'; a masked LM needs the <mask> id 8' if need == 9 else ''})"
            )

    def _check_layout(self, layout: Any, depth: int) -> int:
        """Validate the nesting; returns the number of stages."""
        if isinstance(layout, list) and len(layout) == 1:
            parse_layout(layout[0])
            return depth + 1
        if isinstance(layout, list) and len(layout) == 3 and isinstance(layout[1], list):
            parse_layout(layout[0])
            parse_layout(layout[2])
            return self._check_layout(layout[1], depth + 1)
        raise ConfigError(
            f"arch_layout at stage {depth} must be [encoder, [inner...], decoder] or [main], "
            f"got {layout!r}"
        )

    def _stage_blocks(self, stage: int) -> list[str]:
        layout = self.stage_layout(stage)
        return [b for part in layout if isinstance(part, str) for b in parse_layout(part)]

    # ---------------------------------------------------------------------------- JSON in/out
    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["bidirectional"]:  # causal models' config.json and run fingerprints as before the field
            del d["bidirectional"]
        return d

    def to_official_dict(self) -> dict:
        """Only the seven official fields, as goombalab/hnet's loader reads them (``ssm_cfg`` keeps
        ``headdim`` / ``ngroups`` only where they differ from mamba_ssm's defaults)."""
        d = self.to_dict()
        defaults = SSMConfig()
        for key in ("headdim", "ngroups"):
            if d["ssm_cfg"][key] == getattr(defaults, key):
                del d["ssm_cfg"][key]
        return {k: d[k] for k in OFFICIAL_FIELDS}

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "HNetConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        return _build(cls, d, source)

    def to_json(self, path: str | Path) -> None:
        """Write every field (official + hnet_dna's) as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "HNetConfig":
        """Read an official goombalab/hnet config JSON unchanged, or one written by :meth:`to_json`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if isinstance(d, dict) and d.get("model_type") == "hnet_dna":  # also a transformers config (hnet_dna.hf)
            d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        return cls.from_dict(d, source=str(path))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HNetConfig":
        """A named preset (see :func:`presets`), optionally with fields overridden."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {', '.join(presets())}")
        d = _PRESETS[name]()
        d.update(overrides)
        return cls.from_dict(d, source=f"preset {name!r}")


def _build(klass, d: dict, source: str):
    known = {f.name for f in fields(klass)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)} for {klass.__name__}; "
            f"known fields: {', '.join(sorted(known))}"
        )
    try:
        return klass(**d)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from None


# --------------------------------------------------------------------------------- presets
def _paper_dna(layout, d_intermediate, d_model):
    """The paper's DNA models (Table: HG38, d_model 512, N = 3); attention heads of 64 channels
    with rotary on half of them, as the official configs do. The outer stage's attention uses the
    official 1023-base window; the inner stage is global."""
    n = len(d_model)
    return {
        "arch_layout": layout,
        "d_model": d_model,
        "d_intermediate": d_intermediate,
        "vocab_size": 8,
        "ssm_cfg": {"d_conv": 4, "expand": 2, "d_state": 128, "chunk_size": 256},
        "attn_cfg": {
            "num_heads": [8] * n,
            "rotary_emb_dim": [32] * n,
            "window_size": [1023] * (n - 1) + [-1],
        },
        "tie_embeddings": False,
    }


def _tiny(layout, d_model, d_intermediate):
    n = len(d_model)
    return {
        "arch_layout": layout,
        "d_model": d_model,
        "d_intermediate": d_intermediate,
        "vocab_size": 8,
        "ssm_cfg": {"d_conv": 4, "expand": 2, "d_state": 16, "chunk_size": 32, "headdim": 16},
        "attn_cfg": {
            "num_heads": [2] * n,
            "rotary_emb_dim": [d // 4 for d in d_model],
            "window_size": [255] * (n - 1) + [-1],
        },
    }


_PRESETS = {
    "dna-transformer-t9": lambda: _paper_dna(["T9"], [1408], [512]),
    "dna-mamba2-m10": lambda: _paper_dna(["M10"], [1024], [512]),
    "dna-hnet-m3t1-t15-m4": lambda: _paper_dna(["m3T1", ["T15"], "m4"], [1408, 1408], [512, 512]),
    "dna-hnet-m3t1-m15-m4": lambda: _paper_dna(["m3T1", ["M15"], "m4"], [1408, 1024], [512, 512]),
    "tiny-hnet": lambda: _tiny(["m2t1", ["T2"], "m2"], [64, 96], [0, 256]),
    "tiny-hnet-2stage": lambda: _tiny(["m1", ["m1", ["T2"], "m1"], "m1"], [32, 48, 64], [0, 0, 128]),
    "tiny-transformer": lambda: _tiny(["T4"], [64], [256]),
    "tiny-mamba2": lambda: _tiny(["M4"], [64], [128]),
    # the bidirectional (masked-LM) tiny H-Net: tiny-hnet's shape, BiMamba-2 and two-way attention
    "tiny-bihnet": lambda: {**_tiny(["m2t1", ["T2"], "m2"], [64, 96], [0, 256]), "vocab_size": 9, "bidirectional": True},
}


def presets() -> list[str]:
    """Names accepted by :meth:`HNetConfig.from_preset`: the paper's four DNA models and small
    models for CPU work and tests."""
    return list(_PRESETS)

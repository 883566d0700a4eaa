"""Shared test helpers: fixture paths, a tiny FASTA reader for the committed fixtures, small models."""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from hnet_dna import HNetConfig, HNetForCausalLM

# Without a GPU the Triton kernels' tests (tests/kernels/) run under Triton's CPU
# interpreter. Triton reads this when a kernel is defined, i.e. when hnet_dna.kernels is imported
# (``import hnet_dna`` never does), so it is set here, before any test module runs; with a GPU the
# compiled kernels are tested instead. Nothing else in the suite runs Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def import_benchmark(name: str):
    """A benchmarks/ script (which imports its neighbours as ``from common import ...``) as a module.

    benchmarks/ is on sys.path only while the script loads: left there, a script's name would shadow
    an installed package of that name for every later test (transformers, loaded by peft, imports a
    ``kernels`` package; a benchmarks/kernels.py once answered it)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
SHARED_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "official_state_dict_shapes.json"


def read_fixture_fasta(path: Path) -> dict[str, str]:
    """{record name: sequence} of a small committed FASTA fixture."""
    records: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            records[name] = []
        elif line:
            records[name].append(line.strip())
    return {k: "".join(v) for k, v in records.items()}


def small_config(preset: str = "tiny-hnet", **overrides) -> HNetConfig:
    """A preset shrunk further for fast numerical tests (short SSD chunks, small windows)."""
    return HNetConfig.from_preset(preset, **overrides)


def make_model(preset: str = "tiny-hnet", dtype=torch.float64, seed: int = 0, **overrides) -> HNetForCausalLM:
    from hnet_dna.model.loading import model_for

    torch.manual_seed(seed)
    return model_for(small_config(preset, **overrides)).to(dtype)  # a bidirectional preset: HNetForMaskedLM


def padded_batch(lengths, vocab: int = 4, pad_id: int = 5, seed: int = 0):
    """Random A/C/G/T ids, right-padded to the longest length, with their mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), width), generator=g)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, pad_id), mask


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    """Write {name: sequence} as a FASTA file (wrapped lines) and return its path."""
    with path.open("w") as f:
        for name, seq in records.items():
            f.write(f">{name}\n")
            for i in range(0, len(seq), width):
                f.write(seq[i : i + width] + "\n")
    return path


def write_bgzf(path: Path, text: str) -> Path:
    """BGZF-compress text (what bgzip writes) with Biopython."""
    from Bio import bgzf

    with bgzf.BgzfWriter(str(path), "wb") as f:
        f.write(text.encode())
    return path


@pytest.fixture(scope="session")
def chr20_slices() -> dict[str, str]:
    return read_fixture_fasta(DATA / "chr20_slices.fa")


@contextmanager
def kept_for_backward(exclude=()):
    """Record, inside the block, what autograd keeps for the backward: yields {storage: bytes},
    each storage once (views share theirs); the storages of the ``exclude`` tensors left out."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield kept


def genome_fixture(tmp_path, name="20", length=12_000):
    """A FASTA with one record named ``name``: real chr20 letters from the committed slices."""
    from hnet_dna.data.genome import open_fasta  # not at the top: it imports Triton (via Lightning) before TRITON_INTERPRET is set
    seq = read_fixture_fasta(DATA / "chr20_slices.fa")["chr20_train"][:length]
    path = tmp_path / "genome.fa"
    path.write_text(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    open_fasta(path)  # its index, as a user's genome has one: outputs are what tests look for
    return path, seq


def finetune_recipe(tmp_path, **data) -> str:
    """A fine-tuning recipe (a tiny H-Net on the promoter fixture, 3 epochs, selection on val/mcc);
    ``data`` overrides the data module's arguments. Returns its path."""
    config = {
        "seed_everything": 0,
        "model": {"class_path": "hnet_dna.tasks.FinetuneModule",
                  "init_args": {"backbone": {"preset": "tiny-hnet", "d_model": [32, 48],
                                             "attn_cfg": {"num_heads": [2, 2], "rotary_emb_dim": [8, 12], "window_size": [63, -1]}},
                                "lr": 3e-3}},
        "data": {"class_path": "hnet_dna.data.LabelledDataModule",
                 "init_args": {"train": str(DATA / "labelled" / "promoter_tss_chr20_300bp.tsv"), "batch_size": 8, **data}},
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"monitor": "val/mcc", "mode": "max", "save_last": True}}]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def setup_labelled_module(tmp_path, module, **data):
    """``module.setup('fit')`` against a labelled data module on the UCI splice fixture, as Lightning
    calls it; returns the data module."""
    from types import SimpleNamespace

    from hnet_dna.data import LabelledDataModule

    dm = LabelledDataModule(str(DATA / "labelled" / "uci_splice_60bp.tsv"), **data)
    module._trainer = SimpleNamespace(datamodule=dm, ckpt_path=None)
    module.setup("fit")
    return dm

"""End to end on real DNA: a tiny H-Net trained briefly on a slice of human chr20 must beat an
order-1 Markov model on a held-out slice (both fitted on the same training bases).

The budget is a fixed number of steps (deterministic), sized to train in about 35 s on 2 CPU
cores, well inside the issue's 120 s; the wall time is printed, not asserted (it depends on load)."""

import time

import torch

from hnet_dna import HNetConfig, HNetForCausalLM, NucleotideTokenizer
from hnet_dna.baselines import markov_bits_per_base
from hnet_dna.optim import make_optimizer
from hnet_dna.tasks.pretrain import lr_factor

# LR is the base-pair-resolution rate (stage 0); the inner stage runs at x0.471 (eq. 11).
STEPS, BATCH, LENGTH, LR = 160, 8, 256, 2e-2


def test_tiny_hnet_beats_order1_markov_on_held_out_chr20(chr20_slices):
    tok = NucleotideTokenizer()
    train = tok.encode(chr20_slices["chr20_train"], record="chr20_train")
    held = tok.encode(chr20_slices["chr20_heldout"], record="chr20_heldout")

    torch.manual_seed(0)
    model = HNetForCausalLM(HNetConfig.from_preset("tiny-hnet"))
    opt = make_optimizer(model, lr=LR, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(STEPS):
        offsets = torch.randint(0, len(train) - LENGTH, (BATCH,), generator=g)
        ids = torch.stack([train[o : o + LENGTH] for o in offsets.tolist()])
        for group in opt.param_groups:
            group["lr"] = LR * group["lr_multiplier"] * lr_factor(step, STEPS, "wsd", 0.1, 0.2, 0.0)
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_seconds = time.perf_counter() - start

    model.eval()
    rows = held[: len(held) // 2000 * 2000].view(-1, 2000)
    with torch.no_grad():
        out = model(rows, labels=rows)
    model_bits = out.bits_per_base.item()
    markov1 = markov_bits_per_base(train, rows, order=1)
    print(
        f"held-out bits/base: tiny H-Net {model_bits:.4f}, order-1 Markov {markov1:.4f}; "
        f"compression {out.compression()[0]:.2f}; trained {train_seconds:.1f} s"
    )
    assert model_bits < markov1

import pytest
import torch

from hnet_dna.model.generation import sample_next
from hnet_dna.model.hnet import InputError

from ..conftest import make_model, padded_batch

SMALL_WINDOWS = {"num_heads": [2, 2], "rotary_emb_dim": [16, 24], "window_size": [7, 5]}  # rings wrap


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny-hnet", {}),
        ("tiny-hnet", {"attn_cfg": SMALL_WINDOWS}),
        ("tiny-hnet-2stage", {}),
        ("tiny-transformer", {}),
        ("tiny-mamba2", {}),
    ],
)
def test_cached_generation_matches_the_full_forward(preset, overrides):
    model = make_model(preset, dtype=torch.float32, seed=3, **overrides)
    lengths = [37, 20, 9]
    ids, mask = padded_batch(lengths, seed=4)
    n_new = 24
    gen = model.generate(ids, mask=mask, max_new_tokens=n_new, generator=torch.Generator().manual_seed(0), output_logits=True)
    assert gen.sequences.shape == (3, 37 + n_new) and gen.new_ids.shape == (3, n_new)
    assert gen.mask.sum(-1).tolist() == [n + n_new for n in lengths]
    full = model(gen.sequences, mask=gen.mask)
    for row, n in enumerate(lengths):
        assert torch.equal(gen.sequences[row, :n], ids[row, :n])
        assert torch.equal(gen.sequences[row, n : n + n_new], gen.new_ids[row])
        # the logits that drew new id i are the full forward's logits at position n - 1 + i
        torch.testing.assert_close(gen.logits[row], full.logits[row, n - 1 : n - 1 + n_new], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage"])
def test_batched_steps_with_different_boundary_decisions(preset):
    """Rows cut chunks at different steps and still match their own full forward."""
    model = make_model(preset, dtype=torch.float32, seed=5)
    ids, mask = padded_batch([12, 12, 12, 12], seed=6)
    logits, cache = model.prefill(ids, mask)
    new = torch.randint(0, 4, (4, 30), generator=torch.Generator().manual_seed(7))
    step_logits, decisions = [logits], []
    for i in range(new.shape[1]):
        lg, routes = model.step(new[:, i], cache)
        step_logits.append(lg)
        decisions.append(routes[0][1])
    decisions = torch.stack(decisions, 1)  # (B, steps) outer-level boundaries
    differs = (decisions != decisions[:1]).any(0)
    assert differs.sum() >= 5, "rows should disagree on boundaries at several steps"
    seqs = torch.cat([ids, new], 1)
    full = model(seqs)
    torch.testing.assert_close(torch.stack(step_logits, 1), full.logits[:, 11:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(decisions, full.boundaries[0][:, 12:])


def test_greedy_is_deterministic_and_bases_only():
    model = make_model("tiny-hnet", dtype=torch.float32, seed=8)
    ids, mask = padded_batch([15, 10], seed=9)
    a = model.generate(ids, mask=mask, max_new_tokens=10, temperature=0)
    b = model.generate(ids, mask=mask, max_new_tokens=10, temperature=0)
    assert torch.equal(a.sequences, b.sequences)
    assert (a.new_ids < 4).all()


def test_sampling_is_reproducible_with_a_generator():
    model = make_model("tiny-hnet", dtype=torch.float32, seed=8)
    ids, mask = padded_batch([15, 10], seed=9)
    runs = [
        model.generate(ids, mask=mask, max_new_tokens=12, temperature=1.5, generator=torch.Generator().manual_seed(1)).new_ids
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 0.7, None, g)) for _ in range(300)}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, 1.0, 0.5, None, g)) for _ in range(100)}
    assert draws == {0}
    allowed = torch.tensor([False, True, True, False])
    assert {int(sample_next(logits, 1.0, 1.0, allowed, g)) for _ in range(200)} == {1, 2}


def test_bad_generation_arguments():
    model = make_model("tiny-hnet", dtype=torch.float32)
    ids, mask = padded_batch([5])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(ids, top_p=0.0)


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage"])
def test_stepping_from_an_empty_cache_matches_the_forward(preset):
    """No prefill: the first base of every row must open a chunk at every level (p = 1), as in the
    full forward, so the whole sequence steps exactly like the forward pass."""
    model = make_model(preset, seed=11)  # fp64
    ids, _ = padded_batch([25, 25], seed=12)
    full = model(ids)
    cache = model.allocate_cache(2)
    logits, probs = [], []
    for t in range(ids.shape[1]):
        lg, routes = model.step(ids[:, t], cache)
        logits.append(lg)
        probs.append(routes[0][0])
    assert torch.equal(probs[0], torch.ones(2, dtype=probs[0].dtype))
    torch.testing.assert_close(torch.stack(probs, 1), full.boundary_probs[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.stack(logits, 1), full.logits, rtol=1e-9, atol=1e-9)


MAMBA_MAIN = {"arch_layout": ["m2t1", ["M2"], "m2"], "d_intermediate": [0, 128]}


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny-hnet", {}),
        ("tiny-hnet", {"attn_cfg": SMALL_WINDOWS}),
        ("tiny-hnet", MAMBA_MAIN),
        ("tiny-hnet-2stage", {}),
        ("tiny-transformer", {"attn_cfg": {"num_heads": [2], "rotary_emb_dim": [16], "window_size": [9]}}),
        ("tiny-transformer", {}),
        ("tiny-mamba2", {}),
    ],
)
def test_blocks_continuing_from_a_cache_match_the_full_forward(preset, overrides):
    """extend(): any cut of a sequence into blocks gives the full forward's logits, every base
    with all of its left context (Mamba-2 state and convolution inputs, attention keys, the last
    encoder output the router compares with, the open chunk's EMA value)."""
    model = make_model(preset, seed=21, **overrides)  # fp64
    ids, _ = padded_batch([100], seed=22)
    full = model(ids)
    levels = model.features(ids).levels  # chunk states per level
    for sizes in ([100], [1] * 12 + [88], [3, 40, 1, 33, 23], [64, 36]):
        cache = model.allocate_cache(1)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        blocks = [model.extend_features(ids[:, s:s + n], cache) for s, n in zip(starts, sizes)]
        logits = model.lm_head(torch.cat([hidden for hidden, _, _ in blocks], dim=1))
        torch.testing.assert_close(logits, full.logits, rtol=1e-9, atol=1e-9)
        for level, (probs, mask) in enumerate(zip(full.boundary_probs, full.masks)):  # each level's inputs, in order
            got = torch.cat([block_probs[level] for _, block_probs, _ in blocks], dim=1)
            torch.testing.assert_close(got[0], probs[0][mask[0]], rtol=1e-9, atol=1e-9)
            states = torch.cat([block_states[level] for _, _, block_states in blocks], dim=1)
            torch.testing.assert_close(states[0], levels[level].states[0][levels[level].mask[0]], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("preset", ["tiny-hnet", "tiny-hnet-2stage"])
def test_prefill_extend_and_step_share_one_cache(preset):
    """A prompt's prefill (padded: the cache's rows know their own length), then blocks, then
    single steps: one continuous sequence."""
    model = make_model(preset, seed=23, **({"attn_cfg": SMALL_WINDOWS} if preset == "tiny-hnet" else {}))
    ids, _ = padded_batch([80], seed=24)
    full = model(ids).logits
    padded = torch.cat([ids[:, :30], torch.full((1, 9), 5)], dim=1)  # a prompt padded past its 30 bases
    _, cache = model.prefill(padded, torch.arange(39)[None] < 30)
    blocks = [model.extend(ids[:, 30:47], cache), model.extend(ids[:, 47:70], cache)]
    torch.testing.assert_close(torch.cat(blocks, 1), full[:, 30:70], rtol=1e-9, atol=1e-9)
    for t in range(70, 80):
        logits, _ = model.step(ids[:, t], cache)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-9, atol=1e-9)


def test_extend_takes_one_row_of_valid_ids():
    model = make_model("tiny-hnet", seed=0)
    ids, _ = padded_batch([10, 10], seed=0)
    with pytest.raises(InputError, match=r"one row"):
        model.extend(ids, model.allocate_cache(2))
    with pytest.raises(InputError, match=r"empty"):
        model.extend(ids[:1, :0], model.allocate_cache(1))
    with pytest.raises(InputError, match=r"integer tensor"):
        model.extend([[0, 1, 2]], model.allocate_cache(1))
    with pytest.raises(InputError):
        model.extend(torch.full((1, 4), 99), model.allocate_cache(1))

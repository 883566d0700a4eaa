"""Mutants of the Triton kernels (hnet_dna/kernels/), grouped by module."""

from . import Mutant

MUTANTS = [
    # ---- hnet_dna/kernels/dechunk.py
    Mutant("dechunk_no_carry", "the fused EMA forgets the state carried in from earlier tiles", "hnet_dna/kernels/dechunk.py",
           [("s = A * s_in[None, :] + X  # (BLOCK_L, BLOCK_D) = zbar[idx_t]", "s = X")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_carry_first_row", "the carry pass hands the next group its first state, not its last", "hnet_dna/kernels/dechunk.py",
           [("carry = tl.sum(tl.where((lane == BLOCK_C - 1)[:, None]", "carry = tl.sum(tl.where((lane == 0)[:, None]")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_every_position_starts", "every position is taken for a chunk start (b ignored)", "hnet_dna/kernels/dechunk.py",
           [("start = in_seq & (j != j_prev)", "start = in_seq")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_state_in_input_dtype", "the EMA state is rounded to the input dtype (bf16) before the output", "hnet_dna/kernels/dechunk.py",
           [("tl.store(out_row + offs, (s + res)", "tl.store(out_row + offs, (s.to(z.dtype).to(tl.float32) + res)")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_output_scaled", "the forward output is 0.999 s + residual", "hnet_dna/kernels/dechunk.py",
           [("(s + res).to(out_row.dtype.element_ty)", "(s * 0.999 + res).to(out_row.dtype.element_ty)")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_reverse_decay_same_step", "the reverse scan decays r_t by a_t instead of a_(t+1)", "hnet_dna/kernels/dechunk.py",
           [("_, _, _, a_next = _starts(idx_row, P_row, t + 1, L, M)", "_, _, _, a_next = _starts(idx_row, P_row, t, L, M)")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_dP_inclusive_state", "grad_P uses s_t instead of s_(t-1)", "hnet_dna/kernels/dechunk.py",
           [("tl.sum(r * (z - s_prev), 1)", "tl.sum(r * (z - s), 1)")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_calls_reference", "the forward secretly runs the PyTorch EMA", "hnet_dna/kernels/dechunk.py",
           [("        ctx.save_for_backward(z, P, idx, S)", "        from ..model import chunking\n        chunking.ema(z, P)\n        ctx.save_for_backward(z, P, idx, S)")], "tests/kernels/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    # ---- hnet_dna/kernels/routing.py
    Mutant("routing_matmul_in_input_dtype", "the projections run in the input dtype (bf16), not fp32", "hnet_dna/kernels/routing.py",
           [("qk = F.linear(x.float(), torch.cat([w_q, w_k]).float())", "qk = F.linear(x, torch.cat([w_q, w_k]).to(x.dtype)).float()")],
           "tests/kernels/test_kernels.py::test_fused_routing_decisions_do_not_depend_on_the_input_dtype"),
    Mutant("routing_first_position", "p_0 is not forced to 1", "hnet_dna/kernels/routing.py",
           [("p = tl.where(t == 0, 1.0, p)", "p = p")], "tests/kernels/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_boundaries_on_padding", "b ignores the mask", "hnet_dna/kernels/routing.py",
           [("b = (p > 0.5) & real", "b = p > 0.5")], "tests/kernels/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_confidence_gradient_sign", "dL/dc reaches p with the same sign for non-boundaries", "hnet_dna/kernels/routing.py",
           [("tl.where(b, gc, -gc)", "gc")], "tests/kernels/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_dq_wrong_pair", "dq_t uses the cosine of pair (t-1, t) instead of (t, t+1)", "hnet_dna/kernels/routing.py",
           [("cq = tl.where(nq_here >= EPS, cos_next, 0.0)", "cq = tl.where(nq_here >= EPS, cos_here, 0.0)")], "tests/kernels/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_drops_nan", "the fused routing turns a NaN cosine into p = 0 (tl.maximum without NaN propagation)",
           "hnet_dna/kernels/routing.py",
           [("p = tl.maximum((1.0 - cos) * 0.5, 0.0, propagate_nan=tl.PropagateNan.ALL)", "p = tl.maximum((1.0 - cos) * 0.5, 0.0)")],
           "tests/kernels/test_kernels.py::test_fused_routing_passes_nan_on_like_the_reference"),
]

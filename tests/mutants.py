"""Break one named behaviour at a time and check that the test meant to guard it fails.

Run by hand, not by the suite (it takes a few minutes)::

    python tests/mutants.py            # every mutant
    python tests/mutants.py --list     # their names
    python tests/mutants.py --only lm_head_init router_detached

Each mutant is a text replacement in one file of the package. The working tree is copied to a
temporary folder, the mutant applied to the copy, and the guarding test run there (the copy comes
first on PYTHONPATH, also for the subprocesses the test starts); the repository itself is never
touched. A mutant is *caught* when the test fails (pytest exit status 1), *missed* when it passes;
any other status (the mutant did not apply, collection broke) is reported as an error. The tests
are first run once on the unmutated copy, which must pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    name: str
    what: str  # the behaviour it breaks
    file: str
    edits: list[tuple[str, str]]  # (text that must occur exactly once, replacement)
    test: str  # the pytest node that must catch it


MUTANTS = [
    Mutant("router_detached", "the router's gradient from the LM loss is cut (p.detach() before P and c)",
           "hnet_dna/model/hnet.py",
           [("P = downsample(p, index).clamp(", "P = downsample(p.detach(), index).clamp("),
            ("c = confidence(p, b) if", "c = confidence(p.detach(), b) if")],
           "tests/test_hnet.py::test_lm_loss_alone_gives_the_router_a_gradient_that_gradcheck_confirms"),
    Mutant("router_P_detached", "only the EMA's P loses its gradient (c keeps one: caught by gradcheck alone)",
           "hnet_dna/model/hnet.py",
           [("P = downsample(p, index).clamp(", "P = downsample(p.detach(), index).clamp(")],
           "tests/test_hnet.py::test_lm_loss_alone_gives_the_router_a_gradient_that_gradcheck_confirms"),
    Mutant("ratio_target_level0", "every level's ratio loss uses ratio_targets[0]",
           "hnet_dna/model/hnet.py",
           [("self.config.ratio_targets[s]", "self.config.ratio_targets[0]")],
           "tests/test_hnet.py::test_each_chunking_level_uses_its_own_ratio_target"),
    Mutant("rc_soft_mask_not_flipped", "soft-mask loss weights are not flipped with a reverse-complemented window",
           "hnet_dna/data/datamodule.py",
           [("self.tokenizer.reverse_complement(ids), soft.flip(0)", "self.tokenizer.reverse_complement(ids), soft")],
           "tests/test_datamodule.py::test_reverse_complement_flips_the_soft_mask_weights_with_the_sequence"),
    Mutant("padding_is_a_target", "the ~mask term is dropped from the LM loss's ignore set",
           "hnet_dna/model/hnet.py",
           [("| (targets == tok.n_id) | ~mask[:, 1:]", "| (targets == tok.n_id)")],
           "tests/test_hnet.py::test_padding_is_never_a_target_whatever_id_fills_it"),
    Mutant("empty_cache_no_first_boundary", "the routing cache's 'first position is a boundary' override is removed",
           "hnet_dna/model/chunking.py",
           [("p = torch.where(cache.has_seen, p, torch.ones_like(p))", "p = p")],
           "tests/test_generation.py::test_stepping_from_an_empty_cache_matches_the_forward"),
    Mutant("lm_head_init", "the LM head's initialisation is removed (PyTorch's default stays)",
           "hnet_dna/model/hnet.py",
           [("nn.init.normal_(self.lm_head.weight, std=r)", "pass")],
           "tests/test_hnet.py::test_lm_head_starts_at_the_initializer_range"),
    Mutant("lr_innermost_convention", "multipliers normalised on the innermost stage (stage 0 above lr)",
           "hnet_dna/optim.py",
           [("return [x / raw[0] for x in raw]", "return [x / raw[-1] for x in raw]")],
           "tests/test_optim.py::test_stage_multipliers_follow_eq_11_with_stage_0_at_lr"),
    Mutant("wsd_decay_off_by_one", "the wsd decay runs one step ahead (off by one)",
           "hnet_dna/tasks/pretrain.py",
           [("done = min(1.0, (step - decay_start) / decay_steps)", "done = min(1.0, (step + 1 - decay_start) / decay_steps)")],
           "tests/test_optim.py::test_wsd_schedule_warmup_stable_linear_decay"),
    Mutant("wsd_decay_shape_ignored", "decay_shape='1-sqrt' decays linearly",
           "hnet_dna/tasks/pretrain.py",
           [('remaining = 1 - done if decay_shape == "linear" else 1 - math.sqrt(done)', "remaining = 1 - done")],
           "tests/test_optim.py::test_wsd_schedule_warmup_stable_linear_decay"),
    Mutant("cosine_quarter_wave", "the cosine schedule uses a quarter wave",
           "hnet_dna/tasks/pretrain.py",
           [("0.5 * (1 + math.cos(math.pi * progress))", "math.cos(0.5 * math.pi * progress)")],
           "tests/test_optim.py::test_cosine_and_constant_schedules"),
    Mutant("eval_drops_windows", "evaluation under DDP drops the windows that do not fill every rank",
           "hnet_dna/data/datamodule.py",
           [("self.num_samples = len(range(rank, self.epoch_size, num_replicas))",
             "self.num_samples = self.epoch_size // num_replicas")],
           "tests/test_distributed.py::test_two_process_ddp_reads_different_windows_and_validates_like_one_process"),
    Mutant("eval_lightning_mean", "held-out means through Lightning's DDP mean (summed batch size truncated)",
           "hnet_dna/tasks/pretrain.py",
           [("metric.update(value.detach().double(), scored.double())", "pass"),
            ('self.log(f"{prefix}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name in bar)',
             'self.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, sync_dist=True, '
             'batch_size=int(scored), prog_bar=name in bar)')],
           "tests/test_distributed.py::test_two_process_ddp_reads_different_windows_and_validates_like_one_process"),
    Mutant("resume_other_world_size", "a mid-epoch resume on another number of processes is let through",
           "hnet_dna/data/datamodule.py",
           [("    if saved != world_size:", "    if False:")],
           "tests/test_distributed.py::test_two_process_ddp_reads_different_windows_and_validates_like_one_process"),
    Mutant("markov_skips_short_contexts", "Markov baselines skip targets with short contexts (other targets than the model)",
           "hnet_dna/baselines.py",
           [("context = np.minimum(clean, self.order)",
             "context = np.minimum(clean, self.order); t, context = t[clean >= self.order], context[clean >= self.order]")],
           "tests/test_baselines.py::test_markov_scores_exactly_the_language_model_targets"),
    Mutant("size_before_content", "letters are checked only where windows are cut (a protein FASTA: 'window too long')",
           "hnet_dna/data/windows.py",
           [("        source.scan()  # content errors", "        pass  # content errors")],
           "tests/test_cli.py::test_bad_inputs_stop_before_anything_is_written"),
    Mutant("leakage_without_bed_lines", "a leakage error names window coordinates only",
           "hnet_dna/data/windows.py",
           [('they come from {held.origin(i)} and {train.origin(j)}. ', "")],
           "tests/test_windows.py::test_leakage_is_detected_including_the_shift"),
    Mutant("test_needs_training_windows", "test / validate / predict demand training windows",
           "hnet_dna/data/datamodule.py",
           [('        if stage == "fit":\n            train = self.tables["train"]',
             '        if True:\n            train = self.tables["train"]')],
           "tests/test_cli.py::test_a_genome_held_out_entirely_is_scored_without_training_windows"),
    Mutant("pooling_counts_padding", "mean pooling averages padding positions in",
           "hnet_dna/model/heads.py",
           [("weights = features.mask.to(features.hidden.dtype)[..., None]  # (B, L, 1)",
             "weights = torch.ones_like(features.mask, dtype=features.hidden.dtype)[..., None]")],
           "tests/test_finetune.py::test_pooling_is_unchanged_by_extra_padding"),
    Mutant("chunk_pooling_counts_padding", "chunk pooling averages padded chunks in",
           "hnet_dna/model/heads.py",
           [("weights = level.mask.to(level.states.dtype)[..., None]  # (B, M, 1)",
             "weights = torch.ones_like(level.mask, dtype=level.states.dtype)[..., None]")],
           "tests/test_finetune.py::test_pooling_is_unchanged_by_extra_padding"),
    Mutant("rc_conjoin_without_rc", "RC-conjoined inference averages the sequence with itself",
           "hnet_dna/model/heads.py",
           [("logits = (logits + self._logits(rc, mask)) / 2", "logits = (logits + self._logits(input_ids, mask)) / 2")],
           "tests/test_finetune.py::test_rc_conjoined_logits_are_identical_for_a_sequence_and_its_reverse_complement"),
    Mutant("freeze_ignored", "--model.freeze_backbone trains the backbone anyway",
           "hnet_dna/tasks/finetune.py",
           [("            self.classifier.freeze_backbone()", "            pass")],
           "tests/test_finetune.py::test_frozen_backbone_is_unchanged_by_training"),
    Mutant("head_not_saved", "save_pretrained drops the classification head",
           "hnet_dna/model/heads.py",
           [("            module.load_state_dict({k.removeprefix(prefix): v for k, v in head.items() if k.startswith(prefix)})",
             "            pass")],
           "tests/test_finetune.py::test_classifier_save_and_load_give_identical_logits"),
    Mutant("label_1_0_not_1", "float labels are not normalised (1.0 and 1 become two classes)",
           "hnet_dna/data/labelled.py",
           [("    if number.is_integer():\n        return str(int(number))", "    if False:\n        return str(int(number))")],
           "tests/test_labelled.py::test_columns_by_flag_and_numeric_labels"),
    Mutant("val_split_not_stratified", "the carved validation/test split ignores the classes",
           "hnet_dna/data/labelled_datamodule.py",
           [("    stratify = labels if min(counts.values()) >= 2 else None", "    stratify = None")],
           "tests/test_labelled.py::test_data_module_splits_case_iupac_and_padding"),
    Mutant("best_is_last", "--ckpt_path best resolves to the last checkpoint",
           "hnet_dna/__main__.py",
           [("            return Path(path)\n", "            return last\n")],
           "tests/test_finetune.py::test_selection_ignores_test_data_and_best_checkpoint_tests_in_a_new_process"),
    Mutant("protocol_resume_ignored", "a rerun of the protocol redoes finished seeds",
           "hnet_dna/finetune.py",
           [('    done = {(r["system"], r.get("fold"), r["seed"]) for r in runs}', "    done = set()")],
           "tests/test_finetune.py::test_protocol_runs_seeds_and_the_kmer_baseline_and_resumes"),
    Mutant("broken_checkpoint_traceback", "a damaged checkpoint reaches Lightning's loader (raw traceback)",
           "hnet_dna/__main__.py",
           [("                self._checkpoint = read_checkpoint(ckpt)", "                pass")],
           "tests/test_cli.py::test_a_broken_checkpoint_is_named_before_anything_is_written"),
    Mutant("embed_tile_overlap_counted_twice", "a window's outputs are taken from its start, not from its own bases",
           "hnet_dna/embed.py",
           [("lo, hi = tile.own_start - tile.start, tile.own_end - tile.start  # owned, local",
             "lo, hi = 0, tile.own_end - tile.start")],
           "tests/test_embed.py::test_windows_read_each_base_once_with_left_context"),
    Mutant("embed_rc_not_flipped_back", "per-position RC embeddings are averaged without flipping them back",
           "hnet_dna/embed.py",
           [("return per_position if strand == 0 else per_position.flip(0)", "return per_position")],
           "tests/test_embed.py::test_rc_average_is_the_same_for_a_sequence_and_its_reverse_complement"),
    Mutant("embed_resume_ignores_parts", "a rerun recomputes the finished parts instead of reading them",
           "hnet_dna/embed.py",
           [("if _resume is not None and p in _resume:", "if False:"),
            ("if _resume is not None and _resume.done:", "if False:")],
           "tests/test_embed.py::test_kill_and_rerun_gives_the_same_file"),
    Mutant("score_first_base_scored", "each window also scores the base before its own (with less context), over the earlier window's",
           "hnet_dna/score.py",
           [("lo, hi = max(t.own_start - t.start, 1), t.own_end - t.start", "lo, hi = max(t.own_start - t.start - 1, 1), t.own_end - t.start")],
           "tests/test_score.py::test_windowed_scoring_reads_each_base_in_its_earliest_window"),
    Mutant("score_n_targets_scored", "N targets count in a sequence's likelihood",
           "hnet_dna/score.py",
           [("b = bits[row, lo - 1:hi - 1].masked_fill(~torch.isin(tgt, base_ids), math.nan)", "b = bits[row, lo - 1:hi - 1]")],
           "tests/test_score.py::test_per_base_bits_equal_the_models_bits_per_base"),
    Mutant("variant_windows_swapped", "the LLR is ref minus alt",
           "hnet_dna/score.py",
           [("llr = scores[pair[1]].log2_likelihood - scores[pair[0]].log2_likelihood",
             "llr = scores[pair[0]].log2_likelihood - scores[pair[1]].log2_likelihood")],
           "tests/test_score.py::test_variant_effects_equal_a_difference_of_two_log_likelihoods"),
    Mutant("boundaries_context_kept", "bases of the left context reach the tracks",
           "hnet_dna/boundaries.py",
           [("lo = max(t.own_start, context) - t.start", "lo = t.own_start - t.start")],
           "tests/test_boundaries.py::test_tracks_are_in_genome_coordinates_to_the_region_edges"),
    Mutant("boundaries_inner_level_on_bases", "an inner level's decisions are placed on bases 0..M, not on chunk starts",
           "hnet_dna/boundaries.py",
           [("base_of = pos  # the next level decides at this level's chunk starts", "base_of = torch.arange(len(pos))")],
           "tests/test_boundaries.py::test_inner_levels_are_mapped_back_to_bases"),
    Mutant("enrichment_no_shift", "the control does not move the boundaries",
           "hnet_dna/boundaries.py",
           [("offsets = rng.integers(1, max(len(places), 2), size=shifts)", "offsets = np.zeros(shifts, dtype=np.int64)")],
           "tests/test_boundaries.py::test_enrichment_finds_planted_boundaries_and_not_shuffled_ones"),
    # Triton chunking kernels (issue #11), run under the interpreter without a GPU
    Mutant("dechunk_no_carry", "the fused EMA forgets the state carried in from earlier tiles", "hnet_dna/kernels/dechunk.py",
           [("s = A * s_in[None, :] + X  # (BLOCK_L, BLOCK_D) = zbar[idx_t]", "s = X")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_carry_first_row", "the carry pass hands the next group its first state, not its last", "hnet_dna/kernels/dechunk.py",
           [("carry = tl.sum(tl.where((lane == BLOCK_C - 1)[:, None]", "carry = tl.sum(tl.where((lane == 0)[:, None]")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_every_position_starts", "every position is taken for a chunk start (b ignored)", "hnet_dna/kernels/dechunk.py",
           [("start = in_seq & (j != j_prev)", "start = in_seq")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_state_in_input_dtype", "the EMA state is rounded to the input dtype (bf16) before the output", "hnet_dna/kernels/dechunk.py",
           [("tl.store(out_row + offs, (s + res)", "tl.store(out_row + offs, (s.to(z.dtype).to(tl.float32) + res)")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_output_scaled", "the forward output is 0.999 s + residual", "hnet_dna/kernels/dechunk.py",
           [("(s + res).to(out_row.dtype.element_ty)", "(s * 0.999 + res).to(out_row.dtype.element_ty)")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_reverse_decay_same_step", "the reverse scan decays r_t by a_t instead of a_(t+1)", "hnet_dna/kernels/dechunk.py",
           [("_, _, _, a_next = _starts(idx_row, P_row, t + 1, L, M)", "_, _, _, a_next = _starts(idx_row, P_row, t, L, M)")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_dP_inclusive_state", "grad_P uses s_t instead of s_(t-1)", "hnet_dna/kernels/dechunk.py",
           [("tl.sum(r * (z - s_prev), 1)", "tl.sum(r * (z - s), 1)")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("dechunk_calls_reference", "the forward secretly runs the PyTorch EMA", "hnet_dna/kernels/dechunk.py",
           [("        ctx.save_for_backward(z, P, idx, S)", "        from ..model import chunking\n        chunking.ema(z, P)\n        ctx.save_for_backward(z, P, idx, S)")], "tests/test_kernels.py::test_fused_dechunk_matches_reference_forward_and_backward"),
    Mutant("routing_matmul_in_input_dtype", "the projections run in the input dtype (bf16), not fp32", "hnet_dna/kernels/routing.py",
           [("qk = F.linear(x.float(), torch.cat([w_q, w_k]).float())", "qk = F.linear(x, torch.cat([w_q, w_k]).to(x.dtype)).float()")],
           "tests/test_kernels.py::test_fused_routing_decisions_do_not_depend_on_the_input_dtype"),
    Mutant("routing_first_position", "p_0 is not forced to 1", "hnet_dna/kernels/routing.py",
           [("p = tl.where(t == 0, 1.0, p)", "p = p")], "tests/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_boundaries_on_padding", "b ignores the mask", "hnet_dna/kernels/routing.py",
           [("b = (p > 0.5) & real", "b = p > 0.5")], "tests/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_confidence_gradient_sign", "dL/dc reaches p with the same sign for non-boundaries", "hnet_dna/kernels/routing.py",
           [("tl.where(b, gc, -gc)", "gc")], "tests/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("routing_dq_wrong_pair", "dq_t uses the cosine of pair (t-1, t) instead of (t, t+1)", "hnet_dna/kernels/routing.py",
           [("cq = tl.where(nq_here >= EPS, cos_next, 0.0)", "cq = tl.where(nq_here >= EPS, cos_here, 0.0)")], "tests/test_kernels.py::test_fused_routing_matches_reference_forward_and_backward"),
    Mutant("model_skips_routing_kernel", "RoutingModule never dispatches to the fused routing", "hnet_dna/model/chunking.py",
           [("kernels = backends.chunking_kernels(x, self.q_proj_layer.weight)", "kernels = None")],
           "tests/test_kernels.py::test_the_model_dispatches_to_both_kernels_and_matches_the_reference"),
    Mutant("model_skips_dechunk_kernel", "HNetStage never dispatches to the fused dechunk", "hnet_dna/model/hnet.py",
           [("kernels = backends.chunking_kernels(z, residual)", "kernels = None")],
           "tests/test_kernels.py::test_the_model_dispatches_to_both_kernels_and_matches_the_reference"),
    Mutant("multiplier_linear_bases", "the crossing is interpolated in bases, not in log(bases)",
           "hnet_dna/data_efficiency/multiplier.py",
           [("return math.exp(math.log(b0) + frac * (math.log(b1) - math.log(b0)))", "return b0 + frac * (b1 - b0)")],
           "tests/test_data_efficiency.py::test_multiplier_interpolates_the_crossing_in_log_bases"),
    Mutant("multiplier_extrapolates", "a target the H-Net never reaches gives its last point's bases instead of None",
           "hnet_dna/data_efficiency/multiplier.py",
           [("            return None  # above the target at its last point", "            return final_bases / hnet[-1][0]")],
           "tests/test_data_efficiency.py::test_multiplier_is_none_when_never_reached"),
    Mutant("multiplier_first_crossing_headline", "the headline multiplier takes the first crossing (a dip that rises again counts)",
           "hnet_dna/data_efficiency/multiplier.py",
           [('rule: str = "sustained"\n) -> float | None:', 'rule: str = "first"\n) -> float | None:')],
           "tests/test_data_efficiency.py::test_multiplier_of_a_curve_that_dips_then_rises_is_the_sustained_crossing"),
    Mutant("summary_headline_first_crossing", "summary.json's per_seed holds the first crossing",
           "hnet_dna/data_efficiency/report.py",
           [('sustained[s] = data_multiplier(mine, theirs, "sustained")', 'sustained[s] = data_multiplier(mine, theirs, "first")')],
           "tests/test_data_efficiency.py::test_smoke_end_to_end"),
    Mutant("eval_points_linear", "curve points evenly spaced in bases, not in log(bases)",
           "hnet_dna/data_efficiency/plan.py",
           [("np.geomspace(first, steps, points)", "np.linspace(first, steps, points)")],
           "tests/test_data_efficiency.py::test_eval_points_are_log_spaced_after_warmup"),
    Mutant("data_seed_per_model", "each model draws its own window stream (the data seed depends on the model)",
           "hnet_dna/data_efficiency/worker.py",
           [('data = dict(spec["data"], seed=spec["seed"])', 'data = dict(spec["data"], seed=spec["seed"] + len(spec["name"]))')],
           "tests/test_data_efficiency.py::test_models_of_a_seed_saw_the_same_windows"),
    Mutant("window_log_after_points", "the window log runs after the curve point's checkpoint: a kill there loses a batch",
           "hnet_dna/data_efficiency/worker.py",
           [("callbacks=[TrainingWindowLog(), points]", "callbacks=[points, TrainingWindowLog()]")],
           "tests/test_data_efficiency.py::test_models_of_a_seed_saw_the_same_windows"),
    Mutant("train_time_not_resumed", "a resumed fit's training seconds start again from 0",
           "hnet_dna/data_efficiency/worker.py",
           [('self.train_seconds, self.trained_bases = state["train_seconds"], state["trained_bases"]', "pass")],
           "tests/test_data_efficiency.py::test_smoke_end_to_end"),
    Mutant("cpu_attention_uncounted", "attention scores count 0 FLOPs on CPU (torch's counter alone)",
           "hnet_dna/data_efficiency/flops.py",
           [("counter = FlopCounterMode(display=False, custom_mapping=_formulas(unattended))", "counter = FlopCounterMode(display=False)")],
           "tests/test_data_efficiency.py::test_flops_per_base_count_attention_scores_on_cpu"),
    Mutant("causal_count_ignores_mask", "the causal count charges a masked (sliding-window) call its whole matrix",
           "hnet_dna/data_efficiency/flops.py",
           [("        allowed = keep & allowed\n", "")],
           "tests/test_data_efficiency.py::test_causal_flops_of_a_hand_sized_attention_layer"),
    Mutant("causal_count_is_torchs", "the causal count is torch's (the fraction of attended pairs ignored)",
           "hnet_dna/data_efficiency/flops.py",
           [("unattended.append(full - int(round(full * fraction)))", "unattended.append(0)")],
           "tests/test_data_efficiency.py::test_causal_flops_of_a_model_subtract_exactly_the_masked_attention"),
    Mutant("flops_batch_on_trainer_device", "the FLOP-count batch stays on the CPU wherever the model's parameters are",
           "hnet_dna/data_efficiency/worker.py",
           [("return model.tokenizer.from_nucleotide_ids(ids).to(next(model.parameters()).device)",
             "return model.tokenizer.from_nucleotide_ids(ids)")],
           "tests/test_data_efficiency.py::test_flops_batch_follows_the_model_parameters"),
    Mutant("heldout_region_off_by_one", "a held-out FASTA region starts one base early (1-based start taken twice)",
           "hnet_dna/data_efficiency/plan.py",
           [("match[0].sequence[offset:end]", "match[0].sequence[max(offset - 1, 0):end]")],
           "tests/test_data_efficiency.py::test_heldout_fasta_region_is_one_based_inclusive_and_a_bare_record_is_all_of_it"),
    Mutant("heldout_fasta_unchecked", "a held-out FASTA is never checked against the training windows",
           "hnet_dna/data_efficiency/plan.py",
           [('if not h["allow_leakage"]:', "if False:")],
           "tests/test_data_efficiency.py::test_heldout_fasta_overlapping_the_training_data_is_refused"),
    Mutant("heldout_leakage_without_aliases", "held-out records are matched to training records by exact name only",
           "hnet_dna/data_efficiency/plan.py",
           [("for alias in chrom_aliases(record):", "for alias in [record]:")],
           "tests/test_data_efficiency.py::test_heldout_fasta_overlapping_the_training_data_is_refused"),
    Mutant("byte_ids_untranslated", "a byte-level model is fed the nucleotide table's ids",
           "hnet_dna/tokenizer.py",
           [('        if self.mode == "nucleotide":\n            return ids\n        if self._from_nucleotide.device',
             '        if True:\n            return ids\n        if self._from_nucleotide.device')],
           "tests/test_cli.py::test_a_byte_level_model_trains_on_its_own_ids"),
    Mutant("pretrain_skips_byte_ids", "the pretraining steps pass the data module's ids to a byte-level model",
           "hnet_dna/tasks/pretrain.py",
           [("        tok = self.model.tokenizer\n        return {**batch", "        return batch\n        tok = self.model.tokenizer\n        return {**batch")],
           "tests/test_cli.py::test_a_byte_level_model_trains_on_its_own_ids"),
    Mutant("finetune_skips_byte_ids", "the fine-tuning module passes nucleotide ids to a byte-level backbone",
           "hnet_dna/tasks/finetune.py",
           [("return self.classifier.backbone.tokenizer.from_nucleotide_ids(input_ids)", "return input_ids")],
           "tests/test_finetune.py::test_a_byte_level_backbone_reads_its_own_ids"),
    Mutant("report_after_teardown", "the held-out report scores at on_fit_end, after teardown moved the model to the CPU",
           "hnet_dna/tasks/callbacks.py",
           [("    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:",
             "    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:")],
           "tests/test_cli.py::test_the_held_out_report_scores_before_teardown_moves_the_model"),
    # issue #17: the fine-tuning protocol's controls
    Mutant("batch_order_on_split_seed", "training batches are ordered by the split's seed, the same for every model seed",
           "hnet_dna/data/labelled_datamodule.py",
           [("sampler = WindowSampler(dataset, shuffle=train, seed=self.sample_seed,", "sampler = WindowSampler(dataset, shuffle=train, seed=self.hparams.seed,")],
           "tests/test_labelled.py::test_a_model_seed_varies_batch_order_and_augmentation_but_not_the_split"),
    Mutant("rc_draws_fixed", "reverse-complement draws do not depend on the model seed",
           "hnet_dna/data/labelled_datamodule.py",
           [("np.random.default_rng([self.seed, epoch, i])", "np.random.default_rng([0, epoch, i])")],
           "tests/test_labelled.py::test_a_model_seed_varies_batch_order_and_augmentation_but_not_the_split"),
    Mutant("rc_augments_strand_specific", "reverse-complement augmentation is allowed on strand-specific labels",
           "hnet_dna/data/labelled_datamodule.py",
           [("        if reverse_complement > 0 and not strand_symmetric:", "        if False:")],
           "tests/test_labelled.py::test_strand_specific_labels_are_never_reverse_complemented"),
    Mutant("conjoin_ignores_strand", "RC-conjoined logits are on whatever the strand policy",
           "hnet_dna/tasks/finetune.py",
           [("self._build(list(names), bool(strand_symmetric) if rc is None else bool(rc))", "self._build(list(names), True if rc is None else bool(rc))")],
           "tests/test_finetune.py::test_rc_conjoining_follows_the_strand_policy"),
    Mutant("head_reads_raw_features", "the head reads the pooled features unnormalised",
           "hnet_dna/model/heads.py",
           [("self.head_norm = nn.LayerNorm(width) if head_norm else nn.Identity()", "self.head_norm = nn.Identity()")],
           "tests/test_finetune.py::test_the_head_reads_normalised_features"),
    Mutant("layer_decay_ignored", "--model.lr_layer_decay leaves every block at the top learning rate",
           "hnet_dna/tasks/finetune.py",
           [("scale = hp.lr_layer_decay ** (top - depth)", "scale = 1.0")],
           "tests/test_finetune.py::test_layer_wise_lr_decay_partial_freezing_and_decay_toward_the_pretrained_weights"),
    Mutant("freeze_layers_ignored", "--model.freeze_layers trains every block",
           "hnet_dna/tasks/finetune.py",
           [("                if depths[name] <= hp.freeze_layers:\n                    p.requires_grad_(False)",
             "                if depths[name] <= hp.freeze_layers:\n                    pass")],
           "tests/test_finetune.py::test_layer_wise_lr_decay_partial_freezing_and_decay_toward_the_pretrained_weights"),
    Mutant("anchor_decay_to_zero", "decay_toward pretrained decays towards zero",
           "hnet_dna/tasks/finetune.py",
           [("p.sub_(rate * (p - self._anchors[id(p)]))", "p.sub_(rate * p)")],
           "tests/test_finetune.py::test_layer_wise_lr_decay_partial_freezing_and_decay_toward_the_pretrained_weights"),
    Mutant("scratch_is_pretrained", "the scratch control keeps the pretrained weights",
           "hnet_dna/finetune.py",
           [('                              backbone=config)', '                              backbone=module.hparams.backbone)')],
           "tests/test_finetune.py::test_the_scratch_control_starts_from_other_weights_of_the_same_architecture"),
    Mutant("folds_overlap", "every fold tests the same rows",
           "hnet_dna/data/labelled_datamodule.py",
           [("random_state=seed).split(rows, labels))[fold]", "random_state=seed).split(rows, labels))[0]")],
           "tests/test_labelled.py::test_folds_partition_every_row_into_stratified_test_sets"),
    Mutant("flatten_lays_padding", "pooling flatten lays normalised padding positions into the head",
           "hnet_dna/model/heads.py",
           [("            hidden = hidden * features.mask[..., None].to(hidden.dtype)  # padding lays down zeros\n", "")],
           "tests/test_finetune.py::test_pooling_is_unchanged_by_extra_padding"),
    Mutant("cnn_pools_padding", "the CNN lets padding into its max-pooling and code",
           "hnet_dna/model/cnn.py",
           [("        x = self.code(x) * keep  # (B, code, L')", "        x = self.code(x)  # (B, code, L')")],
           "tests/test_finetune.py::test_the_cnn_baseline_is_the_fields_size_and_ignores_padding"),
    Mutant("anchor_at_fit_start", "decay toward the pretrained weights anchors to whatever a resumed checkpoint restored",
           "hnet_dna/tasks/finetune.py",
           [("self._anchors = {id(p): self._anchors[id(p)].to(p.device, p.dtype) for p in self.classifier.backbone.parameters()}",
             "self._anchors = {id(p): p.detach().clone() for p in self.classifier.backbone.parameters()}")],
           "tests/test_finetune.py::test_checkpoints_rebuild_the_head_they_were_trained_with"),
    Mutant("margin_in_smaller_sd", "a winner's margin is given in the smaller sd",
           "hnet_dna/finetune.py",
           [('"margin_sd": margin / max(sds) if sds else None}', '"margin_sd": margin / min(sds) if sds else None}')],
           "tests/test_finetune.py::test_winners_are_named_with_their_margin_in_sd_units"),
    Mutant("routing_drops_nan", "the fused routing turns a NaN cosine into p = 0 (tl.maximum without NaN propagation)",
           "hnet_dna/kernels/routing.py",
           [("p = tl.maximum((1.0 - cos) * 0.5, 0.0, propagate_nan=tl.PropagateNan.ALL)", "p = tl.maximum((1.0 - cos) * 0.5, 0.0)")],
           "tests/test_kernels.py::test_fused_routing_passes_nan_on_like_the_reference"),
    # --- issue #19: in-silico mutagenesis and boundary statistics
    Mutant("ism_effect_sign", "the LM effect is the reference minus the mutant (sign flipped)",
           "hnet_dna/ism.py", [("yield slice(k, k + len(p)), (out[1:] - out[:1]).cpu()",
                                "yield slice(k, k + len(p)), (out[:1] - out[1:]).cpu()")],
           "tests/test_ism.py::test_lm_effects_equal_likelihood_differences_by_hand"),
    Mutant("ism_ll_counts_n_targets", "the window likelihood also counts N targets",
           "hnet_dna/ism.py", [("return (picked * torch.isin(targets, base_ids)).sum(-1) / math.log(2)",
                                "return picked.sum(-1) / math.log(2)")],
           "tests/test_ism.py::test_lm_effects_equal_likelihood_differences_by_hand"),
    Mutant("ism_reference_not_zero", "the reference base's entry is left unset (NaN)",
           "hnet_dna/ism.py", [("    effects[is_base] = 0.0\n    mask = torch.ones(1, len(ids), dtype=torch.bool)\n\n    def forward(rows):\n        logits",
                                "    mask = torch.ones(1, len(ids), dtype=torch.bool)\n\n    def forward(rows):\n        logits")],
           "tests/test_ism.py::test_lm_effects_equal_likelihood_differences_by_hand"),
    Mutant("ism_site_off_by_one", "the single-site score reads the prediction for the next base",
           "hnet_dna/ism.py", [("rows = log2p[first - 1:hi - 1]", "rows = log2p[first:hi]")],
           "tests/test_ism.py::test_lm_effects_equal_likelihood_differences_by_hand"),
    Mutant("ism_batches_reuse_first_positions", "batches after the first mutate the first batch's positions",
           "hnet_dna/ism.py", [("p, v = pos[k:k + batch_size], new_ids[k:k + batch_size]",
                                "p, v = pos[:len(pos[k:k + batch_size])], new_ids[k:k + batch_size]")],
           "tests/test_ism.py::test_batched_and_unbatched_runs_agree_and_windows_score_in_their_own_window"),
    Mutant("ism_windows_ignored", "the language model mutates and scores each base in the whole sequence, not its window",
           "hnet_dna/ism.py", [("e, s = _lm_effects(net, encoded[i][t.start:t.end], lo - t.start, t.own_end - t.start, batch_size, device)",
                                "e, s = _lm_effects(net, encoded[i], lo, t.own_end, batch_size, device)")],
           "tests/test_ism.py::test_batched_and_unbatched_runs_agree_and_windows_score_in_their_own_window"),
    Mutant("ism_classifier_wrong_class", "effects hold the first class's logit, not the target's",
           "hnet_dna/ism.py", [("effects[i] = by_class[i][..., names.index(target)]", "effects[i] = by_class[i][..., 0]")],
           "tests/test_ism.py::test_classifier_effects_equal_logit_differences_by_hand"),
    Mutant("ism_no_resume", "a rerun ignores the parts a killed run left",
           "hnet_dna/ism.py", [("        if _resume is not None and u in _resume:\n            part = _resume.load(u)\n        elif",
                                "        if False:\n            part = None\n        elif")],
           "tests/test_ism.py::test_a_killed_run_resumes_to_the_same_result"),
    Mutant("ism_region_bigwig_unshifted", "the region's bigWig is written at sequence, not genome, positions",
           "hnet_dna/ism.py", [("write_bigwig(bw, chrom, chrom_length, start + keep, importance[keep])",
                                "write_bigwig(bw, chrom, chrom_length, keep, importance[keep])")],
           "tests/test_ism.py::test_command_writes_the_documented_npz_png_and_region_bigwig"),
    Mutant("ism_no_length_check", "a sequence longer than the classifier's max_length is not refused up front",
           "hnet_dna/ism.py", [("            if limit and len(x) > limit:", "            if False:")],
           "tests/test_ism.py::test_bad_input_stops_with_one_line_before_any_output"),
    Mutant("backbone_config_ignored", "a checkpoint rebuilds its backbone from the spec, not from its own config",
           "hnet_dna/tasks/finetune.py", [("        if backbone_config is not None:  # from a checkpoint", "        if False:  # from a checkpoint")],
           "tests/test_finetune.py::test_a_checkpoint_rebuilds_its_backbone_after_the_spec_changes_meaning"),
    Mutant("enrichment_counts_n_runs", "boundaries in N runs count and the shift control moves along every base",
           "hnet_dna/boundaries.py", [("    local = local[valid[local]]  # a boundary in an N run is no boundary of the sequence\n", ""),
                                      ("    places = np.flatnonzero(valid)  # (V,)", "    places = np.arange(length)  # (V,)")],
           "tests/test_boundaries.py::test_controls_never_count_or_place_boundaries_in_n_runs"),
    Mutant("enrichment_shift_into_gaps", "only the shift control ignores N runs",
           "hnet_dna/boundaries.py", [("offsets = rng.integers(1, max(len(places), 2), size=shifts)\n    shifted = np.concatenate([near_at[(rank[None, :] + offsets[k:k + block, None]) % len(places)].sum(1)",
                                       "offsets = rng.integers(1, max(length, 2), size=shifts)\n    shifted = np.concatenate([near[(local[None, :] + offsets[k:k + block, None]) % length].sum(1)")],
           "tests/test_boundaries.py::test_controls_never_count_or_place_boundaries_in_n_runs"),
    Mutant("gc_control_unmatched", "the matched control ignores GC (window only)",
           "hnet_dna/boundaries.py", [("key = (places // control_window) * (gc_bins + 1) + np.searchsorted(cuts, np.nan_to_num(g, nan=-1.0), side=\"right\")",
                                       "key = (places // control_window) * (gc_bins + 1)")],
           "tests/test_boundaries.py::test_the_gc_matched_control_explains_composition_away"),
    Mutant("homopolymer_min_off", "homopolymer runs are found from 4 bases, not 8",
           "hnet_dna/boundaries.py", [("min_homopolymer: int = 8", "min_homopolymer: int = 4")],
           "tests/test_boundaries.py::test_homopolymers_and_tandem_repeats_are_found_and_their_chunks_counted"),
    Mutant("chunk_stats_by_end", "chunks are assigned to a class by where they end, not start",
           "hnet_dna/boundaries.py", [("chosen = lengths[inside[local]]", "chosen = lengths[inside[np.minimum(local + lengths - 1, length - 1)]]")],
           "tests/test_boundaries.py::test_homopolymers_and_tandem_repeats_are_found_and_their_chunks_counted"),

    Mutant("protocol_ignores_backbone_change", "a rerun keeps model and probe runs made with another backbone",
           "hnet_dna/finetune.py", [("        elif previous.get(\"backbone_weights\") != backbone[\"backbone_weights\"]:\n            stale |= {\"model\", \"probe\"}\n", "")],
           "tests/test_finetune.py::test_a_rerun_after_the_backbone_changed_redoes_only_the_runs_that_rest_on_it"),
    Mutant("heldout_bits_divided_twice", "the held-out report divides score_windows' per-base bits by the base count again",
           "hnet_dna/tasks/callbacks.py", [("parameters (this run)\", bits)]", "parameters (this run)\", bits / max(bases, 1))]")],
           "tests/test_cli.py::test_demo_recipe_runs_and_reports_against_markov"),

    # issue #18: cost against length
    Mutant("checkpointing_wired_to_nothing", "gradient checkpointing is switched on but nothing is recomputed",
           "hnet_dna/model/isotropic.py", [("recompute = self.gradient_checkpointing and caches is None", "recompute = False and caches is None")],
           "tests/test_hnet.py::test_gradient_checkpointing_gives_the_same_loss_and_gradients_with_less_saved"),
    Mutant("checkpointing_flag_dropped", "--model.gradient_checkpointing does not reach the model",
           "hnet_dna/tasks/pretrain.py", [(".gradient_checkpointing_enable(gradient_checkpointing)", "")],
           "tests/test_cli.py::test_gradient_checkpointing_is_a_command_line_switch"),
    Mutant("within_chunk_decay_gradient", "the within-chunk scores' backward forgets the decay's gradient at the key",
           "hnet_dna/model/ssd.py", [("grad_a = grad_seg.sum(-1) - grad_seg.sum(-2)", "grad_a = grad_seg.sum(-1)")],
           "tests/test_ssd.py::test_gradients_equal_the_sequential_recurrence_fp64"),
    Mutant("chunk_scan_off_by_one", "past chunk_size chunks, each chunk receives its own end state instead of the previous one's",
           "hnet_dna/model/ssd.py", [("torch.cat([initial, after[:, :, :, :-1]], dim=3)", "torch.cat([initial, after[:, :, :, 1:]], dim=3)")],
           "tests/test_ssd.py::test_initial_state_is_carried"),
    Mutant("gated_norm_gate_gradient", "the gated norm's backward drops silu's derivative term",
           "hnet_dna/model/mamba2.py", [("torch.ops.aten.silu_backward(grad_h.mul_(y32), z32)", "grad_h.mul_(y32) * torch.sigmoid(z32)")],
           "tests/test_mamba2.py::test_gated_norm_backward_equals_autograd_of_the_reference_fp64"),
    Mutant("convolution_kept", "the depthwise convolution's activations are kept for the backward again",
           "hnet_dna/model/mamba2.py", [("if torch.is_grad_enabled() and xBC.requires_grad:", "if False:")],
           "tests/test_mamba2.py::test_training_memory_keeps_neither_the_convolution_nor_the_norm_internals"),
    Mutant("freed_memory_returned", "keep_freed_memory leaves glibc's thresholds as they are",
           "hnet_dna/backends.py", [("return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30))", "return True or bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30))")],
           "tests/test_backends.py::test_keeping_freed_memory_spares_the_page_faults_of_the_next_large_tensor"),
    Mutant("cap_does_not_stop_series", "after a capped point the sweep measures the longer lengths anyway",
           "benchmarks/scaling.py", [("                if capped is None:\n                    r = measure_point", "                if True:\n                    r = measure_point")],
           "tests/test_scaling.py::test_a_capped_point_is_written_with_its_status_and_its_series_stops"),
    Mutant("conv_backward_taps_not_reversed", "the convolution's input gradient runs the taps in their forward order",
           "hnet_dna/model/mamba2.py", [("_causal_depthwise_conv(grad_pre, w32.flip(-1), None, anti_causal=True)",
                                          "_causal_depthwise_conv(grad_pre, w32, None, anti_causal=True)")],
           "tests/test_mamba2.py::test_convolution_backward_equals_autograd_of_the_reference_fp64"),
    Mutant("conv_weight_gradient_shift", "each tap's weight gradient pairs the gradient with x one position off",
           "hnet_dna/model/mamba2.py", [("(grad_pre[:, s:] * x32[:, :max(length - s, 0)])",
                                          "(grad_pre[:, s:] * x32[:, :max(length - s, 0)].roll(1, 1))")],
           "tests/test_mamba2.py::test_convolution_backward_equals_autograd_of_the_reference_fp64"),
    Mutant("conv_backward_dtype", "the convolution's backward runs in its input's dtype (bf16 under autocast) with fp32 weights",
           "hnet_dna/model/mamba2.py", [("x32, w32 = hi(xBC), hi(weight)", "x32, w32 = xBC, hi(weight)")],
           "tests/test_mamba2.py::test_convolution_under_bf16_autocast_matches_the_reference"),
    Mutant("grouped_conv_backward_dense", "the FLOP count takes torch's formula for convolution backward (grouped = dense)",
           "hnet_dna/data_efficiency/flops.py", [("    mapping[torch.ops.aten.convolution_backward] = _conv_backward_flops", "    pass")],
           "tests/test_data_efficiency.py::test_a_convolution_backward_costs_what_its_forward_costs_per_gradient"),
    Mutant("flops_count_the_fast_convolution", "under force_reference the CPU convolution keeps its hand-written backward",
           "hnet_dna/model/mamba2.py", [('if xBC.device.type == "cpu" and not backends.reference_forced():', 'if xBC.device.type == "cpu":')],
           "tests/test_data_efficiency.py::test_flops_of_mamba2_count_its_convolution_as_the_reference_runs_it"),
    Mutant("routing_fit_never_steps", "settle_routing computes the ratio loss but never updates the routers",
           "benchmarks/model_speed.py", [("            optimiser.step()\n", "")],
           "tests/test_model_speed.py::test_routers_settle_at_the_target_and_nothing_else_moves"),
    Mutant("routing_fit_moves_everything", "settle_routing trains every weight, not the routers alone",
           "benchmarks/model_speed.py", [('if ".routing_module." in name]', 'if "lm_head" not in name]')],
           "tests/test_model_speed.py::test_routers_settle_at_the_target_and_nothing_else_moves"),
    Mutant("scaling_point_unsettled", "a scaling point measures the H-Net at its untrained router's compression",
           "benchmarks/scaling.py", [("    settle_routing(model)  # an H-Net", "    # an H-Net")],
           "tests/test_scaling.py::test_smoke_sweep_writes_the_table_plot_and_exponents"),
    Mutant("profile_step_unsettled", "profile_step measures the H-Nets at their untrained routers' compression",
           "benchmarks/profile_step.py", [("    settle_routing(model)\n", "")],
           "tests/test_profile_step.py::test_every_section_measures_an_h_net_at_its_target_compression"),
    Mutant("freed_memory_switch_ignored", "HNET_DNA_KEEP_FREED_MEMORY=0 does not turn keep_freed_memory off",
           "hnet_dna/backends.py", [('os.environ.get("HNET_DNA_KEEP_FREED_MEMORY", "1") == "0"', 'False')],
           "tests/test_backends.py::test_keeping_freed_memory_spares_the_page_faults_of_the_next_large_tensor"),
    Mutant("gated_norm_mean_scale", "the gated norm's backward takes the group's sum where its mean belongs",
           "hnet_dna/model/mamba2.py", [("value=-1.0 / c)", "value=-1.0)")],
           "tests/test_mamba2.py::test_gated_norm_backward_equals_autograd_of_the_reference_fp64"),
    Mutant("convolution_sees_the_next_base", "the channels-last convolution is padded one short: each output sees the next input",
           "hnet_dna/model/mamba2.py", [("padding=(0, self.d_conv - 1)", "padding=(0, self.d_conv - 2)")],
           "tests/test_mamba2.py::test_step_equals_chunked_forward_fp64"),
    Mutant("wide_chunks_not_replaced", "chunks too wide to factor keep the factored (clamped) result",
           "hnet_dna/model/ssd.py", [("    return y.index_put(index, ", "    return y\n    return y.index_put(index, ")],
           "tests/test_ssd.py::test_chunked_scan_equals_sequential_recurrence_fp64"),
    Mutant("factor_clamped_one_way", "the factored scan's row scale is clamped below only (fp32 overflow: NaN gradients)",
           "hnet_dna/model/ssd.py", [("e = torch.exp((a_cum - mid).clamp(-half, half))", "e = torch.exp((a_cum - mid).clamp(min=-half))")],
           "tests/test_ssd.py::test_fp32_gradients_stay_finite_where_decays_are_too_fast_to_factor"),
    Mutant("band_previous_block_key_gradient", "the CPU band attention's backward drops the previous block's key gradients",
           "hnet_dna/model/attention.py", [("            _earlier(dk, bh, nblocks, Q).add_(_from_previous(dk_p, nblocks, Q))\n", "")],
           "tests/test_attention.py::test_blockwise_sliding_window_equals_a_dense_mask"),
    Mutant("band_unmerged", "the CPU band attention returns its own-block half without the previous block's",
           "hnet_dna/model/attention.py", [("            _later(out, batch * heads, nblocks, Q).copy_(new_out)\n", "")],
           "tests/test_attention.py::test_blockwise_sliding_window_equals_a_dense_mask"),
    Mutant("rmsnorm_mean_scale", "the RMSNorm backward takes the channels' sum where their mean belongs",
           "hnet_dna/model/layers.py", [("value=-1.0 / x.shape[-1])", "value=-1.0)")],
           "tests/test_layers.py::test_rmsnorm_backward_equals_autograd_of_the_reference_and_keeps_only_its_input"),
    Mutant("rmsnorm_keeps_its_output", "the RMSNorm keeps its normalised output for the backward again",
           "hnet_dna/model/layers.py", [("return _RMSNormFn.apply(x, self.weight, self.eps)", "return rmsnorm_ref(x, self.weight, self.eps)")],
           "tests/test_layers.py::test_rmsnorm_backward_equals_autograd_of_the_reference_and_keeps_only_its_input"),
    Mutant("x_scale_left_out_of_states", "the scan's x scale (Mamba-2's dt) reaches the outputs within a chunk but not the carried states",
           "hnet_dna/model/ssd.py", [("decay_to_end = decay_to_end * scale", "decay_to_end = decay_to_end * 1")],
           "tests/test_ssd.py::test_x_scale_is_scanning_the_scaled_input_values_and_gradients_fp64"),
    Mutant("carried_state_not_rescaled", "the carried-in state joins the factored chunk without exp(m), the row scale's offset",
           "hnet_dna/model/ssd.py", [('"b g c r 1 -> b g r c 1 1").to(states_in.dtype)', '"b g c r 1 -> b g r c 1 1").to(states_in.dtype).pow(0)')],
           "tests/test_ssd.py::test_chunked_scan_equals_sequential_recurrence_fp64"),
    Mutant("chunk_states_by_autograd", "each chunk's end-state contribution is left to autograd, which keeps the weighted input",
           "hnet_dna/model/ssd.py",
           [("chunk_states = _ChunkStates.apply(", "chunk_states = _ChunkStates.forward(_NoCtx(), "),
            ("class _ChunkStates(torch.autograd.Function):", "class _NoCtx:\n    def save_for_backward(self, *t):\n        pass\n\n\nclass _ChunkStates(torch.autograd.Function):")],
           "tests/test_ssd.py::test_scan_keeps_its_inputs_and_chunk_sized_tensors_only"),
    Mutant("factored_chunks_by_autograd", "the factored chunk product is left to autograd, which keeps f * x and the product before the row scale",
           "hnet_dna/model/ssd.py",
           [("    y = _FactoredChunks.apply(", "    y = _FactoredChunks.forward(_NoCtx(), "),
            ("class _ChunkStates(torch.autograd.Function):", "class _NoCtx:\n    def save_for_backward(self, *t):\n        pass\n\n\nclass _ChunkStates(torch.autograd.Function):")],
           "tests/test_ssd.py::test_scan_keeps_its_inputs_and_chunk_sized_tensors_only"),
    Mutant("factored_chunks_row_scale_gradient", "the factored chunks' backward forgets the row scale on the incoming gradient",
           "hnet_dna/model/ssd.py", [("grad_inner = (grad * e.unsqueeze(-1)).flatten(-2)", "grad_inner = grad.flatten(-2)")],
           "tests/test_ssd.py::test_gradients_equal_the_sequential_recurrence_fp64"),
    Mutant("out_proj_kept_apart", "Mamba-2's out_proj runs after the gated norm again and keeps its input",
           "hnet_dna/model/mamba2.py",
           [('return self.norm(rearrange(y, "b l h p -> b l (h p)"), z, self.out_proj.weight)',
             'return self.out_proj(self.norm(rearrange(y, "b l h p -> b l (h p)"), z))')],
           "tests/test_mamba2.py::test_training_memory_keeps_neither_the_convolution_nor_the_norm_internals"),
    Mutant("gated_norm_projection_gradient", "the fused gated norm + projection's backward takes the projection's gradient from the unweighted norm",
           "hnet_dna/model/mamba2.py", [("out = (h_norm * w).to(y.dtype)", "out = h_norm.to(y.dtype)")],
           "tests/test_mamba2.py::test_gated_norm_backward_equals_autograd_of_the_reference_fp64"),
    Mutant("live_peak_never_frees", "profile_step's live-memory peak adds allocations and ignores frees",
           "benchmarks/profile_step.py", [("        live += nbytes", "        live += max(nbytes, 0)")],
           "tests/test_profile_step.py::test_kept_memory_by_file_and_the_live_peak_of_a_training_step"),
    Mutant("gated_norm_projection_dtype", "the fused gated norm + projection's backward multiplies a bf16 gradient by the fp32 weight (autocast)",
           "hnet_dna/model/mamba2.py", [("            grad = grad @ proj_weight.to(grad.dtype)", "            grad = grad @ proj_weight")],
           "tests/test_mamba2.py::test_gated_norm_with_projection_under_bf16_autocast_matches_the_unfused_layers"),
]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked-but-not-ignored files)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, nodes: list[str], timeout: int) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *nodes],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.file
    text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise ValueError(f"{mutant.name}: expected one occurrence of {old!r} in {mutant.file}, found {text.count(old)}")
        text = text.replace(old, new)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutant names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    parser.add_argument("--why", action="store_true", help="show the first failure line of each caught mutant")
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:32} {m.what}")
        return 0
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or []) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="hnet_mutants_") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        where = subprocess.run([sys.executable, "-c", "import hnet_dna; print(hnet_dna.__file__)"], cwd=tmp,
                               env=dict(os.environ, PYTHONPATH=str(clean)), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(clean)):
            print(f"the copy is not what gets imported ({where}); aborting", file=sys.stderr)
            return 2
        nodes = sorted({m.test for m in chosen})
        status, seconds, tail = run_tests(clean, nodes, args.timeout * 2)
        if status != 0:
            print(f"the unmutated tests fail (status {status}); fix them first:\n{tail[-3000:]}", file=sys.stderr)
            return 2
        print(f"unmutated: {len(nodes)} guarding test(s) pass ({seconds:.0f} s)\n")
        print(f"{'mutant':32} {'result':8} {'s':>5}  test")
        results = []
        for m in chosen:
            tree = Path(tmp) / m.name
            shutil.copytree(clean, tree)
            apply(tree, m)
            status, seconds, tail = run_tests(tree, [m.test], args.timeout)
            result = {0: "MISSED", 1: "caught"}.get(status, f"error {status}")
            results.append(result)
            print(f"{m.name:32} {result:8} {seconds:5.0f}  {m.test.split('::')[-1]}", flush=True)
            if status not in (0, 1):
                print(tail[-3000:], file=sys.stderr)
            elif status == 1 and args.why:
                first = next((line for line in tail.splitlines() if line.startswith(("E ", "Failed"))), "")
                print(f"{'':32} {first[:160]}")
            shutil.rmtree(tree)
    caught = results.count("caught")
    print(f"\n{caught} of {len(results)} mutants caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

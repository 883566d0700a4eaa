"""Mutants of the top-level modules: config, tokenizer, weights, optim, backends, baselines, cli, runs, io, grouped by module."""

from . import Mutant

MUTANTS = [
    # ---- hnet_dna/embed.py (issue #30)
    Mutant("embed_refuses_finetuned_backbone", "embed cannot read a fine-tuned classifier's backbone (adapters merged)",
           "hnet_dna/embed.py", [('        if hparams.get("class_names") and "backbone" in hparams:', "        if False:")],
           "tests/tasks/test_adapters.py::test_lora_trains_only_adapters_and_head_and_merges_to_the_same_logits"),
    Mutant("embed_segmentation_cnn_unchecked", "embed meets a per-base CNN checkpoint with a raw AttributeError",
           "hnet_dna/embed.py", [('            backbone = getattr(load_classifier(spec, "--model").classifier, "backbone", None)',
                                  '            backbone = load_classifier(spec, "--model").classifier.backbone')],
           "tests/interpret/test_ism_heads.py::test_embed_reads_a_per_base_checkpoints_fine_tuned_backbone_and_refuses_a_cnn"),
    # ---- hnet_dna/backends.py
    Mutant("freed_memory_returned", "keep_freed_memory leaves glibc's thresholds as they are",
           "hnet_dna/backends.py", [("return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30))", "return True or bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30))")],
           "tests/test_backends.py::test_keeping_freed_memory_spares_the_page_faults_of_the_next_large_tensor"),
    Mutant("freed_memory_switch_ignored", "HNET_DNA_KEEP_FREED_MEMORY=0 does not turn keep_freed_memory off",
           "hnet_dna/backends.py", [('os.environ.get("HNET_DNA_KEEP_FREED_MEMORY", "1") == "0"', 'False')],
           "tests/test_backends.py::test_keeping_freed_memory_spares_the_page_faults_of_the_next_large_tensor"),
    # ---- hnet_dna/baselines.py
    Mutant("markov_skips_short_contexts", "Markov baselines skip targets with short contexts (other targets than the model)",
           "hnet_dna/baselines.py",
           [("context = np.minimum(clean, self.order)",
             "context = np.minimum(clean, self.order); t, context = t[clean >= self.order], context[clean >= self.order]")],
           "tests/test_baselines.py::test_markov_scores_exactly_the_language_model_targets"),
    Mutant("kmer_always_both_strands", "k-mer features always count both strands (a motif and its reverse complement are one feature)",
           "hnet_dna/baselines.py", [("(\" \" + s.upper().translate(complement)[::-1] if strand_symmetric else \"\")", "\" \" + s.upper().translate(complement)[::-1]")],
           "tests/test_baselines.py::test_kmer_features_follow_the_strand_policy"),
    # ---- hnet_dna/cli.py
    Mutant("best_is_last", "--ckpt_path best resolves to the last checkpoint",
           "hnet_dna/cli.py",
           [("            return Path(path)\n", "            return last\n")],
           "tests/tasks/test_finetune.py::test_selection_ignores_test_data_and_best_checkpoint_tests_in_a_new_process"),
    Mutant("broken_checkpoint_traceback", "a damaged checkpoint reaches Lightning's loader (raw traceback)",
           "hnet_dna/cli.py",
           [("                self._checkpoint = read_checkpoint(ckpt)", "                pass")],
           "tests/test_cli.py::test_a_broken_checkpoint_is_named_before_anything_is_written"),
    # ---- hnet_dna/ism.py
    Mutant("ism_region_bigwig_unshifted", "the region's bigWig is written at sequence, not genome, positions",
           "hnet_dna/ism.py", [("write_bigwig(bw, chrom, chrom_length, start + keep, importance[keep])",
                                "write_bigwig(bw, chrom, chrom_length, keep, importance[keep])")],
           "tests/interpret/test_ism.py::test_command_writes_the_documented_npz_png_and_region_bigwig"),
    Mutant("ism_region_span_cut", "ism --region reads no bases after the region: its last bases sum a shorter span",
           "hnet_dna/ism.py", [("        after = min(downstream, genome.records[record] - end)", "        after = 0")],
           "tests/interpret/test_ism.py::test_a_regions_last_bases_sum_as_many_bases_after_them_as_the_others"),
    # ---- hnet_dna/optim.py
    Mutant("lr_innermost_convention", "multipliers normalised on the innermost stage (stage 0 above lr)",
           "hnet_dna/optim.py",
           [("return [x / raw[0] for x in raw]", "return [x / raw[-1] for x in raw]")],
           "tests/test_optim.py::test_stage_multipliers_follow_eq_11_with_stage_0_at_lr"),
    # ---- hnet_dna/runs.py
    Mutant("process_group_left_to_exit", "the commands leave a DDP run's process group to the interpreter's shutdown (gloo can abort there)",
           "hnet_dna/runs.py", [("        dist.destroy_process_group()\n", "        pass\n")],
           "tests/test_distributed.py::test_the_commands_destroy_the_process_group_their_run_made"),
    Mutant("process_group_of_the_caller_destroyed", "the commands destroy a process group that existed before their run",
           "hnet_dna/runs.py", [("    if not had_group and dist.is_available()", "    if dist.is_available()")],
           "tests/test_distributed.py::test_a_failed_run_keeps_its_error_and_a_callers_group_is_left_alone"),
    Mutant("layout_import_circle", "runs imports io, which imports runs: an import circle",
           "hnet_dna/runs.py",
           [("    import torch.distributed as dist\n", "    import torch.distributed as dist\n\n    from .io import parse_region  # noqa: F401\n")],
           "tests/test_layout.py::test_no_import_circle_and_no_import_from_a_layer_above"),
    Mutant("json_writes_nan", "a NaN float reaches a JSON output as it is",
           "hnet_dna/runs.py", [("        if isinstance(x, float) and not np.isfinite(x):", "        if False:")],
           "tests/protocols/data_efficiency/test_multiplier.py::test_a_nan_point_before_the_crossing_gives_the_crossing_points_bases_never_nan"),
    # ---- hnet_dna/tokenizer.py
    Mutant("byte_ids_untranslated", "a byte-level model is fed the nucleotide table's ids",
           "hnet_dna/tokenizer.py",
           [('        if self.mode == "nucleotide":\n            return ids\n        if self._from_nucleotide.device',
             '        if True:\n            return ids\n        if self._from_nucleotide.device')],
           "tests/test_cli.py::test_a_byte_level_model_trains_on_its_own_ids"),
    # ---- hnet_dna/config.py
    Mutant("layout_long_module", "a module grows past 400 lines",
           "hnet_dna/config.py",
           [("from __future__ import annotations\n", "from __future__ import annotations\n" + "# padding\n" * 50)],
           "tests/test_layout.py::test_no_module_over_400_lines"),
    # ---- hnet_dna/finetune.py
    Mutant("layout_main_imported", "a command imports the package's __main__",
           "hnet_dna/finetune.py",
           [("from .protocols.finetune.results import SYSTEMS\n", "from . import __main__  # noqa: F401\nfrom .protocols.finetune.results import SYSTEMS\n")],
           "tests/test_layout.py::test_nothing_imports_main_and_benchmarks_edit_no_sys_path"),
]

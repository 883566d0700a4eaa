"""Mutants of the transformers interfaces (hnet_dna/hf/) and the folder files they read (hnet_dna/weights.py)."""

from . import Mutant

T = "tests/hf/test_transformers.py::"

MUTANTS = [
    # ---- hnet_dna/hf/modeling.py
    Mutant("hf_attention_mask_ignored", "attention_mask is not passed on: padding is read as bases",
           "hnet_dna/hf/modeling.py",
           [("    return None if attention_mask is None else attention_mask.to(", "    return None if True else attention_mask.to(")],
           T + "test_padding_through_attention_mask_equals_the_unpadded_rows"),
    Mutant("hf_classifier_head_not_loaded", "a classifier folder loads as a fresh head on its backbone",
           "hnet_dna/hf/modeling.py", [("        if not (folder / HEAD_NAME).is_file():", "        if True:")],
           T + "test_sequence_classification_forward_loss_and_round_trip"),
    Mutant("hf_state_dict_prefix_kept", "hnet_dna's state dicts (no hnet. prefix) do not load into the wrappers",
           "hnet_dna/hf/modeling.py", [("        state_dict[prefix + \"hnet.\" + key[len(prefix):]] = state_dict.pop(key)", "        pass")],
           T + "test_generate_is_our_sampler_and_our_state_dicts_load"),
    Mutant("hf_generate_samples", "generate samples by default (transformers' default is greedy)",
           "hnet_dna/hf/modeling.py", [("temperature=temperature if do_sample else 0.0", "temperature=temperature")],
           T + "test_generate_is_our_sampler_and_our_state_dicts_load"),
    Mutant("hf_hidden_states_after_head", "the last hidden state is the LM head's output",
           "hnet_dna/hf/modeling.py", [("(seen.inputs[0][1], seen.inputs[1][0])", "(seen.inputs[0][1], seen.inputs[1][1])")],
           T + "test_padding_through_attention_mask_equals_the_unpadded_rows"),
    # ---- hnet_dna/hf/tokenization.py
    Mutant("hf_tokenizer_policy_lost", "the transformers tokenizer reads every folder as lenient",
           "hnet_dna/hf/tokenization.py", [("self.dna = NucleotideTokenizer(mode=mode, policy=policy)",
                                            "self.dna = NucleotideTokenizer(mode=mode)")],
           T + "test_the_tokenizer_reads_dna_as_ours_does"),
    # ---- hnet_dna/weights.py, hnet_dna/config.py
    Mutant("hf_folder_without_auto_map", "save_pretrained's config.json names no auto_map (AutoConfig cannot find our classes)",
           "hnet_dna/weights.py", [('"model_type": TRANSFORMERS_MODEL_TYPE, "auto_map": auto_map}', '"model_type": TRANSFORMERS_MODEL_TYPE}')],
           T + "test_auto_classes_in_a_fresh_process_give_our_logits"),
    Mutant("hf_config_keys_refused", "a config.json written through transformers is refused by HNetConfig.from_json",
           "hnet_dna/config.py", [('if isinstance(d, dict) and d.get("model_type") == "hnet_dna":', "if False:")],
           T + "test_a_transformers_config_json_reads_as_our_config_and_a_typo_is_still_refused"),
    # ---- a Trainer-fine-tuned folder in our commands (hnet_dna/model/loading.py, tasks/finetune.py, weights.py)
    Mutant("hf_classifier_folder_scored", "score reads a fine-tuned classifier's folder with its stale LM head",
           "hnet_dna/model/loading.py", [('if lm_head and isinstance(spec, str) and (Path(spec) / "classifier.json").is_file():',
                                          "if False:")],
           T + "test_a_trainer_fine_tuned_folder_serves_embed_and_ism_and_score_refuses_it"),
    Mutant("hf_folder_classifier_ids_unmapped", "a classifier folder's logits skip the backbone's id table",
           "hnet_dna/tasks/classifier.py", [("        return self.classifier(ids, mask=mask).logits",
                                             "        return self.classifier(ids.flip(-1), mask=mask).logits")],
           T + "test_a_trainer_fine_tuned_folder_serves_embed_and_ism_and_score_refuses_it"),
    Mutant("hf_peft_folder_unexplained", "a peft adapter folder gets the generic 'no config.json' message",
           "hnet_dna/weights.py", [('if (directory / "adapter_config.json").is_file() and not (directory / WEIGHTS_NAME).is_file():',
                                    "if False:")],
           T + "test_a_trainer_fine_tuned_folder_serves_embed_and_ism_and_score_refuses_it"),
    Mutant("hf_causal_head_on_masked_lm", "AutoModelForCausalLM loads a masked LM's folder (and would generate from it)",
           "hnet_dna/hf/modeling.py", [("        if config.bidirectional:\n            raise CheckpointError(f\"{folder}: a masked LM",
                                        "        if False:\n            raise CheckpointError(f\"{folder}: a masked LM"),
                                       ("        if config.bidirectional:\n            raise CheckpointError(\"a bidirectional config",
                                        "        if False:\n            raise CheckpointError(\"a bidirectional config")],
           T + "test_a_masked_lm_folder_loads_as_auto_model_for_masked_lm"),
]

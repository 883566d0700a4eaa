"""Mutants of the benchmark scripts (benchmarks/), grouped by module."""

from . import Mutant

MUTANTS = [
    # ---- benchmarks/common.py
    Mutant("routing_fit_never_steps", "settle_routing computes the ratio loss but never updates the routers",
           "benchmarks/common.py", [("            optimiser.step()\n", "")],
           "tests/benchmarks/test_common.py::test_routers_settle_at_the_target_and_nothing_else_moves"),
    Mutant("routing_fit_moves_everything", "settle_routing trains every weight, not the routers alone",
           "benchmarks/common.py", [('if ".routing_module." in name]', 'if "lm_head" not in name]')],
           "tests/benchmarks/test_common.py::test_routers_settle_at_the_target_and_nothing_else_moves"),
    Mutant("benchmarks_sys_path_edit", "a benchmark script edits sys.path",
           "benchmarks/common.py",
           [("import resource\n", "import resource\nimport sys\n\nsys.path.insert(0, \"\")\n")],
           "tests/test_layout.py::test_nothing_imports_main_and_benchmarks_edit_no_sys_path"),
    # ---- benchmarks/profile_sections.py
    Mutant("profile_step_unsettled", "profile_step measures the H-Nets at their untrained routers' compression",
           "benchmarks/profile_sections.py", [("    settle_routing(model)\n", "")],
           "tests/benchmarks/test_profile_sections.py::test_every_section_measures_an_h_net_at_its_target_compression"),
    Mutant("live_peak_never_frees", "profile_step's live-memory peak adds allocations and ignores frees",
           "benchmarks/profile_sections.py", [("        live += nbytes", "        live += max(nbytes, 0)")],
           "tests/benchmarks/test_profile_sections.py::test_kept_memory_by_file_and_the_live_peak_of_a_training_step"),
    Mutant("profile_checkpointing_wired_to_nothing", "profile_step's --checkpointing builds every model without recomputing its blocks",
           "benchmarks/profile_sections.py", [("    if checkpointing:\n        model.gradient_checkpointing_enable()", "    if False:\n        model.gradient_checkpointing_enable()")],
           "tests/benchmarks/test_profile_sections.py::test_checkpointing_option_recomputes_the_chosen_models_blocks"),
    Mutant("profile_checkpointing_hnets_is_all", "profile_step's --checkpointing hnets recomputes the baselines' blocks too",
           "benchmarks/profile_sections.py", [('(args.checkpointing == "hnets" and name in HNETS)', '(args.checkpointing == "hnets")')],
           "tests/benchmarks/test_profile_sections.py::test_checkpointing_option_recomputes_the_chosen_models_blocks"),
    Mutant("profile_checkpointing_not_sent_to_child", "profile_step's fresh-process points are measured without the checkpointing asked for",
           "benchmarks/profile_sections.py", [('                       "checkpointing": _checkpointed(name, args)})', '                       "checkpointing": False})')],
           "tests/benchmarks/test_profile_sections.py::test_checkpointing_reaches_the_fresh_process_that_measures_a_point"),
    # ---- benchmarks/scaling.py
    Mutant("cap_does_not_stop_series", "after a capped point the sweep measures the longer lengths anyway",
           "benchmarks/scaling.py", [("                if capped is None:\n                    r = measure_point", "                if True:\n                    r = measure_point")],
           "tests/benchmarks/test_scaling.py::test_a_capped_point_is_written_with_its_status_and_its_series_stops"),
    Mutant("scaling_point_unsettled", "a scaling point measures the H-Net at its untrained router's compression",
           "benchmarks/scaling.py", [("    settle_routing(model)  # an H-Net", "    # an H-Net")],
           "tests/benchmarks/test_scaling.py::test_smoke_sweep_writes_the_table_plot_and_exponents"),
]

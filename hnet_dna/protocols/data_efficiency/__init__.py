"""``python -m hnet_dna.data_efficiency --config pipelines/benchmarks/NAME.yaml --out DIR``

Data efficiency of an H-Net against isotropic baselines, as the paper measured it (HG38, Table 5
and Figure 5): every model is trained on the same stream of genome windows; held-out bits per base
is measured at log-spaced numbers of bases seen during the constant-learning-rate phase; the
multiplier is how many times fewer bases the H-Net needed to reach each baseline's final bits per
base.

The package, one concern a module: ``config`` (YAML fields and checks), ``plan`` (steps, curve
points, held-out windows and their leakage check), ``worker`` (one fit in a child process),
``flops``, ``multiplier``, ``report`` (curves.csv, summary.json, curves.png) and ``pipeline`` (the
order of work, resume); the command line is :mod:`hnet_dna.data_efficiency`.

``python -m hnet_dna.data_efficiency --help`` tells how a run goes.
"""

from .config import BenchmarkConfig, HeldOutSet, load_config
from .flops import training_flops_per_base
from .multiplier import data_multiplier, multiplier_summary
from .pipeline import FitFailed, run_pipeline
from .plan import cut_heldout, eval_schedule, make_plan

__all__ = [
    "BenchmarkConfig", "HeldOutSet", "load_config", "training_flops_per_base", "data_multiplier",
    "multiplier_summary", "FitFailed", "run_pipeline", "cut_heldout", "eval_schedule", "make_plan",
]


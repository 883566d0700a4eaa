"""``python -m hnet_dna.data_efficiency --config pipelines/benchmarks/NAME.yaml --out DIR``

Data efficiency of an H-Net against isotropic baselines, as the paper measured it (HG38, Table 5
and Figure 5): every model is trained on the same stream of genome windows; held-out bits per base
is measured at log-spaced numbers of bases seen during the constant-learning-rate phase; the
multiplier is how many times fewer bases the H-Net needed to reach each baseline's final bits per
base.

How a run goes:

1. The config is read and every input checked (FASTA, BED, held-out sets, model configs) before
   ``DIR`` is written. ``DIR/plan.json`` records the resolved config; a rerun with the same config
   continues, a rerun with another one is refused.
2. The held-out windows are cut once and saved in ``DIR/heldout/`` so that every model is scored
   on exactly the same bases.
3. Each (seed, model) is fitted in its own subprocess (peak memory is per model) with the
   pretraining task (:class:`~hnet_dna.tasks.PretrainModule`) and data module
   (:class:`~hnet_dna.data.GenomeDataModule`), seeded with the run's seed: models of one seed see
   the same windows in the same order with the same augmentation draws
   (``DIR/runs/MODEL/seedS/training_windows.rank0.tsv`` lists them). The learning rate warms up,
   then stays constant up to the token budget (where the curve points are), then optionally decays
   (``decay_fraction``; its result is reported separately). A checkpoint is written at every curve
   point: a killed run continues with the models and points it has not finished.
4. ``DIR/curves.csv``, ``DIR/curves.png`` and ``DIR/summary.json`` are written (atomically) from
   the finished fits.

Compute (:mod:`~hnet_dna.protocols.data_efficiency.flops`): parameters and training FLOPs per base (forward
+ backward, counted on a real training batch at the end of training, since an H-Net's cost depends
on the compression its routers reached), in two conventions: ``flops_per_base`` as torch's
``FlopCounterMode`` counts it (the full L x L attention scores; a convolution's backward at its real
cost, which torch's formula overstates for grouped convolutions) and ``flops_per_base_causal``
(attention charged for the keys each query attends to: the work a causal kernel does). The config's
``flops_convention`` says which one decides ``compute_matched``.

The multiplier (:mod:`~hnet_dna.protocols.data_efficiency.multiplier`): for each seed, the baseline's bases at
its last point divided by the bases the H-Net needed to reach the baseline's final bits per base
and stay there (the sustained crossing, interpolated in log(bases)); the first crossing is reported
beside it. ``None`` (``reached: false``) when the H-Net is above the target at its last point:
nothing is extrapolated. Every H-Net of the config gets multipliers against every baseline
(``summary.json``: ``multipliers_by_hnet[HNET][BASELINE][HELDOUT]``; ``multipliers`` is the
reference's).

The package, one concern a module: ``config`` (YAML fields and checks), ``plan`` (steps, curve
points, held-out windows and their leakage check), ``worker`` (one fit in a child process),
``flops``, ``multiplier``, ``report`` (curves.csv, summary.json, curves.png) and ``pipeline`` (the
order of work, resume); the command line is :mod:`hnet_dna.data_efficiency`.
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


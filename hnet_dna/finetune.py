"""``python -m hnet_dna.finetune``: the fine-tuning protocol, with the field's controls, in one command.

``--help`` says what it reads and writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .protocols.finetune.results import SYSTEMS

HELP = """::

    python -m hnet_dna.finetune --config pipelines/finetune/promoter_tss_chr20.yaml \\
        --seeds 0 1 2 --out results/promoter [--budget epochs:10] [--folds 5] \\
        [--systems model lpft lora cnn ...] [any --data.* / --model.* / --trainer.* override]

Systems, all on exactly the same splits (every row of results tells which):

* ``model``: the recipe's model: ``fit`` (selection on ``val/mcc`` by the recipe's
  ModelCheckpoint), then ``test`` with the selected checkpoint;
* ``lpft``: linear probing, then fine-tuning (Kumar et al. 2022): the head starts from a
  logistic regression fitted on the frozen features (``--model.head_init probe``), then the whole
  model trains at a tenth of the recipe's backbone rate (the head too);
* ``lora``: low-rank adapters through peft on the backbone's projections, the backbone frozen, the
  head trained fully (``--model.adapter lora``; ``--model.lora_rank``, ``--model.lora_alpha``);
* ``scratch``: the same architecture from random initialisation, with the same recipe, seeds and
  budget (``scratch``, ``lpft`` and ``lora`` run whenever the recipe's backbone is pretrained:
  the controls that say whether pretraining helped, and how best to keep it);
* ``cnn``: a small CNN trained from scratch (:class:`~hnet_dna.model.cnn.CNNClassifier`, positions
  flattened into a dense head, 0.24-0.33 M parameters for 60-400 bp; Genomic Benchmarks' and
  Caduceus's baseline), same data, trainer and selection;
* ``probe``: logistic regression on the frozen backbone's pooled features (C chosen on validation);
* ``kmer_lr``: logistic regression on k-mer frequencies (k and C chosen on validation).

A multilabel or regression recipe (selection on ``val/auprc`` / ``val/pearson``) takes every
system but ``lpft``; its ``probe`` and ``kmer_lr`` fit one model per output, chosen on validation
(logistic regression per label, ridge regression per target:
:mod:`hnet_dna.protocols.finetune.task_controls`), and its table holds the task's metrics per output.

A per-base annotation recipe (``hnet_dna.data.AnnotationDataModule``) takes ``model``, ``scratch``,
``cnn`` (the dilated residual CNN) and ``probe`` (per element, a logistic regression on the frozen
backbone's per-base features: :mod:`hnet_dna.protocols.finetune.per_base_probe`); its table holds
per-element base-level MCC, AUPRC and edge recall.

Budget (``--budget``), the same for every trained system: ``time:MINUTES`` (per fit, within the
recipe's ``max_epochs``, which the learning-rate schedule spans), ``epochs:N``, or ``flops:X`` (training FLOPs per fit: steps = X / the FLOPs of
one step, counted with the data-efficiency benchmark's counter on a batch of the longest training
sequences); without it, the recipe's ``max_epochs`` / ``max_time``. Early stopping and selection
stay on validation. Every run records ``epochs``, ``optimizer_steps``, ``training_flops``,
``wall_seconds``, ``trainable_parameters`` and ``total_parameters`` (probe and kmer_lr: solvers,
not trainers: parameters and seconds only).

A seed changes the model's initialisation, the order of training batches and the
reverse-complement draws (``--data.sample_seed``); the split is the data module's (``--data.seed``)
and stays fixed. ``probe`` and ``kmer_lr`` are deterministic given the split (fitted once per split,
recorded for every seed; their summary counts one run per split, so with one split their sd is
undefined). ``--folds K`` cross-validates sets without a given test split (a
stratified, seeded K-fold partition; each fold's test rows are one fold, its validation rows come
out of the others): results are then over folds x seeds.

Writes into ``--out``:

* ``results.json``: ``runs`` (one entry per system, fold and seed: every test metric, the
  checkpoint used and its validation score, what the run spent), ``budget``, ``summary`` (system -> test metric -> ``mean``,
  ``sd`` with ddof 1 over folds x seeds, ``n``), ``winners`` (per metric: the best system, the
  runner-up, the margin and the margin in units of the larger sd of the two), the config, data
  files, class names, seeds, folds and split sizes;
* ``results.md``: the same as a table (also printed: metrics, then what a run spent) and a line
  per metric saying who wins;
* ``runs/<system>/[fold<F>-]seed<S>/``: each fit's logs and checkpoints.

A rerun skips the runs already finished (results are written after each one), and refuses to mix
results when the budget, the config, the overrides, the folds or the data files differ from those
of the finished runs (a fingerprint of all of them). A rerun whose backbone changed since (a new default
model, a retrained folder) keeps the runs that do not rest on it (cnn, kmer_lr; scratch too when
only the weights changed, not the architecture) and redoes the others.
"""  # the --help epilog

__all__ = ["main", "run_protocol"]


def run_protocol(*args, **kwargs) -> dict:
    """:func:`hnet_dna.protocols.finetune.protocol.run_protocol` (imported when called: it loads
    Lightning, which ``--help`` does not need)."""
    from .protocols.finetune.protocol import run_protocol as run

    return run(*args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hnet_dna.finetune", description=__doc__.split("\n\n")[0],
                                     epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a fine-tuning recipe (pipelines/finetune/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the runs")
    parser.add_argument("--folds", type=int, default=0,
                        help="cross-validate with K stratified folds (sets without a given test split); 0: the recipe's split")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=None,
                        help="the systems to run (default: all; scratch, lpft and lora only for a pretrained backbone)")
    parser.add_argument("--budget", default=None, metavar="KIND:AMOUNT",
                        help="per trained run: time:MINUTES, epochs:N or flops:X (default: the recipe's trainer caps)")
    args, overrides = parser.parse_known_args(argv)
    if args.folds == 1 or args.folds < 0:
        parser.error("--folds must be 0 or >= 2")
    from .runs import closing_process_group, exit_on_user_error

    with closing_process_group():
        exit_on_user_error(lambda: run_protocol(args.config, overrides, args.seeds, args.out, args.folds, args.systems,
                                                args.budget),
                           prog="hnet_dna.finetune")



if __name__ == "__main__":
    main()

"""Named behaviours broken one at a time, each with the test that must catch it: one list per package
of hnet_dna (and one for benchmarks/), grouped by module. ``python -m tests.mutants`` runs them
(see ``__main__``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Mutant:
    name: str
    what: str  # the behaviour it breaks
    file: str
    edits: list[tuple[str, str]]  # (text that must occur exactly once, replacement)
    test: str  # the pytest node that must catch it


from . import benchmarks, core, data, hf, inference, interpret, kernels, model, protocols, tasks  # noqa: E402  (they use Mutant)

MUTANTS: list[Mutant] = [*core.MUTANTS, *model.MUTANTS, *kernels.MUTANTS, *data.MUTANTS, *tasks.MUTANTS,
                         *inference.MUTANTS, *interpret.MUTANTS, *protocols.MUTANTS, *hf.MUTANTS, *benchmarks.MUTANTS]

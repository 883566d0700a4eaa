"""The fine-tuning protocol: the recipe's model against the field's controls on the same splits,
seeds and budget (``python -m hnet_dna.finetune``). ``protocol`` runs and resumes it, ``systems``
holds one run of each system, ``results`` the summary, winners and table."""

from .results import METRICS, SYSTEMS, summarise, winners

__all__ = ["run_protocol", "summarise", "winners", "METRICS", "SYSTEMS"]


def __getattr__(name: str):
    # run_protocol imports Lightning and the CLI: only when used, so that ``--help`` stays quick
    if name == "run_protocol":
        from .protocol import run_protocol

        return run_protocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

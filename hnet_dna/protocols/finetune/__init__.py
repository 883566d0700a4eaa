"""The fine-tuning protocol: the recipe's model against the field's controls on the same splits,
seeds and budget (``python -m hnet_dna.finetune``). ``protocol`` runs and resumes it, ``systems``
holds one run of each system, ``results`` the summary, winners and table."""

from .results import METRICS, SYSTEMS, summarise, winners

__all__ = ["summarise", "winners", "METRICS", "SYSTEMS"]  # run_protocol: from .protocol (it loads Lightning)

"""The fine-tuning protocol: the recipe's model against the field's controls on the same splits,
seeds and budget (``python -m hnet_dna.finetune``). ``protocol`` runs and resumes it, ``systems``
holds one run of each system, ``results`` the summary, winners and table."""

from .protocol import run_protocol
from .results import METRICS, SYSTEMS, summarise, winners

__all__ = ["run_protocol", "summarise", "winners", "METRICS", "SYSTEMS"]

"""hnet_dna's models through Hugging Face ``transformers`` (``pip install "hnet_dna[hf]"``).

Importing this package registers the classes with the Auto classes, so a folder written by any
``save_pretrained`` of hnet_dna loads with::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)

``trust_remote_code=True`` runs the three one-line files the folder carries
(``configuration_hnet_dna.py``, ``modeling_hnet_dna.py``, ``tokenization_hnet_dna.py``), which import
these classes from the installed hnet_dna; after ``import hnet_dna.hf`` the flag is not needed.
The classes wrap the models of :mod:`hnet_dna.model` (no second model): same weights, same logits.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .configuration import MODEL_TYPE, HNetDNAConfig
from .modeling import HNetDNAForCausalLM, HNetDNAForMaskedLM, HNetDNAForSequenceClassification, HNetDNAModel
from .tokenization import HNetDNATokenizer

AutoConfig.register(MODEL_TYPE, HNetDNAConfig, exist_ok=True)
AutoModel.register(HNetDNAConfig, HNetDNAModel, exist_ok=True)
AutoModelForCausalLM.register(HNetDNAConfig, HNetDNAForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(HNetDNAConfig, HNetDNAForSequenceClassification, exist_ok=True)
AutoModelForMaskedLM.register(HNetDNAConfig, HNetDNAForMaskedLM, exist_ok=True)
AutoTokenizer.register(HNetDNAConfig, slow_tokenizer_class=HNetDNATokenizer, exist_ok=True)

__all__ = ["HNetDNAConfig", "HNetDNAModel", "HNetDNAForCausalLM", "HNetDNAForMaskedLM", "HNetDNAForSequenceClassification",
           "HNetDNATokenizer"]

# What transformers runs for AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForMaskedLM (trust_remote_code=True).
# The code is the installed hnet_dna's (pip install "hnet_dna[hf]"); after `import hnet_dna.hf`
# the Auto classes need no remote code.
from hnet_dna.hf import HNetDNAModel, HNetDNAForCausalLM, HNetDNAForSequenceClassification, HNetDNAForMaskedLM  # noqa: F401

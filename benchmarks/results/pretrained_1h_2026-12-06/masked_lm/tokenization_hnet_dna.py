# What transformers runs for AutoTokenizer (trust_remote_code=True).
# The code is the installed hnet_dna's (pip install "hnet_dna[hf]"); after `import hnet_dna.hf`
# the Auto classes need no remote code.
from hnet_dna.hf import HNetDNATokenizer  # noqa: F401

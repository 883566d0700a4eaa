"""Reading sequences with a pretrained model, what ``embed`` and ``score`` share: ``tiling``
(windows that own each base once, batches by length, exact reads from the caches, the device),
``embed`` (pooled or per-position embeddings) and ``score`` (likelihoods, per base, variants)."""

"""Protocols: measurements made of many fits, each with its controls. ``finetune`` (the recipe's
model against scratch, CNN, probe and k-mer controls) and ``data_efficiency`` (H-Nets against
isotropic baselines on one stream of windows)."""

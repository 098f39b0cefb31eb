"""Pruning in PyTorch: the ``prune`` verb and unstructured masks, structured removal (Torch-Pruning),
whole-layer removal, pruning at initialisation and low-rank factorisation, with squeezelab's checks
around a structurally pruned model."""

"""Exploring trade-offs: the cached ``Evaluator``, ``sweep``, Pareto frontiers, per-layer sensitivity
and ``search`` (with its accuracy-aware int8 strategy)."""

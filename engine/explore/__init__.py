"""Exploring trade-offs: the cached ``Evaluator``, ``sweep``, Pareto frontiers, per-layer sensitivity
and ``search`` (one strategy per objective in ``search_strategies``: the greedy descent for size and
latency, and the accuracy-aware int8 strategy)."""

"""Exploring trade-offs: the cached ``Evaluator``, ``sweep``, Pareto frontiers, per-layer sensitivity
and ``search`` (one strategy per objective in ``search_strategies``: the greedy descent for size and
latency, and the accuracy-aware int8 strategy; every strategy returns a ``SearchResult``).

What a verb tries is one frozen config, its fields also taken as keywords (``overrides``): ``Grid`` for
``sweep`` and the explorer (``grid``), ``SearchConfig`` for ``search`` (``search_setup``)."""

"""What ``sweep`` and ``search`` take beside their keywords, and the machinery under them: a sweep's
``Grid`` (also where the Explorer starts) and a search's ``SearchConfig``; for those who drive it themselves,
the cached ``Evaluator``, the on-disk ``ResultCache``, the recipe at one grid point and the interruption a
sweep raises (carrying the rows finished so far).

    >>> import squeezelab as sl
    >>> from squeezelab.explore import Grid, SearchConfig, grid_recipe
    >>> grid_recipe(8, 0.0) == sl.Recipe(quantization=sl.LinearQuantization(bits=8), runtime=sl.Simulated())
    True
    >>> Grid(bits=[8, 4], sparsity=0.5).sparsity, SearchConfig(objective="latency").time_budget_s
    ((0.5,), 120.0)
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.explore", globals())

"""The machinery under ``sweep`` and ``search``, for those who drive it themselves: the cached
``Evaluator``, the on-disk ``ResultCache``, the grid of recipes a sweep runs and the interruption
it raises (carrying the rows finished so far).

    >>> import squeezelab as sl
    >>> from squeezelab.explore import grid_recipe
    >>> grid_recipe(8, 0.0).label == sl.Recipe(quantization=sl.LinearQuantization(bits=8)).label
    True
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.explore", globals())

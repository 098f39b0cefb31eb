"""More pruning tools beside ``prune``: baking masks into weights, pruning at initialisation (SNIP),
low-rank factorisation, lottery tickets.

    >>> from squeezelab.pruning import bake_masks_, factorize
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.pruning", globals())

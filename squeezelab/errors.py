"""Every error squeezelab raises on bad input: ``SqueezeError`` and its subclasses.

Each message says what was passed, what is allowed, and how to fix it. Where a built-in exception
describes the category too, the class inherits from it as well (``ConfigError`` is a ``ValueError``),
so code that catches the built-in keeps working.

    >>> from squeezelab.errors import ConfigError, SqueezeError
    >>> issubclass(ConfigError, SqueezeError) and issubclass(ConfigError, ValueError)
    True

Importing this module loads no torch; an error defined beside the code that raises it (``SweepError``,
``SmoothingError``, ...) loads that code on first use.
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.errors", globals())

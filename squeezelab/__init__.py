"""squeezelab: compress PyTorch models into real int8 ONNX Runtime models, measure them honestly.

    >>> import squeezelab as sl
    >>> sl.Recipe(runtime=sl.Int8Static(calibration="entropy")).label
    'int8-static-entropy-perchannel'

``import squeezelab`` is light: the engine's names (and torch) load on first
use, and onnxruntime, plotly or ipywidgets only when a function needs them.
"""

from __future__ import annotations

from typing import Any

from squeezelab._version import __version__
from squeezelab.engine import __all__ as _engine_all


def __getattr__(name: str) -> Any:
    if name in _engine_all:
        import squeezelab.engine as engine

        value = getattr(engine, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'squeezelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_engine_all])


__all__ = ["__version__", *_engine_all]

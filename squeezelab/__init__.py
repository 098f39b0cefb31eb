"""squeezelab: compress PyTorch models into real int8 ONNX Runtime models, measure them honestly.

    >>> import squeezelab as sl
    >>> sl.Recipe(runtime=sl.Int8Static(calibration="entropy")).label
    'int8-static-entropy-perchannel'

The top level holds the verbs (``compress``, ``prune``, ``quantize``, ``measure``, ``sweep``,
``search``, ...), the configs they take and the results they return. The rest lives in a few
sub-modules: ``squeezelab.errors``, ``squeezelab.metrics``, ``squeezelab.quantization``,
``squeezelab.pruning``, ``squeezelab.explore``, ``squeezelab.models`` (the list: ``squeezelab._public``).

``import squeezelab`` is light: the engine's names (and torch) load on first use, and onnxruntime,
plotly or ipywidgets only when a function needs them.
"""

from __future__ import annotations

from squeezelab._public import facade, moved_from_top_level
from squeezelab._version import __version__

__getattr__, __dir__, _names = facade("squeezelab", globals(), moved=moved_from_top_level())

__all__ = ["__version__", *_names]

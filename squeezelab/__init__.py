"""squeezelab: compress PyTorch models into real int8 ONNX Runtime models, measure them honestly.

    >>> import squeezelab as sl
    >>> sl.Recipe(runtime=sl.Int8Static(calibration="entropy")).label
    'int8-static-entropy-perchannel'

``import squeezelab`` imports torch but not onnxruntime, plotly or ipywidgets;
those load when first needed.
"""

from squeezelab._version import __version__
from squeezelab.engine import *  # noqa: F403 - the facade re-exports the engine's public API
from squeezelab.engine import __all__ as _engine_all

__all__ = ["__version__", *_engine_all]

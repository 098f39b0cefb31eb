"""What a measurement scores, and where a model's time goes.

Metrics are per-sample scores, higher is better (``Metric``); pass one as ``metric=`` to ``measure``,
``measure_pair``, ``sweep``, ``search`` or a ``Settings``. Those named ``..._to_baseline`` and
``top1_agreement`` compare with the uncompressed model's own outputs (no labels needed); the others
with the data's targets. ``op_times`` and ``time_split`` read ONNX Runtime's profiler by op type.

    >>> import numpy as np
    >>> from squeezelab.metrics import top1_accuracy
    >>> top1_accuracy.scores(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.metrics", globals())

"""The built-in digits models: small classifiers for scikit-learn's 8x8 digits, trained on first use
(seeded, a few seconds, cached for the process). Real models (MiniLM, EfficientNet-Lite0, ResNet and
MobileNet layouts, BERT from a config) are in ``squeezelab.engine.zoo``; nothing is downloaded.

    >>> from squeezelab.models import default_model
    >>> model, split = default_model("mlp")
    >>> split.x_test.shape[1:]
    (64,)
"""

from __future__ import annotations

from squeezelab._public import facade

__getattr__, __dir__, __all__ = facade("squeezelab.models", globals())

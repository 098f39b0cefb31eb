"""PyTorch factories for the command-line tests: ``squeezelab compress tests/factories.py:digits_mlp ...``.

A factory is a function with no arguments that returns the ``nn.Module``; its trained weights come
from ``--weights FILE.safetensors``.
"""

from __future__ import annotations

from torch import nn


def digits_mlp() -> nn.Module:
    """The built-in digits MLP's architecture, untrained (``--weights`` gives it the trained weights)."""
    from squeezelab.engine.zoo.digits import DigitsMLP

    return DigitsMLP()


def tiny_bert() -> nn.Module:
    """A Hugging Face ``BertModel`` (seeded, 139k parameters): keyword inputs, a ``ModelOutput``."""
    from squeezelab.engine.zoo import tiny_bert as build

    return build(seed=0)


def not_a_model() -> str:
    """A factory that returns something other than a module (refused with one line)."""
    return "a string"

"""Deep copies of models that stay independent even when they carry parametrizations.

``copy.deepcopy`` of a module with ``torch.nn.utils.parametrize``
parametrizations shares its dynamically created class (``ParametrizedLinear``)
with the original, and that class holds the ``weight`` property. Removing the
parametrization from the copy deletes the property from the shared class and
breaks the original (measured: the caller's pruned model lost its ``weight``).
``copy_model`` gives every parametrized module of the copy a class of its own.
"""

from __future__ import annotations

import copy
from typing import TypeVar

from torch import nn
from torch.nn.utils import parametrize

__all__ = ["copy_model", "own_class", "replace_module"]

M = TypeVar("M", bound=nn.Module)


def own_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own, so changing it cannot reach other modules.

    Called before removing a parametrization: the module may be a ``copy.deepcopy``
    of another (made by the user), sharing its class.
    """
    if parametrize.is_parametrized(module):
        cls = type(module)
        module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))


def copy_model(model: M) -> M:
    """A deep copy of ``model`` that shares no mutable state with it, parametrized classes included."""
    out = copy.deepcopy(model)
    for module in out.modules():
        own_class(module)
    return out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` (dotted path) was."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)

"""A large model nothing changes: ``compress``'s copy shares its tensors, and its export is reused (issue #24).

``private_copy``: past the file threshold (1 GiB: BERT-large), when nothing will change the copy's weights (no
pruning, no fidelity step, no pruning mask to bake), ``compress``'s own copy of the model has its own modules
and the caller's tensors: BERT-large's second 1.34 GB was held from the first check to the end for nothing.
Neither model is changed.

Compressing one large model several ways (its fp32 baseline, int8, 4-bit) exported it each time: minutes and
several GB for a 730 M-parameter encoder, for the same graph. When ``compress``'s copy of a model past the
file threshold shares the caller's tensors (nothing changes them: no pruning, no fidelity step), its export
depends only on what the key holds: the model (``model_fingerprint``: weights, module tree, code), the example
inputs, the opset, the exporter and the output selected. The last such export is kept (it is a file in a
working folder, not memory) with the tracer's notes, and handed to the next ``compress`` with the same key.
The export check still runs each time, on that call's data. Smaller models are exported each time: a memo
would hold a copy of their bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.code_key import model_fingerprint
from squeezelab.engine.core.copying import copy_model, own_class
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.content_hash import fingerprint
from squeezelab.engine.core.fingerprints import callable_fingerprint
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import selector_name
from squeezelab.engine.pruning.masks import weight_mask
from squeezelab.engine.quantization.transforms import default_transforms
from squeezelab.engine.runtime.export import tensor_bytes
from squeezelab.engine.runtime.external_data import is_file_model
from squeezelab.engine.runtime.size_limit import current_file_threshold

__all__ = ["private_copy", "export_once", "export_key", "remembered_export", "forget_exports"]

_LAST: dict[str, tuple[bytes, list[str]]] = {}  # one entry: the last large export, by its key


def private_copy(model: nn.Module, recipe: Recipe, calibration_data: Any) -> nn.Module:
    """``compress``'s own copy of ``model``, in eval mode: its tensors shared past the threshold when nothing
    changes them (see the module's docstring), else a deep copy."""
    given = calibration_data is not None and not (
        isinstance(calibration_data, (list, tuple, np.ndarray, torch.Tensor)) and len(calibration_data) == 0)
    steps = recipe.transforms if recipe.transforms is not None else default_transforms(model, recipe.runtime, given)[0]
    unchanged = recipe.pruning is None and not steps and not any(weight_mask(m) is not None for m in model.modules())
    if not unchanged or tensor_bytes(model) <= current_file_threshold():
        return copy_model(model).eval()
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # deepcopy returns these as they are
    out = copy.deepcopy(model, shared)
    for module in out.modules():
        own_class(module)
    return out.eval()


def shares_tensors(work: nn.Module, model: Any) -> bool:
    """Whether ``private_copy`` gave ``work`` the caller's tensors (a large model nothing changes)."""
    mine, theirs = next(work.parameters(), None), next(model.parameters(), None)
    return mine is not None and mine is theirs


def export_once(work: nn.Module, model: Any, key_parts: tuple, notes: list[str],
                make: Callable[[list[str]], bytes]) -> bytes:
    """``make(notes)``, or the kept export of the last call on the same large model (``key_parts``: the example,
    opset, exporter, output selector and whether the model is exported as it is)."""
    if not shares_tensors(work, model):
        return make(notes)
    return remembered_export(export_key(model, *key_parts), make, notes)


def export_key(model: Any, example: Inputs, opset: int, exporter: str, output: Any, plain: bool) -> str:
    """Everything the export of ``model`` depends on."""
    shown = callable_fingerprint(output) if callable(output) else selector_name(output)
    return fingerprint("export", model_fingerprint(model), example.kind, list(example.names), list(example.arrays),
                       opset, exporter, shown, plain)


def remembered_export(key: str, make: Callable[[list[str]], bytes], notes: list[str]) -> bytes:
    """The export under ``key``: the one kept, or ``make(notes)``'s (kept when it is a file). ``notes`` receives
    the tracer's warnings either way."""
    if key in _LAST:
        model, seen = _LAST[key]
        notes.extend(seen)
        return model
    seen: list[str] = []
    model = make(seen)
    notes.extend(seen)
    if is_file_model(model):
        _LAST.clear()  # one at a time: each is a model-sized file
        _LAST[key] = (model, seen)
    return model


def forget_exports() -> None:
    """Drop the kept export (its working folder is removed with the last result that uses it)."""
    _LAST.clear()

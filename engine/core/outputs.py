"""Which output of a model is evaluated and exported.

Models return a tensor, a tuple, a dict or a Hugging Face ``ModelOutput``.
``output=`` names the one that counts:

- ``None`` (default): the tensor itself, else the first tensor (for a
  ``ModelOutput``, its first field, e.g. ``last_hidden_state`` or ``logits``);
- a key (``"pooler_output"``) of a dict or ``ModelOutput``;
- an index (``1``) of a tuple or ``ModelOutput``;
- a callable ``output(outputs) -> tensor``, e.g. mean pooling.

``SelectedOutput`` wraps a model so that it takes its inputs positionally and
returns that one tensor: the form ``torch.onnx.export`` needs, and the form
every runtime then shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from squeezelab.engine.core.arguments import as_integer
from squeezelab.engine.core.errors import ConfigError, ModelError

__all__ = ["OutputSelector", "select_output", "SelectedOutput", "check_selector", "selector_name"]

OutputSelector = Union[None, str, int, Callable[[Any], torch.Tensor]]


def check_selector(output: Any) -> None:
    """Raise ``ConfigError`` for an ``output=`` that is none of the accepted kinds."""
    if output is None or callable(output) or isinstance(output, str):
        return
    if as_integer(output) is not None:  # an index: Python or numpy integers alike
        return
    raise ConfigError(
        f"output={output!r}; pass None (the first tensor), a key such as 'logits', an index such as 0, "
        "or a callable outputs -> tensor."
    )


def selector_name(output: OutputSelector) -> str | None:
    """A stable, readable name of the selector (for cache keys, labels and metadata)."""
    if output is None or isinstance(output, str) or as_integer(output) is not None:
        return None if output is None else str(output if isinstance(output, str) else as_integer(output))
    return getattr(output, "__qualname__", type(output).__name__)


def _fields(out: Any) -> list[tuple[str, Any]]:
    if isinstance(out, Mapping):  # dicts and ModelOutput (an OrderedDict of its non-None fields)
        return [(str(k), v) for k, v in out.items()]
    if isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
        return [(str(i), v) for i, v in enumerate(out)]
    return []


def select_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The evaluated tensor of a model's output ``out`` (see the module docstring)."""
    if callable(output):
        chosen = output(out)
        what = f"output={selector_name(output)}(...)"
    elif isinstance(out, torch.Tensor) and output is None:
        return out
    elif output is None:
        fields = _fields(out)
        chosen = next((v for _, v in fields if isinstance(v, torch.Tensor)), None)
        what = "the first tensor output"
        if chosen is None:
            raise ModelError(
                f"the model returns {type(out).__name__} with no tensor in it; pass output= (a key, an index or "
                "a callable) naming the tensor to evaluate."
            )
    else:
        chosen, what = _pick(out, output), f"output={output!r}"
    if not isinstance(chosen, torch.Tensor):
        raise ModelError(f"{what} gives {type(chosen).__name__}, not a tensor; choose a tensor output.")
    return chosen


def _pick(out: Any, output: str | int) -> Any:
    if isinstance(output, str):
        if isinstance(out, Mapping) and output in out:
            return out[output]
        keys = [k for k, _ in _fields(out)] if isinstance(out, Mapping) else []
        raise ModelError(
            f"output={output!r} is not among the model's outputs ({type(out).__name__} with keys {keys}); "
            "pass one of those keys, an index, or a callable."
        )
    output = as_integer(output)  # np.int64(0) picks what 0 picks
    items = out.to_tuple() if hasattr(out, "to_tuple") else out
    if isinstance(items, Sequence) and not isinstance(items, (str, bytes)) and -len(items) <= output < len(items):
        return items[output]
    size = len(items) if isinstance(items, Sequence) else 1
    raise ModelError(
        f"output={output!r} is out of range: the model returns {type(out).__name__} with {size} output(s)."
    )


class SelectedOutput(nn.Module):
    """``model`` called with positional inputs in ``names`` order, returning the selected tensor.

    Args:
        model: the wrapped module (a child, so its weights are this module's weights).
        kind: ``"tensor"``, ``"tuple"`` or ``"dict"`` — how ``model`` takes its inputs.
        names: the keyword names, for ``kind == "dict"``.
        output: the selector (see ``select_output``).
    """

    def __init__(self, model: nn.Module, kind: str, names: Sequence[str], output: OutputSelector = None) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.names = tuple(names)
        self.output = output
        # A new module starts in training mode; the wrapper takes the model's, or restoring the wrapper's
        # mode after an export (export_onnx does) would switch the wrapped model to training.
        self.train(model.training)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "dict":
            out = self.model(**dict(zip(self.names, inputs)))
        else:
            out = self.model(*inputs)
        return select_output(out, self.output)

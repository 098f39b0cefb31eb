"""The example batch: the one batch of inputs that export, tracing and structural pruning run the model on.

``example_batch`` reads ``example_inputs`` in any input form; ``run_example`` runs the model on it and
checks, before any slow work, that the model accepts it and that ``output=`` selects a tensor.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from squeezelab.engine.core.errors import ExampleInputError, SqueezeError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector, select_output

__all__ = ["example_batch", "run_example"]


def example_batch(example_inputs: Any) -> Inputs:
    """``example_inputs`` (a tensor or array, a tuple of them, a dict of them) as one ``Inputs`` batch."""
    if example_inputs is None:
        raise ExampleInputError(
            "example_inputs is required to export the model; pass one batch the model accepts, e.g. "
            "example_inputs=torch.randn(1, 1, 8, 8), a tuple for several inputs, or a dict of keyword inputs."
        )
    try:
        inputs = Inputs.of(example_inputs, "example_inputs")
    except SqueezeError as exc:
        raise ExampleInputError(str(exc)) from None
    if len(inputs) < 1:
        raise ExampleInputError(f"example_inputs hold no sample ({inputs.form()}); pass at least one.")
    return inputs


def run_example(model: nn.Module, example: Inputs, output: OutputSelector) -> Any:
    """The model's raw output on the example inputs (checked to select a tensor); its error, explained, if it fails."""
    try:
        out = example.call(model)
    except Exception as exc:  # the model's own error says what it expected
        raise ExampleInputError(
            f"the model fails on example_inputs ({example.form()}): {exc}. Pass inputs shaped as the model "
            "expects, with the batch dimension first (a dict for keyword inputs)."
        ) from exc
    select_output(out, output)  # a selector that names no tensor fails now, before any slow work
    return out

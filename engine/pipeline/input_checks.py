"""Checks that a model's graph and its outputs fit the data the way ``compress`` and ``measure`` use them.

- Every input given must be an input of the exported graph: the TorchScript exporter leaves out a
  keyword input that ``forward`` accepts but never uses, and ONNX Runtime would then refuse the
  feed with "Invalid input name".
- A model gives one output row per input sample: an ONNX graph without a batch axis (it takes
  ``(seq, 64)`` and returns ``(10,)``) would otherwise have its 10 output values scored as 10
  "samples" of the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from squeezelab.engine.core.errors import DataError, ExportError, ModelError
from squeezelab.engine.core.inputs import Inputs, InputSpec
from squeezelab.engine.runtime.providers import make_session

__all__ = ["check_graph_inputs", "check_graph_rows", "check_output_rows", "rows_to_check", "zeros_like_spec"]


def check_graph_inputs(onnx_bytes: bytes, spec: InputSpec, what: str = "example_inputs") -> None:
    """Raise ``DataError`` when inputs of ``spec`` are not inputs of the exported graph."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    initializers = {i.name for i in graph.initializer}
    taken = [i.name for i in graph.input if i.name not in initializers]
    unused = [n for n in spec.names if n not in taken]
    if unused and spec.kind == "dict":
        raise DataError(
            f"{what} hold the key(s) {unused}, which the model does not use: the exported graph takes only {taken} "
            f"(forward() accepts {unused} but computes nothing from them). Leave {unused} out of {what} and the data."
        )
    if unused:
        raise DataError(
            f"the model uses only {len(taken)} of the {len(spec.names)} positional inputs of {what} (graph inputs "
            f"{taken}); pass only the inputs forward() computes with."
        )


def rows_to_check(example: Inputs, spec: InputSpec) -> Inputs:
    """The example as a batch that shows whether outputs follow the batch: at least 2 rows (``k`` for a fixed batch)."""
    if spec.batch:
        return example.tile(spec.batch) if len(example) != spec.batch else example
    return example if len(example) >= 2 else example.tile(2)


def _input_shapes(spec: InputSpec) -> str:
    shown = []
    for name, shape in zip(spec.names, spec.shapes):
        dims = ", ".join("?" if s is None else str(s) for s in shape)
        shown.append(f"{name!r} ({dims})")
    return ", ".join(shown)


def check_output_rows(out: Any, inputs: Inputs, spec: InputSpec, source: str) -> None:
    """Raise ``ModelError`` unless ``out`` has one row per sample of ``inputs``."""
    shape = tuple(np.shape(out))
    if shape and shape[0] == len(inputs):
        return
    fed = ", ".join(f"{n!r} {tuple(a.shape)}" for n, a in zip(inputs.names, inputs.arrays))
    raise ModelError(
        f"{source} returned an output of shape {shape} for {len(inputs)} samples ({fed}): its first axis is not one "
        f"entry per sample, so the model has no batch axis (its inputs: {_input_shapes(spec)}, the first axis read "
        "as the batch) and its outputs cannot be scored per sample. Export it with a leading batch axis on every "
        "input and the output (torch.onnx.export(..., dynamic_axes={'x': {0: 'batch'}, 'output': {0: 'batch'}}))."
    )


def check_graph_rows(onnx_bytes: bytes, example: Inputs, spec: InputSpec, output_name: str | None, source: str | None) -> None:
    """The fp32 graph gives one output row per sample (a graph without a batch axis does not), checked
    before any calibration; a graph with a fixed batch is fed a batch of that size. ``source`` names an
    ONNX file (None: the model's own export)."""
    rows = rows_to_check(example, spec)
    label = repr(source) if source else "the exported model"
    try:
        out = make_session(onnx_bytes, threads=1).run([output_name] if output_name else None, rows.feeds(spec.names))[0]
    except Exception as exc:  # ONNX Runtime's own message names the input and the dimension
        raise ExportError(f"{label} does not run in ONNX Runtime on the CPU ({rows.form()}): {exc}") from exc
    check_output_rows(out, rows, spec, label)


def zeros_like_spec(spec: InputSpec) -> Inputs:
    """One all-zero sample per input (a fixed batch's rows; sequences of 8): enough to check the graph runs."""
    arrays = []
    for i, (dtype, shape) in enumerate(zip(spec.dtypes, spec.shapes)):
        dims = [spec.batch or 1 if axis == 0 else (s if s is not None else 8) for axis, s in enumerate(shape)]
        arrays.append(np.zeros(dims, dtype=np.dtype(dtype)))
    example = Inputs(spec.kind, spec.names, arrays)
    return example

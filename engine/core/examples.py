"""The example batch: the one batch of inputs that export, tracing and structural pruning run the model on.

``example_batch`` reads ``example_inputs`` in any input form; ``run_example`` runs the model on it and
checks, before any slow work, that the model accepts it and that ``output=`` selects a tensor.
``probe_example`` does the same run and also learns what the model's embeddings can take: the
vocabulary size behind each token-id input and the longest sequence its position table holds, so
that ids outside the vocabulary and over-long sequences are refused by name before any work (not
by ONNX Runtime's Gather error or PyTorch's "index out of range in self" halfway through).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from squeezelab.engine.core.errors import DataError, ExampleInputError, SqueezeError
from squeezelab.engine.core.inputs import Inputs, InputSpec
from squeezelab.engine.core.outputs import OutputSelector, select_output

__all__ = ["example_batch", "run_example", "probe_example", "check_input_names"]


def example_batch(example_inputs: Any) -> Inputs:
    """``example_inputs`` (a tensor or array, a tuple of them, a dict of them) as one ``Inputs`` batch."""
    if example_inputs is None:
        raise ExampleInputError(
            "example_inputs is required to export the model; pass one batch the model accepts, e.g. "
            "example_inputs=torch.randn(1, 1, 8, 8), a tuple for several inputs, or a dict of keyword inputs."
        )
    try:
        inputs = Inputs.of(example_inputs, "example_inputs").check_finite("example_inputs")
    except SqueezeError as exc:
        raise ExampleInputError(str(exc)) from None
    if len(inputs) < 1:
        raise ExampleInputError(f"example_inputs hold no sample ({inputs.form()}); pass at least one.")
    return inputs


def check_input_names(model: nn.Module, inputs: Inputs, what: str = "example_inputs") -> None:
    """Keyword inputs must be parameters of ``model.forward`` (a ``DataError`` naming the unknown keys)."""
    if inputs.kind != "dict":
        return
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a builtin or C++ forward: nothing to read
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [n for n in inputs.names if n not in params]
    if unknown:
        accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        raise DataError(
            f"{what} hold the key(s) {unknown}, which {type(model).__name__}.forward does not take; its inputs are "
            f"{accepted}. Leave {unknown} out of {what} and the data (or rename them to the model's input names)."
        )


def run_example(model: nn.Module, example: Inputs, output: OutputSelector) -> Any:
    """The model's raw output on the example inputs (checked to select a tensor); its error, explained, if it fails."""
    return probe_example(model, example, output)[0]


def probe_example(model: nn.Module, example: Inputs, output: OutputSelector) -> tuple[Any, InputSpec]:
    """The model's raw output on the example, and the example's spec with the embeddings' limits.

    Each ``nn.Embedding`` is watched during the one run: one that is fed a model input directly
    (the same tensor, or a view of it) gives that input's vocabulary size; one fed
    ``offset + arange(length)`` along the sequence axis is a position table, which holds
    ``rows - offset`` positions. A model input with ids outside its table is named before the
    model's own error (which would not say which input, nor the table's size).
    """
    check_input_names(model, example)
    args, kwargs = example.torch()
    fed = [*args, *kwargs.values()]
    seen: list[tuple[str, nn.Embedding, torch.Tensor]] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, a, name=name: seen.append((name, m, a[0])) if a and isinstance(a[0], torch.Tensor) else None)
        for name, module in model.named_modules()
        if isinstance(module, nn.Embedding)
    ]
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
        error = None
    except Exception as exc:  # the model's own error says what it expected
        out, error = None, exc
    finally:
        for h in hooks:
            h.remove()
    spec = _with_limits(example.spec(), fed, seen)
    if error is not None:
        try:
            example.check(spec, "example_inputs")  # ids outside a table: say which, and the table's size
        except DataError as exc:
            raise ExampleInputError(str(exc)) from error
        raise ExampleInputError(
            f"the model fails on example_inputs ({example.form()}): {error}. Pass inputs shaped as the model "
            "expects, with the batch dimension first (a dict for keyword inputs)."
        ) from error
    try:
        example.check(spec, "example_inputs")
    except DataError as exc:  # e.g. a padding id the model maps by itself; refused like the data would be
        raise ExampleInputError(str(exc)) from None
    select_output(out, output)  # a selector that names no tensor fails now, before any slow work
    return out, spec


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` is the model input ``b`` or a view of it (``input_ids.view(-1, L)``); a tensor the model
    computed from it (clamped, remapped) is not, so ids the model maps by itself are never refused."""
    return a is b or (a.numel() == b.numel() and a.dtype == b.dtype and a.data_ptr() == b.data_ptr())


def _position_offset(ids: torch.Tensor) -> int | None:
    """``offset`` when ``ids`` is ``offset + arange(length)`` along its last axis (a position table's input)."""
    if ids.ndim == 0 or ids.shape[-1] < 2 or ids.is_floating_point():
        return None
    rows = ids.reshape(-1, ids.shape[-1])
    start = rows[:, :1]
    expected = start + torch.arange(ids.shape[-1], device=ids.device)
    if not torch.equal(rows, expected) or not bool((start == start[0, 0]).all()):
        return None
    return int(start[0, 0])


def _with_limits(spec: InputSpec, fed: list[torch.Tensor], seen: list[tuple[str, nn.Embedding, torch.Tensor]]) -> InputSpec:
    vocab: list[tuple[int, str] | None] = [None] * len(fed)
    positions: tuple[int, str] | None = None
    lengths = {int(t.shape[1]) for t in fed if t.ndim == 2 and not t.is_floating_point()}
    for name, module, ids in seen:
        match = next((i for i, t in enumerate(fed) if not t.is_floating_point() and _same(ids, t)), None)
        if match is not None:
            if vocab[match] is None or module.num_embeddings < vocab[match][0]:
                vocab[match] = (int(module.num_embeddings), name)
            continue
        offset = _position_offset(ids) if ids.ndim and int(ids.shape[-1]) in lengths else None
        if offset is not None and offset < module.num_embeddings:
            held = int(module.num_embeddings) - offset
            if positions is None or held < positions[0]:
                positions = (held, name)
    if not any(vocab) and positions is None:
        return spec
    return dataclasses.replace(spec, vocab=tuple(vocab), positions=positions)

"""Tidy the per-channel scales smoothing leaves in an exported graph: one ``Mul`` per tensor, folded where free.

A smoothed group (``engine.quantization.smoothing``) exports as one ``Mul(x, 1/s)`` per layer: an
attention's query, key and value each multiply the same ``x`` by the same constant. Left so, int8
would quantize three identical tensors and ONNX Runtime's attention fusion would not see the three
projections share an input. ``merge_twin_scales`` keeps one ``Mul`` per (input, constant) pair.

``fold_scales_into_layernorm`` then removes a ``Mul`` by a per-channel constant whose input is a
``LayerNormalization`` output read by nothing else (pre-LN blocks): ``LN(x) * c`` is ``LN`` with its
scale and bias multiplied by ``c``. Where the LayerNorm output also feeds a residual (post-LN BERT)
the ``Mul`` stays: folding it would change the residual.

Both are exact in float32 up to the rounding of one product, and work on an ``onnx.ModelProto`` in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import load_proto, same_form
from squeezelab.engine.runtime.graph_tidy import drop_unused_initializers

__all__ = ["merge_twin_scales", "fold_scales_into_layernorm", "tidy_scales"]


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Initializers by name, and the outputs of ``Identity`` nodes that pass one on.

    The TorchScript exporter stores equal tensors once and hands the copies out through ``Identity``
    nodes: the key and value scales of a smoothed attention arrive that way.
    """
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _scale_input(node: Any, constants: dict[str, np.ndarray]) -> tuple[str, str] | None:
    """``(activation, constant)`` input names of a ``Mul`` by a 1-D float constant, else None."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for a, c in ((0, 1), (1, 0)):
        value = constants.get(node.input[c])
        if value is not None and value.ndim == 1 and value.dtype == np.float32 and node.input[a] not in constants:
            return node.input[a], node.input[c]
    return None


def _rename_input(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _drop_unused_scales(graph: Any) -> None:
    """Remove the initializers, and the ``Identity`` copies of them, that nothing reads any more."""
    initializers = {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    while True:  # an Identity copy read by nothing goes first, then what it copied can go
        used = {name for node in graph.node for name in node.input} | outputs
        idle = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in used]
        if not idle:
            break
        for node in idle:
            graph.node.remove(node)
    drop_unused_initializers(graph)


def merge_twin_scales(model: Any) -> int:
    """Keep one ``Mul`` per input tensor and equal 1-D constant; returns how many were removed."""
    graph = model.graph
    constants = _constants(graph)
    outputs = {o.name for o in graph.output}
    first: dict[tuple[str, bytes, tuple[int, ...]], Any] = {}
    removed = []
    for node in graph.node:
        pair = _scale_input(node, constants)
        if pair is None or node.output[0] in outputs:  # a graph output keeps its name and node
            continue
        value = constants[pair[1]]
        key = (pair[0], value.tobytes(), value.shape)
        if key in first:
            _rename_input(graph, node.output[0], first[key].output[0])
            removed.append(node)
        else:
            first[key] = node
    for node in removed:
        graph.node.remove(node)
    _drop_unused_scales(graph)
    return len(removed)


def fold_scales_into_layernorm(model: Any) -> int:
    """Fold ``Mul(LN(x), c)`` into the LayerNorm where the LayerNorm's output goes nowhere else."""
    from onnx import numpy_helper

    graph = model.graph
    constants = _constants(graph)
    initializers = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    folded = []
    for node in list(graph.node):
        pair = _scale_input(node, constants)
        ln = producers.get(pair[0]) if pair else None
        if ln is None or ln.op_type != "LayerNormalization" or {pair[0], node.output[0]} & outputs or len(consumers[pair[0]]) != 1:
            continue
        if len(ln.input) < 3 or ln.input[1] not in initializers or ln.input[2] not in initializers:
            continue  # a scale handed out through an Identity is shared with another LayerNorm: left alone
        c = constants[pair[1]]
        gamma, beta = constants[ln.input[1]], constants[ln.input[2]]
        if gamma.shape != c.shape or beta.shape != c.shape or len(consumers[ln.input[1]]) != 1 or len(consumers[ln.input[2]]) != 1:
            continue
        for name, value in ((ln.input[1], gamma * c), (ln.input[2], beta * c)):
            init = next(i for i in graph.initializer if i.name == name)
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
        _rename_input(graph, node.output[0], ln.output[0])
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    _drop_unused_scales(graph)
    return len(folded)


def tidy_scales(onnx_bytes: bytes) -> tuple[bytes, dict[str, int]]:
    """Both passes on a serialized model (or an ``OnnxFile``: a new one); the new model and how many ``Mul``
    nodes each removed."""
    model = load_proto(onnx_bytes)
    merged = merge_twin_scales(model)
    folded = fold_scales_into_layernorm(model)
    return same_form(onnx_bytes, model), {"scale_muls_merged": merged, "scale_muls_folded_into_layernorm": folded}

"""What static int8 quantizes in a graph, decided by what the graph is; and the check of what it wrote.

ONNX Runtime's ``quantize_static`` places Quantize/Dequantize pairs on the inputs *and outputs* of
every op it knows. That suits a CNN (each convolution's output feeds the next one's int8 input),
and it breaks a transformer three ways (all-MiniLM-L6-v2, VNNI, cosine to fp32):

- the additive attention mask (``finfo(float32).min`` or -10000 where a token is padding) enters the
  calibrated ranges of the mask's Add, Where and the Softmax input: non-finite scales were written
  (min-max cosine 0.45), and the histogram calibrators (percentile, entropy) cannot bin -3.4e38 at all;
- a Linear's MatMul *output*, before its bias and residual, gets one uint8 range stretched by the
  [CLS] token's outliers (the FFN output projections alone: 0.945);
- LayerNorm, Softmax and GELU run in float anyway in ONNX Runtime's CPU kernels: quantizing around
  them only adds Quantize/Dequantize work.

So for a transformer graph (``looks_like_transformer``) static int8 quantizes the *inputs* of the
weight MatMul/Gemm (Linear layers: int8 weights, uint8 activations, the product in int8 with a
float result) and of the attention's two activation MatMuls (Q·Kᵀ and probabilities·V, whose inputs
are bounded: on MiniLM 0.0004 cosine for 1.1x speed), nothing's outputs, and keeps every node on
the mask's path float (``mask_path``). The embedding tables are stored in int8 afterwards (their
``Gather``s, as dynamic int8 does: a BERT's word embeddings are half its bytes). Min-max 0.989,
percentile 0.989, entropy 0.989 before smoothing; 0.998 with it.

``check_quantization_parameters`` refuses a written model whose scales or zero points are not finite
(or scales not positive), naming the tensor: such a model computes NaN and must never be returned as
executable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import weights_folder
from squeezelab.engine.core.errors import QuantizationError

__all__ = ["StaticPlan", "static_plan", "mask_path", "embedding_gathers", "check_quantization_parameters"]

_INTEGER_TYPES = {6, 7, 2, 3, 9, 12, 13}  # int32, int64, uint8, int8, bool, uint32, uint64 (TensorProto)
# Ops a transformer's mask passes through until it is added to (or selects from) the attention scores.
_MASK_BOUNDARY_FOLLOWERS = {"Softmax", "Add", "Sub", "Mul", "Div", "Where", "Cast", "Max", "Min"}


@dataclass(frozen=True)
class StaticPlan:
    """The arguments for ``quantize_static`` that a graph's kind calls for, and why."""

    kind: str  # "transformer" or "default"
    op_types: tuple[str, ...] | None  # None: every op ONNX Runtime quantizes
    nodes_to_exclude: tuple[str, ...] = ()
    extra_options: dict[str, Any] = field(default_factory=dict)
    embedding_gathers: tuple[str, ...] = ()  # stored as int8 tables after the static pass
    why: str = ""


def _graph(onnx_bytes: bytes) -> Any:
    import onnx

    return onnx.load_from_string(onnx_bytes).graph


def _constants(graph: Any) -> set[str]:
    names = {init.name for init in graph.initializer}
    names |= {out for node in graph.node if node.op_type in ("Constant", "ConstantOfShape") for out in node.output}
    return names


def mask_path(graph: Any) -> list[str]:
    """The nodes that carry an attention mask's values: kept out of every calibrated range.

    Tensors computed from integer graph inputs, shapes and constants only (the mask's Cast, Sub, Mul by
    the large negative number, Where, its Expand/Unsqueeze; not an embedding ``Gather``, which turns ids
    into activations) are mask tensors; so is the output of the first node that combines one with an
    activation (the scores' Add or Where), and of the elementwise ops and Softmax after it, up to the
    Softmax, whose probabilities are bounded again.
    """
    constants = _constants(graph)
    derived = {i.name for i in graph.input if i.type.tensor_type.elem_type in _INTEGER_TYPES}
    weights = {init.name for init in graph.initializer}
    path: list[str] = []
    changed = True
    while changed:  # to a fixed point: exported graphs are not always in topological order
        changed = False
        for node in graph.node:
            if node.name in path:
                continue
            variable = [name for name in node.input if name and name not in constants]
            if not variable and not set(node.output) <= constants:  # computed from constants: a constant
                constants.update(node.output)
                changed = True
                continue
            lookup = node.op_type == "Gather" and any(name in weights for name in node.input)  # ids -> activations
            shape = node.op_type in ("Shape", "Size")  # sizes, not values: the mask is broadcast with them
            if shape or variable and not lookup and all(name in derived for name in variable):
                derived.update(node.output)
                path.append(node.name)
                changed = True
    return path + _mask_meets_scores(graph, derived, set(path))


def _mask_meets_scores(graph: Any, carriers: set[str], path: set[str]) -> list[str]:
    """The nodes where mask tensors meet activations (the scores' Add or Where), and after them up to a Softmax."""
    carriers, found = set(carriers), []
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.name in path or node.op_type not in _MASK_BOUNDARY_FOLLOWERS:
                continue
            if any(name in carriers for name in node.input):
                path.add(node.name)
                found.append(node.name)
                changed = True
                if node.op_type != "Softmax":
                    carriers.update(node.output)
    return found


def embedding_gathers(graph: Any) -> list[str]:
    """``Gather`` nodes that look rows up in a 2-D weight table (embeddings)."""
    tables = {init.name for init in graph.initializer if len(init.dims) == 2}
    return [node.name for node in graph.node if node.op_type == "Gather" and node.input and node.input[0] in tables]


def static_plan(onnx_bytes: bytes, op_types: tuple[str, ...] | None, *, transformer: bool) -> StaticPlan:
    """The plan for ``onnx_bytes``; ``op_types`` given in the recipe are kept, the mask kept out regardless."""
    graph = _graph(onnx_bytes)
    mask = mask_path(graph)
    if not transformer:
        return StaticPlan(kind="default", op_types=op_types, nodes_to_exclude=tuple(mask),
                          why="every op ONNX Runtime quantizes, inputs and outputs (QDQ), as CNNs want"
                          + (f"; {len(mask)} nodes on an integer input's path kept float" if mask else ""))
    if op_types is not None:
        return StaticPlan(kind="transformer", op_types=op_types, nodes_to_exclude=tuple(mask),
                          why=f"the recipe's op types; the attention mask's {len(mask)} nodes kept float")
    return StaticPlan(
        kind="transformer",
        op_types=("MatMul", "Gemm"),
        nodes_to_exclude=tuple(mask),
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
        embedding_gathers=tuple(embedding_gathers(graph)),
        why=(
            "a transformer: the inputs of its Linear layers' and attention's MatMuls in int8, no op's output "
            f"(a MatMul's output before its bias carries the [CLS] outliers), the attention mask's {len(mask)} "
            "nodes, LayerNorm, Softmax and GELU float, embedding tables in int8"
        ),
    )


def check_quantization_parameters(onnx_bytes: bytes, label: str) -> None:
    """``QuantizationError`` naming the first scale or zero point that is not finite (or a scale <= 0)."""
    from onnx import numpy_helper

    graph = _graph(onnx_bytes)
    values = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") or len(node.input) < 2:
            continue
        for role, name in zip(("scale", "zero point"), node.input[1:3]):
            if name not in values:
                continue
            array = numpy_helper.to_array(values[name], weights_folder(onnx_bytes)).astype(np.float64)  # may be external
            bad = ~np.isfinite(array) | ((array <= 0) if role == "scale" else False)
            if np.any(bad):
                raise QuantizationError(
                    f"{label} wrote {role} {name!r} = {array.reshape(-1)[np.argmax(bad.reshape(-1))]!r} for node "
                    f"{node.name!r}: the model would compute NaN or Inf there, so it is not returned. The calibrated "
                    "range of that tensor was not finite (an additive mask or a NaN in the calibration data reaches "
                    "it); keep that node float with LayerSetting(name=..., bits=32), or check the calibration data."
                )

"""``WeightOnly(method="gptq")`` on a graph: calibrate, run GPTQ per weight, write ``MatMulNBits`` nodes.

Works on the exported (or given) fp32 ONNX graph, so a PyTorch model and an ONNX file take the same path:
the chosen ``MatMul`` nodes' inputs are read on the calibration feeds (``hessians.collect_hessians``),
each weight gets GPTQ's codes, scales and zero points (``gptq.gptq_blocks``), and each node becomes a
``MatMulNBits`` written here (``nbits.matmul_nbits_node``: ONNX Runtime's own layout, checked byte for
byte against its quantizer in the tests). A weight that several nodes read is quantized once, on the sum
of their inputs' moments: one stored weight, fitted to every use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from squeezelab.engine.runtime.gptq import GptqSettings, gptq_blocks
from squeezelab.engine.runtime.graph_tidy import drop_unused_initializers
from squeezelab.engine.runtime.hessians import collect_hessians
from squeezelab.engine.runtime.nbits import matmul_nbits_node

__all__ = ["gptq_matmuls", "gptq_eligible"]


def _weights(graph: Any) -> dict[str, Any]:
    import onnx

    return {i.name: i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}


def gptq_eligible(graph: Any, chosen: Sequence[str]) -> list[Any]:
    """The nodes among ``chosen`` (``MatMul`` names) that GPTQ takes: a 2-D float32 weight as input 1.

    The others (float16 weights, weights with leading unit dimensions) are left to round to nearest.
    """
    weights, names = _weights(graph), set(chosen)
    return [n for n in graph.node if n.name in names and n.op_type == "MatMul" and n.input[1] in weights]


def gptq_matmuls(
    model: Any, nodes: Sequence[Any], feeds: Sequence[dict[str, np.ndarray]], *, bits: int, block_size: int,
    symmetric: bool, accuracy_level: int, settings: GptqSettings = GptqSettings(),
) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with ``nodes`` (from ``gptq_eligible``) replaced by GPTQ-quantized ``MatMulNBits``.

    Returns:
        The new model and what was done: node count, calibration rows, and the padding-mask input whose
        padding rows were left out of the moments (``None``: every row counted).
    """
    import onnx
    from onnx import numpy_helper

    moments, mask = collect_hessians(model, [n.input[0] for n in nodes], feeds)
    by_weight: dict[str, list[Any]] = {}
    for node in nodes:
        by_weight.setdefault(node.input[1], []).append(node)
    weights = _weights(model.graph)
    replaced: dict[str, Any] = {}
    initializers: list[Any] = []
    for weight_name, users in by_weight.items():
        hessian = sum(moments[n.input[0]].xtx for n in users)
        w = numpy_helper.to_array(weights[weight_name])
        q = gptq_blocks(w, hessian, bits=bits, block_size=block_size, symmetric=symmetric, settings=settings)
        for i, node in enumerate(users):
            replaced[node.name], inits = matmul_nbits_node(node, weight_name, q, accuracy_level)
            initializers += inits if i == 0 else []  # the users share one stored weight
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_nodes = [replaced.get(n.name, n) for n in out.graph.node]
    out.graph.ClearField("node")
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(initializers)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    drop_unused_initializers(out.graph)  # the float weights now held by MatMulNBits
    rows = max((m.rows for m in moments.values()), default=0)
    return out, {"gptq_matmuls": len(nodes), "gptq_calibration_rows": rows, "gptq_padding_mask": mask}



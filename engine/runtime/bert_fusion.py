"""ONNX Runtime's BERT fusion, with its shape inference run on the graph without the weights' values.

``onnxruntime.transformers.optimizer.optimize_model(model, "bert", opt_level=0)`` is
``optimize_by_fusion``: ``BertOnnxModel(model).optimize()``. Its fusions ask for symbolic shape
inference six times on BERT (attention, embeddings, skip LayerNorm, useless Cast and Reshape
removal), and each time ``SymbolicShapeInference`` starts by copying the whole model, weights
included: on BERT-base ~8 s of copying and a model-sized copy held meanwhile, for shapes that
never depend on a weight matrix's values.

``optimize_bert`` runs the same steps (``FusionOptions("bert")``, ``optimize``, ``topological_sort``,
the producer's name and version) with ``BertOnnxModel`` subclassed: its ``infer_runtime_shape``
gives the shape inference a view of the current graph where each float weight of rank >= 2 and
at least ``_LARGE`` values is a graph input of the same type and shape instead of an initializer.
Shape inference reads only the shapes of such tensors (a value of rank > 1 is ignored by its
symbolic arithmetic), so the shapes it answers, and the fused graph, are the same (tested on the
export of a BERT, byte for byte).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["optimize_bert", "weightless_view"]

_LARGE = 4096  # values: below this an initializer is kept whole (shape constants, biases, LayerNorm scales)


def weightless_view(model: Any) -> Any:
    """A ``ModelProto`` of ``model``'s graph where large float weights (rank >= 2) are graph inputs of
    the same type and shape: what symbolic shape inference needs, without copying the weights."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    view = onnx.ModelProto()
    view.ir_version = model.ir_version
    view.opset_import.extend(model.opset_import)
    view.functions.extend(model.functions)
    graph, source = view.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    listed = {value.name for value in source.input}
    for tensor in source.initializer:
        size = 1
        for d in tensor.dims:
            size *= d
        if tensor.data_type in floats and len(tensor.dims) >= 2 and size >= _LARGE:
            if tensor.name not in listed:
                graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            graph.initializer.append(tensor)
    return view


def _bert_class() -> type:
    """``BertOnnxModel`` whose shape inference reads ``weightless_view`` (built on first use: onnxruntime is heavy)."""
    global _BERT
    if _BERT is not None:
        return _BERT
    from onnxruntime.transformers.onnx_model_bert import BertOnnxModel
    from onnxruntime.transformers.shape_infer_helper import SymbolicShapeInferenceHelper

    class ShapesWithoutWeights(BertOnnxModel):
        """ONNX Runtime's BERT optimizer; its shape inference never copies the weights."""

        def infer_runtime_shape(self, dynamic_axis_mapping: dict | None = None, update: bool = False) -> Any:
            # As OnnxModel.infer_runtime_shape, on weightless_view(self.model) instead of self.model.
            if not self.enable_shape_infer:
                return None
            if self.shape_infer_helper is None or update:
                self.shape_infer_helper = SymbolicShapeInferenceHelper(weightless_view(self.model))
            try:
                if self.shape_infer_helper.infer(dynamic_axis_mapping or {}):
                    return self.shape_infer_helper
            except Exception:  # noqa: BLE001 - as ONNX Runtime: shape inference off for the rest of the run
                self.enable_shape_infer = False
                print("failed in shape inference", sys.exc_info()[0])  # its message, caught by quiet_onnxruntime_tools
            return None

    _BERT = ShapesWithoutWeights
    return _BERT


_BERT: type | None = None


def optimize_bert(model: Any, num_heads: int, hidden_size: int) -> Any:
    """``optimize_model(model, model_type="bert", num_heads=..., hidden_size=..., opt_level=0)``: the
    optimizer object (``.model`` is the fused ``ModelProto``, changed in place from ``model``)."""
    import onnxruntime
    from onnxruntime.transformers.fusion_options import FusionOptions

    optimizer = _bert_class()(model, num_heads, hidden_size)
    optimizer.optimize(FusionOptions("bert"))
    optimizer.topological_sort()
    optimizer.model.producer_name = "onnxruntime.transformers"
    optimizer.model.producer_version = onnxruntime.__version__
    return optimizer

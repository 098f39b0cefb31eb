"""Static int8 (QDQ) by ONNX Runtime's ``quantize_static``, with the plan the graph calls for.

``convert_static`` asks ``static_plan`` what to quantize (a transformer's Linear and attention
MatMuls' inputs, the mask kept out; a CNN everything), runs ``quantize_static`` with the recipe's
calibration on the given batches, stores a transformer's embedding tables in int8, and refuses a
written model with a non-finite scale (``check_quantization_parameters``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab.engine.core.errors import CalibrationError
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Entropy, Int8Static, MinMax, Percentile
from squeezelab.engine.runtime.int8_graph import float_neighbours, kept_float, looks_like_transformer
from squeezelab.engine.runtime.ort_tools import (
    BatchReader,
    preprocessed,
    quiet_onnxruntime_tools,
    reduce_range_why,
    resolve_reduce_range,
)
from squeezelab.engine.runtime.quantize_memo import calibration_cache_path, remembered_preprocess
from squeezelab.engine.runtime.static_plan import check_quantization_parameters, static_plan

__all__ = ["quantize_static_onnx", "convert_static"]


def quantize_static_onnx(
    onnx_bytes: bytes,
    runtime: Int8Static,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    extra_options: dict[str, Any] | None = None,
) -> bytes:
    """Static int8 in QDQ format with activation ranges calibrated on ``feeds``; ``nodes_to_exclude`` stay float.

    ``op_types`` (default: the runtime's, or every op ONNX Runtime quantizes) and ``extra_options`` come
    from the graph's ``static_plan``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise CalibrationError(
            "Int8Static needs calibration data and none was given; pass calibration_data= "
            "(a few hundred representative inputs), or use runtime=Int8Dynamic()."
        )
    calibration = runtime.calibration
    method = {
        MinMax: CalibrationMethod.MinMax,
        Percentile: CalibrationMethod.Percentile,
        Entropy: CalibrationMethod.Entropy,
    }[type(calibration)]
    extra: dict[str, object] = dict(extra_options or {})
    if isinstance(calibration, Percentile):
        extra["CalibPercentile"] = float(calibration.percentile)
    act = QuantType.QInt8 if runtime.activations == "int8" else QuantType.QUInt8
    op_types = list(op_types) if op_types else (list(runtime.op_types) if runtime.op_types else None)
    # Inside a search (remembered_quantization) the export is pre-processed and calibrated once.
    cache = calibration_cache_path(onnx_bytes, feeds, [method.name, sorted(extra.items()), op_types])
    with tempfile.TemporaryDirectory() as tmp, quiet_onnxruntime_tools():
        out = Path(tmp) / "int8.onnx"
        # The calibrator writes an augmented copy of the model to a temp dir of its own choosing.
        quantize_static(
            remembered_preprocess(onnx_bytes, lambda b: preprocessed(b, Path(tmp))),
            out,
            BatchReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=runtime.per_channel,
            reduce_range=resolve_reduce_range(runtime),
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options=extra,
            **({"calibration_cache_path": cache} if cache is not None else {}),
        )
        return out.read_bytes()


def convert_static(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    rt = recipe.runtime
    plan = static_plan(b, rt.op_types, transformer=looks_like_transformer(b))
    kept = kept_float(b, recipe)
    excluded = [node for nodes in kept.values() for node in nodes]
    between = float_neighbours(b, excluded) if excluded else []  # activations between float layers stay float
    out = quantize_static_onnx(
        b, rt, feeds or [], nodes_to_exclude=list(dict.fromkeys([*excluded, *between, *plan.nodes_to_exclude])),
        op_types=plan.op_types, extra_options=plan.extra_options,
    )
    tables = [node for node in plan.embedding_gathers if node not in excluded]
    if tables:
        out = _int8_tables(out, rt, tables)
    check_quantization_parameters(out, recipe.label)  # a NaN scale is refused, never returned as executable
    act_why = (
        "uint8 activations x int8 weights (U8S8): ONNX Runtime's fast x86 CPU path"
        if rt.activations == "uint8"
        else "int8 activations (S8S8), as asked: what GPU / TensorRT int8 wants; slow on x86 CPUs"
    )
    choices = {
        "graph": plan.kind,
        "op_types": list(plan.op_types) if plan.op_types else "all ONNX Runtime can quantize",
        "outputs_quantized": "OpTypesToExcludeOutputQuantization" not in plan.extra_options,
        "mask_nodes_float": len(plan.nodes_to_exclude),
        "embedding_tables_int8": len(tables),
        "per_channel": rt.per_channel,
        "activations": rt.activations,
        "reduce_range": resolve_reduce_range(rt),
        "fusion": False,
        "layers_float": sorted(kept),
        "nodes_float_between": len(between),
        "why": {
            "op_types": plan.why,
            "activations": act_why,
            "nodes_float_between": "weightless nodes (activations, padding, adds) that only connect float layers "
            "stay float, so no Quantize/Dequantize pair sits between float layers",
            "reduce_range": reduce_range_why(rt),
            "fusion": "static QDQ: ONNX Runtime fuses QDQ groups into QLinearConv / QLinearMatMul when the session loads",
        },
    }
    return out, choices


def _int8_tables(onnx_bytes: bytes, runtime: Int8Static, gathers: Sequence[str]) -> bytes:
    """The embedding tables of ``gathers`` stored in int8 (a ``Gather`` of int8 rows, then one dequantize), as
    dynamic int8 stores them: nothing is calibrated, every other node is left as it is."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, quiet_onnxruntime_tools():
        out = Path(tmp) / "tables.onnx"
        quantize_dynamic(
            onnx.load_from_string(onnx_bytes), out, op_types_to_quantize=["Gather"], nodes_to_quantize=list(gathers),
            per_channel=False, reduce_range=False, weight_type=QuantType.QInt8,
        )
        return out.read_bytes()

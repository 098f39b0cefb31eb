"""Executable 4- and 8-bit weight-only models: ONNX Runtime's ``MatMulNBits`` quantizer, checked.

ONNX Runtime's ``MatMulNBitsQuantizer`` stores the weight of each ``MatMul``
whose weight is a constant in blocks of ``block_size`` values along the input
dimension, each block with its own scale (and zero point): the ``MatMulNBits``
contrib op, a real CPU kernel. It takes ``MatMul`` only, while PyTorch exports
a 2-D ``nn.Linear`` as ``Gemm``: ``gemm_to_matmul`` rewrites those first
(``MatMul`` with the transposed weight, then ``Add`` for the bias), a rewrite
the tests check against the original graph's output. Embedding tables
(``Gather`` of a weight) become ``GatherBlockQuantized`` at 4 bits when asked.

squeezelab chooses the nodes (every other node is excluded by name, so the
quantizer never meets a ``Gather`` of shapes or a ``MatMul`` of two
activations), runs the quantizer, and verifies that the graph really holds
``MatMulNBits`` nodes before the result may call itself executable. With
``method="gptq"`` (or ``"auto"`` given calibration feeds) squeezelab writes the
``MatMulNBits`` nodes itself from GPTQ's codes (``engine.runtime.gptq_graph``);
whatever GPTQ does not take (float16 weights) and the tables still go through
ONNX Runtime's round to nearest. What ``None``/``"auto"`` left open is decided
here (``resolve_weight_only``) and recorded with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import initializer_bytes, load_proto, same_form
from squeezelab.engine.runtime.size_limit import current_limit
from squeezelab.engine.core.cpu import default_weight_only_compute
from squeezelab.engine.core.errors import CalibrationError, ConfigError, ExportError
from squeezelab.engine.core.runtimes import WEIGHT_ONLY_COMPUTE, WeightOnly
from squeezelab.engine.runtime.gptq import GptqSettings
from squeezelab.engine.runtime.gptq_graph import gptq_eligible, gptq_matmuls
from squeezelab.engine.runtime.graph_tidy import drop_unused_initializers
from squeezelab.engine.runtime.ort_tools import quiet_onnxruntime_tools

__all__ = [
    "gemm_to_matmul", "quantize_weight_only_onnx", "nbits_weight_elements", "weight_only_choices", "resolve_weight_only",
    "calibrates", "check_weight_only_calibration",
]

log = logging.getLogger(__name__)

# Ops whose packed weight input is a uint8 blob, not one element per value: sizes come from attributes.
_NBITS_OPS = ("MatMulNBits", "GatherBlockQuantized")


_QUANTIZER_MODULE = "onnxruntime.quantization.matmul_nbits_quantizer"


def _quantizer_module() -> Any:
    """ONNX Runtime's quantizer module, imported without its process-wide side effect.

    On import it calls ``logging.basicConfig(level=INFO)``, which gives an unconfigured root logger a
    stderr handler at INFO for the rest of the process. A temporary handler on the root makes that call
    a no-op; it is removed right after.
    """
    if _QUANTIZER_MODULE in sys.modules:
        return sys.modules[_QUANTIZER_MODULE]
    root, guard = logging.getLogger(), logging.NullHandler()
    root.addHandler(guard)
    try:
        return importlib.import_module(_QUANTIZER_MODULE)
    finally:
        root.removeHandler(guard)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Its INFO line per node and its opset-21 warning (expected: int4 tables need opset 21) go to our debug log."""

    quantizer_log = logging.getLogger(_QUANTIZER_MODULE)
    level = quantizer_log.level
    quantizer_log.setLevel(logging.ERROR)
    try:
        # Its numpy divides by a zero scale (an all-zero block, e.g. a padding row) before masking the result
        # with np.where, and HQQ wraps a read-only array: warnings about its internals, not the caller's model.
        with quiet_onnxruntime_tools(), warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            yield
    finally:
        quantizer_log.setLevel(level)


def _float_initializers(graph: Any) -> dict[str, Any]:
    """Initializers of the graph holding float32 / float16 values, by name."""
    import onnx

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    return {init.name: init for init in graph.initializer if init.data_type in float_types}


def _attribute(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _rewritable_gemm(node: Any, weights: dict[str, Any]) -> bool:
    """A ``Gemm`` that is ``A @ W.T + bias`` (or ``A @ W + bias``) with a constant 2-D ``W``: a Linear layer."""
    if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in weights:
        return False
    if len(weights[node.input[1]].dims) != 2 or _attribute(node, "transA", 0) != 0:
        return False
    if _attribute(node, "alpha", 1.0) != 1.0 or _attribute(node, "beta", 1.0) != 1.0:
        return False
    return len(node.input) < 3 or not node.input[2] or node.input[2] in weights


def gemm_to_matmul(model: Any) -> tuple[Any, int]:
    """A copy of ``model`` with every Linear-like ``Gemm`` rewritten as ``MatMul`` (+ ``Add`` for the bias).

    ``Gemm(A, W, bias, transB=1)`` computes ``A @ W.T + bias``; the rewrite stores ``W.T`` (K, N) as a new
    initializer, so ``MatMulNBits`` can take it. A ``Gemm`` with ``transA``, ``alpha``/``beta`` other than 1,
    or a weight that is not a constant stays as it is.

    Returns:
        The rewritten copy (the argument is not changed) and how many ``Gemm`` nodes were rewritten.
    """
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = _float_initializers(graph)
    nodes, added, rewritten = [], {}, 0
    for node in graph.node:
        if not _rewritable_gemm(node, weights):
            nodes.append(node)
            continue
        weight_name = node.input[1]
        name = node.name or f"gemm{rewritten}"
        if _attribute(node, "transB", 0):
            key = f"{weight_name}_transposed"
            if key not in added:  # (N, K) -> (K, N): MatMul's right operand
                array = numpy_helper.to_array(weights[weight_name])
                added[key] = numpy_helper.from_array(np.ascontiguousarray(array.T), key)
            weight_name = key
        has_bias = len(node.input) >= 3 and bool(node.input[2])
        product = f"{name}_matmul_out" if has_bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{name}_MatMul"))
        if has_bias:
            nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}_Add"))
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.initializer.extend(added.values())
    drop_unused_initializers(graph)  # the untransposed Linear weights
    return out, rewritten


def _name_nodes(graph: Any) -> None:
    """Give every unnamed node a unique name: the quantizer includes and excludes nodes by name."""
    taken = {node.name for node in graph.node if node.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _eligible(graph: Any, op_type: str) -> list[str]:
    """Names of ``op_type`` nodes whose weight is a constant float 2-D table (``MatMul``: input 1, ``Gather``: input 0)."""
    weights = _float_initializers(graph)
    slot = 1 if op_type == "MatMul" else 0
    names = []
    for node in graph.node:
        if node.op_type != op_type or len(node.input) <= slot or node.input[slot] not in weights:
            continue
        dims = list(weights[node.input[slot]].dims)
        if op_type == "Gather" and (len(dims) != 2 or _attribute(node, "axis", 0) != 0):
            continue
        if op_type == "MatMul" and (len(dims) < 2 or any(d != 1 for d in dims[:-2])):
            continue
        names.append(node.name)
    return names


def _algorithm_config(runtime: WeightOnly) -> Any:
    """ONNX Runtime's config for ``runtime.method`` (resolved: ``"rtn"`` or ``"hqq"``) over ``MatMul`` nodes."""
    ort = _quantizer_module()
    if runtime.method == "hqq":
        return ort.HQQWeightOnlyQuantConfig(block_size=runtime.block_size, bits=runtime.bits, op_types_to_quantize=("MatMul",))
    return ort.DefaultWeightOnlyQuantConfig(
        block_size=runtime.block_size, is_symmetric=runtime.symmetric, bits=runtime.bits, op_types_to_quantize=("MatMul",),
        accuracy_level=WEIGHT_ONLY_COMPUTE[runtime.compute] or None,  # 0: the attribute left out (float compute)
    )


def calibrates(runtime: Any) -> bool:
    """True when ``runtime`` is a ``WeightOnly`` whose result depends on calibration data (GPTQ, or ``"auto"``)."""
    return isinstance(runtime, WeightOnly) and runtime.reads_calibration


def check_weight_only_calibration(runtime: Any, given: bool) -> None:
    """``CalibrationError`` for ``WeightOnly(method="gptq")`` without calibration data; checked before any export."""
    if isinstance(runtime, WeightOnly) and runtime.method == "gptq" and not given:
        raise CalibrationError(
            f"WeightOnly(method='gptq') ({runtime.label}) fits each layer's weights to calibration inputs, and "
            "calibration_data=None; pass "
            "calibration_data= (a hundred or more representative inputs kept apart from the evaluation data), or use "
            "method='auto' (GPTQ when data is given, round to nearest without) or method='rtn'."
        )


def resolve_weight_only(runtime: WeightOnly, calibration_samples: int, has_tables: bool) -> tuple[WeightOnly, dict[str, str]]:
    """``runtime`` with what it left open decided, and the reason for each decision.

    ``method="auto"``: GPTQ when there are calibration samples, round to nearest without. ``compute=None``:
    this CPU's choice (``cpu.default_weight_only_compute``; float for HQQ, which has no int8 kernel).
    ``embeddings=None``: 4 bits when the graph has embedding tables, float32 (nothing to store) without.
    """
    reasons = {"method": "asked for", "compute": "asked for", "embeddings": "asked for"}
    method = runtime.method
    if method == "auto":
        method = "gptq" if calibration_samples else "rtn"
        reasons["method"] = (
            f"gptq: calibrated on {calibration_samples} samples" if calibration_samples
            else "rtn: no calibration data given (pass calibration_data= for GPTQ)"
        )
    compute = runtime.compute
    if compute is None:
        compute, reasons["compute"] = ("float", "hqq has no int8 kernel") if method == "hqq" else default_weight_only_compute()
    embeddings = runtime.embeddings
    if embeddings is None:
        embeddings = 4 if has_tables else 32
        reasons["embeddings"] = "the graph has embedding tables" if has_tables else "the graph has no embedding table"
    return dataclasses.replace(runtime, method=method, compute=compute, embeddings=embeddings), reasons


def _embedding_config(runtime: WeightOnly) -> Any:
    """Round to nearest, 4 bits, blocks along the embedding dimension (``GatherBlockQuantized``)."""
    return _quantizer_module().DefaultWeightOnlyQuantConfig(
        block_size=runtime.block_size,
        is_symmetric=runtime.symmetric,
        bits=4,
        op_types_to_quantize=("Gather",),
        quant_axes=(("Gather", 1),),
    )


def _run_quantizer(model: Any, config: Any, op_type: str, chosen: list[str]) -> Any:
    """ONNX Runtime's quantizer over ``chosen`` ``op_type`` nodes only (every other one excluded by name)."""
    keep = set(chosen)
    others = [node.name for node in model.graph.node if node.op_type == op_type and node.name not in keep]
    quantizer = _quantizer_module().MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=others)
    quantizer.process()
    return quantizer.model.model


def _refuse_nothing_eligible(model: Any, runtime: WeightOnly) -> None:
    ops = sorted({node.op_type for node in model.graph.node})
    raise ConfigError(
        f"{runtime.label} would quantize nothing: ONNX Runtime's MatMulNBits takes MatMul (and Linear layers "
        f"exported as Gemm) with a constant weight, and this graph has none (ops present: {', '.join(ops)}). "
        "Convolutions have no weight-only kernel: use runtime=Int8Static() for a CNN, or Simulated() to study 4-bit weights."
    )


def quantize_weight_only_onnx(
    onnx_bytes: bytes, runtime: WeightOnly, feeds: Sequence[dict[str, np.ndarray]] | None = None
) -> tuple[bytes, dict[str, Any]]:
    """The fp32 graph with its Linear/MatMul weights (and embedding tables, as decided) stored at ``runtime.bits``.

    Args:
        feeds: calibration batches (``{input name: array}``); GPTQ fits the weights to them.

    Returns:
        The quantized graph and its details: ``weight_only_choices`` (every decision and its reason) and
        what was rewritten and quantized (node counts).

    Raises:
        ConfigError: the graph has no ``MatMul``/``Gemm`` with a constant weight (a CNN), or no embedding
            table while ``embeddings=4`` asks for one quantized.
        CalibrationError: ``method="gptq"`` and no calibration feeds.
        ExportError: no ``MatMulNBits`` node was written.
    """
    samples = sum(len(next(iter(f.values()))) for f in feeds) if feeds else 0
    check_weight_only_calibration(runtime, bool(samples))
    model, rewritten = gemm_to_matmul(load_proto(onnx_bytes))  # an OnnxFile's weights read from its path
    _name_nodes(model.graph)
    if not _eligible(model.graph, "MatMul"):
        _refuse_nothing_eligible(model, runtime)
    has_tables = bool(_eligible(model.graph, "Gather"))
    if runtime.embeddings == 4 and not has_tables:
        raise ConfigError(
            f"{runtime.label}: embeddings=4 asks for embedding tables in 4 bits, and the graph has none (no Gather "
            "of a constant 2-D weight). Leave embeddings=None (4 bits where there are tables)."
        )
    resolved, reasons = resolve_weight_only(runtime, samples, has_tables)
    if resolved.embeddings == 4:
        model = _at_opset_21(model)
        _name_nodes(model.graph)  # the converter may add nodes (e.g. the axes of a ReduceL2) without names
    matmuls = _eligible(model.graph, "MatMul")
    facts: dict[str, Any] = {}
    if resolved.method == "gptq":
        nodes = gptq_eligible(model.graph, matmuls)
        model, facts = gptq_matmuls(
            model, nodes, feeds or [], bits=resolved.bits, block_size=resolved.block_size, symmetric=resolved.symmetric,
            accuracy_level=WEIGHT_ONLY_COMPUTE[resolved.compute], settings=_GPTQ,
        )
        facts["gptq_calibration_samples"] = samples
        taken = {n.name for n in nodes}
        matmuls = [m for m in matmuls if m not in taken]  # left to round to nearest
    tables = _eligible(model.graph, "Gather") if resolved.embeddings == 4 else []
    with _quiet_quantizer():
        if matmuls:
            model = _run_quantizer(model, _algorithm_config(resolved), "MatMul", matmuls)
        if tables:
            model = _run_quantizer(model, _embedding_config(resolved), "Gather", tables)
    counts = _op_counts(model)
    if counts.get("MatMulNBits", 0) == 0:
        raise ExportError(f"ONNX Runtime's MatMulNBits quantizer wrote no MatMulNBits node for {runtime.label}.")
    eligible = len(matmuls) + facts.get("gptq_matmuls", 0)
    return same_form(onnx_bytes, model), {
        **weight_only_choices(resolved, reasons, facts),
        "gemm_rewritten_as_matmul": rewritten,
        "matmul_nbits_nodes": counts.get("MatMulNBits", 0),
        "matmul_left_float": eligible - counts.get("MatMulNBits", 0),
        "embedding_tables_quantized": counts.get("GatherBlockQuantized", 0),
    }


# GPTQ's settings: the paper's (1 % dampening, act-order, lazy batches of 128 rows).
_GPTQ = GptqSettings()


def _at_opset_21(model: Any) -> Any:
    """The graph converted to opset 21 (IR 10), which the int4 embedding tables need.

    ONNX Runtime's quantizer only relabels the opset when it writes int4 tables, which leaves ops whose
    signature changed since (``ReduceL2``'s ``axes`` became an input in opset 18) invalid; the ONNX
    version converter rewrites them. Done before quantizing: it knows no contrib op.
    """
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset >= 21:
        return model
    # The converter and the checker serialise the model: past 2 GB they see it without its large weights
    # (graph inputs of the same type and shape), which are put back after.
    weights = _large_weights_out(model) if initializer_bytes(model) > current_limit() else None
    try:
        converted = version_converter.convert_version(model, 21)
    except Exception as exc:  # the converter raises several types
        raise ExportError(
            f"embedding tables in 4 bits need opset 21 and the ONNX version converter could not take this graph "
            f"from opset {opset} to 21 ({exc}); export with opset=21, or drop embeddings= (tables stay float32)."
        ) from exc
    converted.ir_version = max(converted.ir_version, 10)
    onnx.checker.check_model(converted)
    if weights is not None:
        _weights_back(converted, weights)
    return converted


def _large_weights_out(model: Any) -> list[Any]:
    """Take the initializers of 1 kB and more out of ``model`` (in place), each listed as a graph input of its
    type and shape instead; returned in their order, for ``_weights_back``."""
    import onnx

    graph, kept, taken = model.graph, [], []
    for tensor in graph.initializer:
        (taken if len(tensor.raw_data) >= 1024 else kept).append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in taken)
    return taken


def _weights_back(model: Any, weights: list[Any]) -> None:
    """Undo ``_large_weights_out`` on the converted ``model``: the inputs dropped, the initializers appended."""
    names = {t.name for t in weights}
    inputs = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.extend(weights)


def _op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def weight_only_choices(
    resolved: WeightOnly, reasons: dict[str, str] | None = None, gptq: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the recipe chose (after ``resolve_weight_only``) and why, for the result's details and the saved JSON."""
    reasons = reasons or {}
    out = {
        "weight_only_bits": resolved.bits,
        "weight_only_block_size": resolved.block_size,
        "weight_only_method": resolved.method,
        "weight_only_method_reason": reasons.get("method", "asked for"),
        "weight_only_symmetric": resolved.symmetric,
        "weight_only_embeddings": resolved.embeddings,
        "weight_only_embeddings_reason": reasons.get("embeddings", "asked for"),
        "weight_only_compute": resolved.compute,
        "weight_only_compute_reason": reasons.get("compute", "asked for"),
    }
    if resolved.method == "gptq":
        out["weight_only_gptq"] = {**dataclasses.asdict(_GPTQ), **(gptq or {})}
    return out


def nbits_weight_elements(graph: Any) -> tuple[dict[int, int], set[str]]:
    """Weight elements stored by ``MatMulNBits``/``GatherBlockQuantized`` by bit width, and their initializers.

    Their packed weights are uint8 blobs (two 4-bit values a byte) and their scales and zero points are
    initializers too: counting those as weights would misstate what fraction of the model is quantized.
    """
    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    by_bits: dict[int, int] = {}
    auxiliary: set[str] = set()
    for node in graph.node:
        if node.op_type not in _NBITS_OPS:
            continue
        bits = int(_attribute(node, "bits", 4))
        if node.op_type == "MatMulNBits":
            elements = int(_attribute(node, "K", 0)) * int(_attribute(node, "N", 0))
            weight_inputs = list(node.input[1:])
        else:  # GatherBlockQuantized(data, indices, scales, zero_points): int4 table, one element each
            elements = sizes.get(node.input[0], 0)
            weight_inputs = [node.input[0], *node.input[2:]]
        by_bits[bits] = by_bits.get(bits, 0) + elements
        auxiliary |= {name for name in weight_inputs if name in sizes}
    return by_bits, auxiliary

"""Real int8 and float16 ONNX models, made by ONNX Runtime's own tooling.

``onnxruntime.quantization`` does the quantization (dynamic, and static QDQ
with MinMax / Percentile / Entropy calibration); float16 conversion uses
``onnxruntime.transformers.float16``; 4/8-bit weight-only models go through
``engine.weight_only`` (``MatMulNBits``). squeezelab only chooses the arguments,
feeds calibration batches, and keeps every temporary file in a temporary
directory.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab.engine.core.errors import ModelTooLargeError
from squeezelab.engine.core.quantizers import Float16
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Onnx, WeightOnly
from squeezelab.engine.runtime.dynamic_int8 import quantize_dynamic_file
from squeezelab.engine.runtime.external_data import (
    OnnxFile, is_file_model, load_proto, model_size, same_form, whole_if_it_fits, working_folder,
)
from squeezelab.engine.runtime.int8_graph import fused_graph, fused_graph_file, fused_holders, FUSED_OP_TYPES, fusion_remembered, kept_float, same_layer
from squeezelab.engine.runtime.ort_tools import (
    preprocessed_file,
    quiet_onnxruntime_tools,
    reduce_range_why,
    resolve_reduce_range,
)
from squeezelab.engine.runtime.size_limit import current_file_threshold, current_limit
from squeezelab.engine.runtime.stages import release_memory, stage
from squeezelab.engine.runtime.static_int8 import convert_static, quantize_static_onnx
from squeezelab.engine.runtime.static_plan import check_quantization_parameters
from squeezelab.engine.runtime.weight_only import nbits_weight_elements, quantize_weight_only_onnx

__all__ = ["check_convertible", "resolve_reduce_range", "quantize_dynamic_onnx", "quantize_static_onnx", "convert_float16_onnx", "convert_onnx",
           "graph_facts"]


def quantize_dynamic_onnx(
    onnx_bytes: bytes,
    runtime: Int8Dynamic,
    *,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    fused: bool = False,
) -> bytes:
    """Dynamic int8: signed int8 weights (the fast x86 path), activations quantized at run time.

    ``nodes_to_exclude`` stay float; ``op_types`` overrides the runtime's; ``fused`` says the
    graph went through ONNX Runtime's transformer optimizer (its contrib ops have no type
    inference in the quantizer, hence ``DefaultTensorType``; its shape pre-processing is skipped).
    """
    with tempfile.TemporaryDirectory() as tmp:
        source = _source_file(onnx_bytes, Path(tmp), fused)
        return _quantize_dynamic_file(source, runtime, nodes_to_exclude=nodes_to_exclude, op_types=op_types, fused=fused,
                                      out_dir=Path(tmp))


def _source_file(onnx_bytes: bytes, tmp: Path, fused: bool) -> Path:
    """The file the quantizer reads: the fused graph, or the export after ``quant_pre_process``.

    The fused graph is written as ONNX Runtime's ``quantize_dynamic`` writes a model it is given (weights
    as external data, tensors of 1 kB and more): the quantizer then reads it tensor by tensor, never the
    whole file's bytes beside the parsed model, and the quantized file is the same.
    """
    import onnx

    if not fused:
        with quiet_onnxruntime_tools():
            return preprocessed_file(onnx_bytes, tmp)
    if is_file_model(onnx_bytes):  # already a file with its weights beside it
        return onnx_bytes.path
    path = tmp / "fused.onnx"
    onnx.save_model(onnx.load_from_string(onnx_bytes), str(path), save_as_external_data=True)
    return path


def _quantize_dynamic_file(
    source: Path, runtime: Int8Dynamic, *, nodes_to_exclude: Sequence[str], op_types: Sequence[str] | None, fused: bool,
    out_dir: Path, large: bool = False,
) -> bytes:
    """``quantize_dynamic_onnx`` on a model already in a file (the int8 file is written to ``out_dir``).

    ``large``: the int8 model is still past the file threshold, and is an ``OnnxFile`` in a working folder of its
    own (weights as external data) instead of bytes.
    """
    import onnx

    keep = working_folder() if large else None
    out = Path(keep.name if keep is not None else out_dir) / "int8.onnx"
    with quiet_onnxruntime_tools():
        # ONNX Runtime's quantize_dynamic, per-channel weights quantized per tensor (the same file, faster)
        quantize_dynamic_file(
            source,
            out,
            op_types=list(op_types or runtime.quantized_op_types),
            per_channel=runtime.per_channel,
            reduce_range=resolve_reduce_range(runtime),
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {},
            external_data=large,
        )
    return OnnxFile(out, keep) if large else out.read_bytes()


def convert_float16_onnx(onnx_bytes: bytes) -> bytes:
    """Float16 weights and activations; inputs and outputs stay float32 for the caller."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with quiet_onnxruntime_tools():
        model = convert_float_to_float16(load_proto(onnx_bytes), keep_io_types=True)
    return same_form(onnx_bytes, model)


# --------------------------------------------------------------------------- dispatch

_Convert = Callable[[bytes, Recipe, Sequence[dict[str, np.ndarray]] | None], tuple[bytes, dict[str, Any]]]


def _fusion(onnx_bytes: bytes, runtime: Int8Dynamic, kept: dict[str, list[str]]) -> tuple[bytes | None, str]:
    """The fused graph (None: quantize the export) and why.

    ``kept`` (layer -> its nodes) is narrowed to the nodes left in the fused graph. A layer whose
    weights fusion merged into a fused op (an attention's query / key / value, the embedding
    tables) stays float by excluding that op, which needs every layer the op holds kept float;
    when only some of them are, fusion is skipped and the unfused graph keeps exactly those float.
    """
    import onnx

    fused, why = fused_graph(onnx_bytes, runtime)
    if fused is None or not kept:  # nothing kept float: no node to look for (the fused model is not parsed again)
        return fused, why
    present = {node.name for node in onnx.load_from_string(fused).graph.node}
    absorbed = sorted(layer for layer, nodes in kept.items() if not present.intersection(nodes))
    holders = _holders_of(absorbed, kept, onnx_bytes, fused) if absorbed else {}
    partial = sorted(layer for layer in absorbed if layer not in holders)
    if partial:  # their weights were merged into fused ops with layers that are not kept float
        return None, (
            f"skipped: layers kept float {partial} would be merged into fused attention / embedding ops; "
            "keep all the layers one op holds float together (an attention's query, key and value) to keep fusion"
        )
    for layer, nodes in kept.items():  # e.g. a bias Add now inside SkipLayerNormalization, which stays float anyway
        kept[layer] = [node for node in nodes if node in present] + ([holders[layer]] if layer in holders else [])
    return fused, why


def _fused_file(onnx_bytes: bytes, runtime: Int8Dynamic, kept: dict[str, list[str]], tmp: Path) -> tuple[Path | None, str]:
    """``_fusion``'s graph in a file for the quantizer (None: quantize the export) and why.

    With no layer kept float and no search remembering fusions, the optimizer's model is written straight
    to the file (``fused_graph_file``): never serialised to bytes and parsed again, two whole-model copies.
    """

    large = is_file_model(onnx_bytes)
    if large and kept:  # _fusion compares the fused graph's nodes as bytes: past 2 GB it cannot be one protobuf
        raise ModelTooLargeError(
            f"fusion: the model is {model_size(onnx_bytes) / 1e9:.2f} GB, and keeping layers float ({sorted(kept)}) "
            "under fusion reads the fused graph as one protobuf; use Int8Dynamic(fusion=False) to keep them float, "
            "or keep no layer float.", step="fusion", size_bytes=model_size(onnx_bytes),
        )
    if not kept and (large or not fusion_remembered()):  # a search's memo holds bytes: a large model is not remembered
        path = tmp / "fused.onnx"
        fused, why = fused_graph_file(onnx_bytes, runtime, path)
        return (path if fused else None), why
    fused_bytes, why = _fusion(onnx_bytes, runtime, kept)
    return (_source_file(fused_bytes, tmp, True) if fused_bytes is not None else None), why


def _holders_of(absorbed: list[str], kept: dict[str, list[str]], onnx_bytes: bytes, fused: bytes) -> dict[str, str]:
    """Absorbed layer -> the fused node that holds it, for fused nodes whose layers are all kept float."""

    out: dict[str, str] = {}
    for node, scopes in fused_holders(onnx_bytes, fused).items():
        members = [layer for layer in kept if any(same_layer(layer, s) for s in scopes)]
        if len(members) == len(scopes):  # the whole op stays float
            out.update({layer: node for layer in members if layer in absorbed})
    return out


def _convert_dynamic(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    rt = recipe.runtime
    kept = kept_float(b, recipe)
    if kept or fusion_remembered():  # both read the fused graph as bytes: a file under 2 GB is read whole
        b = whole_if_it_fits(b)
    with tempfile.TemporaryDirectory() as tmp:
        with stage("fusion"):
            fused_file, fusion_why = _fused_file(b, rt, kept, Path(tmp))
        if is_file_model(b):  # the optimizer's model, freed, kept by the C heap: handed back before quantizing
            release_memory()
        was_fused = fused_file is not None
        op_types = list(rt.quantized_op_types)
        if was_fused:  # the fused ops now hold the MatMul (attention) and Gather (embedding) weights
            op_types += [fused_op for fused_op, source in FUSED_OP_TYPES.items() if source in op_types]
        excluded = list(dict.fromkeys(node for nodes in kept.values() for node in nodes))  # a fused op holds several
        with stage("quantize"):
            source = fused_file or _source_file(b, Path(tmp), False)
            # int8 weights are a quarter of the fp32 ones: a 1.3 GB model's int8 file is bytes again
            large = is_file_model(b) and model_size(b) // 4 > current_file_threshold()
            out = _quantize_dynamic_file(source, rt, nodes_to_exclude=excluded, op_types=op_types, fused=was_fused,
                                         out_dir=Path(tmp), large=large)
    check_quantization_parameters(out, recipe.label)  # the weights' scales: never a NaN model returned as executable
    choices = {
        "op_types": op_types,
        "per_channel": rt.per_channel,
        "activations": "uint8",
        "reduce_range": resolve_reduce_range(rt),
        "fusion": was_fused,
        "layers_float": sorted(kept),
        "why": {
            "op_types": ("the recipe's" if rt.op_types is not None else "Linear layers and embedding tables")
            + (", with the fused attention / embedding ops that now hold those weights" if was_fused else ""),
            "per_channel": "per-channel weight scales (recipe); on a real encoder cosine 0.88 -> 0.99"
            if rt.per_channel else "per-tensor weight scales (recipe)",
            "activations": "dynamic int8 quantizes activations to uint8 at run time (ONNX Runtime's U8S8 path)",
            "reduce_range": reduce_range_why(rt),
            "fusion": fusion_why,
        },
    }
    return out, choices


def _convert_float(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    return (convert_float16_onnx(b) if isinstance(recipe.quantization, Float16) else b), {}


def _convert_weight_only(onnx_bytes: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    return quantize_weight_only_onnx(onnx_bytes, recipe.runtime, feeds)  # its choices, with the reasons


def _int8(convert: _Convert) -> _Convert:
    """An int8 conversion whose choices are filed under ``choices``, with ``reduce_range`` beside them."""

    def run(onnx_bytes: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
        converted, choices = convert(onnx_bytes, recipe, feeds)
        return converted, {"reduce_range": choices["reduce_range"], "choices": choices}

    return run


# Private registry: runtime type -> its own conversion of the exported fp32 model, returning the details to record.
_CONVERSIONS: dict[type, _Convert] = {
    Onnx: _convert_float,
    Int8Dynamic: _int8(_convert_dynamic),
    Int8Static: _int8(convert_static),
    WeightOnly: _convert_weight_only,
}


def convert_onnx(
    onnx_bytes: bytes, recipe: Recipe, feeds: Sequence[dict[str, np.ndarray]] | None
) -> tuple[bytes, dict[str, Any]]:
    """The exported fp32 model converted as ``recipe`` says, and the choices made on the way.

    For the int8 runtimes the details hold ``reduce_range`` and ``choices``: op types, per-channel,
    activation type, reduce_range, fusion, the layers kept float, and why each. ``WeightOnly``
    reports its choices and what it rewrote and quantized (node counts) directly in the details.

    A model past the protobuf limit (an ``OnnxFile``) comes back as one, except under ``Int8Static``, which
    raises ``ModelTooLargeError``.
    """
    if isinstance(recipe.runtime, Int8Static):  # its calibration holds one protobuf: a file under 2 GB is read whole
        onnx_bytes = whole_if_it_fits(onnx_bytes)
        if is_file_model(onnx_bytes):
            check_convertible(model_size(onnx_bytes), recipe)
    return _CONVERSIONS[type(recipe.runtime)](onnx_bytes, recipe, feeds)


def check_convertible(size_bytes: int, recipe: Recipe) -> None:
    """``ModelTooLargeError`` (step ``"convert"``) when ``recipe``'s conversion must hold a model of ``size_bytes``
    as one protobuf past the limit: ``Int8Static``. ``compress`` asks before the export, from the weights' size."""
    if isinstance(recipe.runtime, Int8Static) and size_bytes > current_limit():
        raise ModelTooLargeError(
            f"convert ({recipe.label}): the model is {size_bytes / 1e9:.2f} GB, past the "
            f"{current_limit() / 1e9:.2f} GB one ONNX protobuf can hold, and static int8's pre-processing and "
            "calibration keep the model as one protobuf. Use runtime=Int8Dynamic() or WeightOnly() (both take a "
            "model past 2 GB), or ONNX Runtime's quantize_static(..., use_external_data_format=True) on the file.",
            step="convert", size_bytes=size_bytes, limit_bytes=current_limit(),
        )


def graph_facts(onnx_bytes: bytes) -> dict[str, Any]:
    """Opset, op counts, and the fractions of weight elements (initializers of rank >= 2) stored as
    int8 (``int8_weight_fraction``) and below 32 bits (``quantized_weight_fraction``: int8, 4-bit or float16).

    Weights packed by ``MatMulNBits``/``GatherBlockQuantized`` count as the K x N values they hold (their
    scales and zero points not at all); ``nbits_weight_fraction`` is their share.
    """
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    tp = onnx.TensorProto
    int8_types = {tp.INT8, tp.UINT8}
    low_types = int8_types | {tp.FLOAT16, tp.BFLOAT16, tp.INT4, tp.UINT4}
    nbits, packed = nbits_weight_elements(proto.graph)
    int8 = nbits.get(8, 0)
    low = total = sum(nbits.values())
    for init in proto.graph.initializer:
        if len(init.dims) >= 2 and init.name not in packed:
            n = 1
            for d in init.dims:
                n *= d
            total += n
            int8 += n if init.data_type in int8_types else 0
            low += n if init.data_type in low_types else 0
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "op_counts": dict(Counter(node.op_type for node in proto.graph.node)),
        "int8_weight_fraction": int8 / total if total else 0.0,
        "quantized_weight_fraction": low / total if total else 0.0,
        "nbits_weight_fraction": sum(nbits.values()) / total if total else 0.0,
    }

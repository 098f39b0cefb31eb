"""Real int8 and float16 ONNX models, made by ONNX Runtime's own tooling.

``onnxruntime.quantization`` does the quantization (dynamic, and static QDQ
with MinMax / Percentile / Entropy calibration); float16 conversion uses
``onnxruntime.transformers.float16``; 4/8-bit weight-only models go through
``engine.weight_only`` (``MatMulNBits``). squeezelab only chooses the arguments,
feeds calibration batches, and keeps every temporary file in a temporary
directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab.engine.core.cpu import default_reduce_range
from squeezelab.engine.core.errors import CalibrationError
from squeezelab.engine.core.quantizers import Float16
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Entropy, Int8Dynamic, Int8Static, MinMax, Onnx, Percentile, WeightOnly
from squeezelab.engine.runtime.quantize_memo import calibration_cache_path, remembered_preprocess

__all__ = ["resolve_reduce_range", "quantize_dynamic_onnx", "quantize_static_onnx", "convert_float16_onnx"]

log = logging.getLogger(__name__)


class _DropPreprocessAdvice(logging.Filter):
    """Moves what ONNX Runtime's quantizer says on the root logger to this module's debug log.

    Its "consider pre-processing" advice (followed or tried) and its notes on LayerNorm axes and
    non-constant biases of transformer graphs are about choices squeezelab made on purpose.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "pre-processing" in record.getMessage() or "quantization" in record.pathname.replace("\\", "/"):
            log.debug("onnxruntime.quantization: %s", record.getMessage())
            return False
        return True


# Redirecting stdout and filtering the root logger are process-wide: one ONNX Runtime tool at a time.
# Re-entrant: a tool called inside another's quiet block (the optimizer inside a quantization) nests.
_TOOLS_LOCK = threading.RLock()


@contextlib.contextmanager
def _quiet_onnxruntime_tools() -> Iterator[None]:
    """Keep ONNX Runtime's Python tools (quantizer, shape inference, transformer optimizer, float16
    converter) from printing to stdout and advising on the root logger.

    They ``print()`` what they meant as log lines ("failed in shape inference <class 'AssertionError'>"
    from the optimizer's symbolic shape inference): a user's stdout is theirs (a CLI's JSON goes there).
    Both are restored on exit; what was printed goes to this module's debug log. Every call of those
    tools in squeezelab runs inside this block. Holds a lock meanwhile, so concurrent threads never
    interleave the redirection.
    """
    with _TOOLS_LOCK, _quieted():
        yield


@contextlib.contextmanager
def _quieted() -> Iterator[None]:
    root = logging.getLogger()
    advice_filter = _DropPreprocessAdvice()
    root.addFilter(advice_filter)
    # Symbolic shape inference warns about each broadcast it cannot prove on transformer graphs
    # (e.g. "Min(512, sequence)"); the graph is then quantized as exported, which is fine.
    shape_log = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    shape_level = shape_log.level
    shape_log.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(advice_filter)
        shape_log.setLevel(shape_level)
        if printed.getvalue():
            log.debug("onnxruntime.quantization printed:\n%s", printed.getvalue())


def _preprocessed(model_bytes: bytes, tmp: Path) -> object:
    """ONNX Runtime's recommended ``quant_pre_process`` (shape inference, graph optimisation).

    It fails on some real models ("Incomplete symbolic shape inference"); then
    quantization proceeds on the model as exported, and the failure is logged.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / "preprocessed.onnx"
    leftover = Path(_SHAPE_INFERENCE_LEFTOVER)
    had_leftover, started = leftover.exists(), time.time()
    try:
        quant_pre_process(onnx.load_from_string(model_bytes), out)
        return onnx.load(str(out))
    except Exception as exc:  # noqa: BLE001 - any failure means: quantize the raw export
        log.info("quant_pre_process failed (%s); quantizing the model as exported", exc)
        if not had_leftover:
            _remove_shape_inference_leftover(leftover, started)
        return onnx.load_from_string(model_bytes)


# ONNX Runtime's symbolic shape inference saves the half-inferred model under this name in the
# *working directory* when it fails (with its weights in a uuid-named file beside it): the user's folder.
_SHAPE_INFERENCE_LEFTOVER = "sym_shape_infer_temp.onnx"


def _remove_shape_inference_leftover(path: Path, since: float) -> None:
    """Delete the file a failed shape inference just wrote, and the external-data files it names."""
    import onnx

    if not path.is_file() or path.stat().st_mtime < since - 1:
        return  # not ours
    try:
        proto = onnx.load(str(path), load_external_data=False)
        locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    except Exception:  # noqa: BLE001 - unreadable: remove only the file itself
        locations = set()
    for location in locations:
        data = path.parent / location
        if data.is_file() and data.stat().st_mtime >= since - 1:
            data.unlink()
    path.unlink()


def resolve_reduce_range(runtime: Int8Dynamic | Int8Static) -> bool:
    """The recipe's ``reduce_range``, or this machine's safe choice when it is ``None``."""
    return default_reduce_range() if runtime.reduce_range is None else runtime.reduce_range


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
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_onnxruntime_tools():
        out = Path(tmp) / "int8.onnx"
        graph = onnx.load_from_string(onnx_bytes) if fused else _preprocessed(onnx_bytes, Path(tmp))
        quantize_dynamic(
            graph,
            out,
            op_types_to_quantize=list(op_types or runtime.quantized_op_types),
            per_channel=runtime.per_channel,
            reduce_range=resolve_reduce_range(runtime),
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {},
        )
        return out.read_bytes()


class _BatchReader:
    """``CalibrationDataReader`` over pre-made feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_static_onnx(
    onnx_bytes: bytes,
    runtime: Int8Static,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    nodes_to_exclude: Sequence[str] = (),
) -> bytes:
    """Static int8 in QDQ format with activation ranges calibrated on ``feeds``; ``nodes_to_exclude`` stay float."""
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
    extra: dict[str, object] = {}
    if isinstance(calibration, Percentile):
        extra["CalibPercentile"] = float(calibration.percentile)
    act = QuantType.QInt8 if runtime.activations == "int8" else QuantType.QUInt8
    op_types = list(runtime.op_types) if runtime.op_types else None
    # Inside a search (remembered_quantization) the export is pre-processed and calibrated once.
    cache = calibration_cache_path(onnx_bytes, feeds, [method.name, sorted(extra.items()), op_types])
    with tempfile.TemporaryDirectory() as tmp, _quiet_onnxruntime_tools():
        out = Path(tmp) / "int8.onnx"
        # The calibrator writes an augmented copy of the model to a temp dir of its own choosing.
        quantize_static(
            remembered_preprocess(onnx_bytes, lambda b: _preprocessed(b, Path(tmp))),
            out,
            _BatchReader(feeds),
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


def convert_float16_onnx(onnx_bytes: bytes) -> bytes:
    """Float16 weights and activations; inputs and outputs stay float32 for the caller."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_onnxruntime_tools():
        model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------- dispatch

_Convert = Callable[[bytes, Recipe, Sequence[dict[str, np.ndarray]] | None], tuple[bytes, dict[str, Any]]]


def _reduce_range_why(runtime: Int8Dynamic | Int8Static) -> str:
    if runtime.reduce_range is not None:
        return "set in the recipe"
    if resolve_reduce_range(runtime):
        return "this CPU has no VNNI: 7-bit weights keep its int16 accumulation from saturating"
    return "this CPU accumulates int8 products exactly (VNNI or ARM): full 8-bit weights"


def _kept_float(onnx_bytes: bytes, recipe: Recipe) -> dict[str, list[str]]:
    """Layer name -> the ONNX nodes kept float for it (``LayerSetting(bits=32)``)."""
    from squeezelab.engine.runtime.int8_graph import layer_nodes

    names = [item.name for item in recipe.layers if item.bits == 32]
    return layer_nodes(onnx_bytes, names) if names else {}


def _fusion(onnx_bytes: bytes, runtime: Int8Dynamic, kept: dict[str, list[str]]) -> tuple[bytes | None, str]:
    """The fused graph (None: quantize the export) and why.

    ``kept`` (layer -> its nodes) is narrowed to the nodes left in the fused graph. A layer whose
    weights fusion merged into a fused op (an attention's query / key / value, the embedding
    tables) stays float by excluding that op, which needs every layer the op holds kept float;
    when only some of them are, fusion is skipped and the unfused graph keeps exactly those float.
    """
    import onnx

    from squeezelab.engine.runtime.int8_graph import fused_graph

    fused, why = fused_graph(onnx_bytes, runtime)
    if fused is None:
        return None, why
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


def _holders_of(absorbed: list[str], kept: dict[str, list[str]], onnx_bytes: bytes, fused: bytes) -> dict[str, str]:
    """Absorbed layer -> the fused node that holds it, for fused nodes whose layers are all kept float."""
    from squeezelab.engine.runtime.int8_graph import fused_holders, same_layer

    out: dict[str, str] = {}
    for node, scopes in fused_holders(onnx_bytes, fused).items():
        members = [layer for layer in kept if any(same_layer(layer, s) for s in scopes)]
        if len(members) == len(scopes):  # the whole op stays float
            out.update({layer: node for layer in members if layer in absorbed})
    return out


def _convert_dynamic(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    from squeezelab.engine.runtime.int8_graph import FUSED_OP_TYPES

    rt = recipe.runtime
    kept = _kept_float(b, recipe)
    fused, fusion_why = _fusion(b, rt, kept)
    op_types = list(rt.quantized_op_types)
    if fused is not None:  # the fused ops now hold the MatMul (attention) and Gather (embedding) weights
        op_types += [fused_op for fused_op, source in FUSED_OP_TYPES.items() if source in op_types]
    excluded = list(dict.fromkeys(node for nodes in kept.values() for node in nodes))  # a fused op holds several layers
    out = quantize_dynamic_onnx(fused or b, rt, nodes_to_exclude=excluded, op_types=op_types, fused=fused is not None)
    choices = {
        "op_types": op_types,
        "per_channel": rt.per_channel,
        "activations": "uint8",
        "reduce_range": resolve_reduce_range(rt),
        "fusion": fused is not None,
        "layers_float": sorted(kept),
        "why": {
            "op_types": ("the recipe's" if rt.op_types is not None else "Linear layers and embedding tables")
            + (", with the fused attention / embedding ops that now hold those weights" if fused is not None else ""),
            "per_channel": "per-channel weight scales (recipe); on a real encoder cosine 0.88 -> 0.99"
            if rt.per_channel else "per-tensor weight scales (recipe)",
            "activations": "dynamic int8 quantizes activations to uint8 at run time (ONNX Runtime's U8S8 path)",
            "reduce_range": _reduce_range_why(rt),
            "fusion": fusion_why,
        },
    }
    return out, choices


def _convert_static(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    from squeezelab.engine.runtime.int8_graph import float_neighbours

    rt = recipe.runtime
    kept = _kept_float(b, recipe)
    excluded = [node for nodes in kept.values() for node in nodes]
    between = float_neighbours(b, excluded) if excluded else []  # activations between float layers stay float
    out = quantize_static_onnx(b, rt, feeds or [], nodes_to_exclude=excluded + between)
    act_why = (
        "uint8 activations x int8 weights (U8S8): ONNX Runtime's fast x86 CPU path"
        if rt.activations == "uint8"
        else "int8 activations (S8S8), as asked: what GPU / TensorRT int8 wants; slow on x86 CPUs"
    )
    choices = {
        "op_types": list(rt.op_types) if rt.op_types else "all ONNX Runtime can quantize",
        "per_channel": rt.per_channel,
        "activations": rt.activations,
        "reduce_range": resolve_reduce_range(rt),
        "fusion": False,
        "layers_float": sorted(kept),
        "nodes_float_between": len(between),
        "why": {
            "activations": act_why,
            "nodes_float_between": "weightless nodes (activations, padding, adds) that only connect float layers "
            "stay float, so no Quantize/Dequantize pair sits between float layers",
            "reduce_range": _reduce_range_why(rt),
            "fusion": "static QDQ: ONNX Runtime fuses QDQ groups into QLinearConv / QLinearMatMul when the session loads",
        },
    }
    return out, choices


def _convert_float(b: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    return (convert_float16_onnx(b) if isinstance(recipe.quantization, Float16) else b), {}


# Private registry: runtime type -> conversion of the exported fp32 model, and the choices it made.
_CONVERSIONS: dict[type, _Convert] = {
    Onnx: _convert_float,
    Int8Dynamic: _convert_dynamic,
    Int8Static: _convert_static,
}


def _convert_weight_only(onnx_bytes: bytes, recipe: Recipe, feeds: Any) -> tuple[bytes, dict[str, Any]]:
    from squeezelab.engine.runtime.weight_only import quantize_weight_only_onnx

    return quantize_weight_only_onnx(onnx_bytes, recipe.runtime, feeds)  # its choices, with the reasons


def convert_onnx(
    onnx_bytes: bytes, recipe: Recipe, feeds: Sequence[dict[str, np.ndarray]] | None
) -> tuple[bytes, dict[str, Any]]:
    """The exported fp32 model converted as ``recipe`` says, and the choices made on the way.

    For the int8 runtimes the details hold ``reduce_range`` and ``choices``: op types, per-channel,
    activation type, reduce_range, fusion, the layers kept float, and why each. ``WeightOnly``
    reports its choices and what it rewrote and quantized (node counts) directly in the details.
    """
    if isinstance(recipe.runtime, WeightOnly):
        return _convert_weight_only(onnx_bytes, recipe, feeds)
    converted, choices = _CONVERSIONS[type(recipe.runtime)](onnx_bytes, recipe, feeds)
    if not choices:
        return converted, {}
    return converted, {"reduce_range": choices["reduce_range"], "choices": choices}


def graph_facts(onnx_bytes: bytes) -> dict[str, Any]:
    """Opset, op counts, and the fractions of weight elements (initializers of rank >= 2) stored as
    int8 (``int8_weight_fraction``) and below 32 bits (``quantized_weight_fraction``: int8, 4-bit or float16).

    Weights packed by ``MatMulNBits``/``GatherBlockQuantized`` count as the K x N values they hold (their
    scales and zero points not at all); ``nbits_weight_fraction`` is their share.
    """
    import onnx

    from squeezelab.engine.runtime.weight_only import nbits_weight_elements

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

"""Graph-level int8 choices: which ONNX nodes belong to a torch layer, and transformer fusion.

Mixed precision with real kernels keeps named layers float by handing their
ONNX nodes to ONNX Runtime's ``nodes_to_exclude``. The TorchScript exporter
names each node by the scopes of the modules it ran in, e.g.
``/encoder/layer.5/output/dense/MatMul`` or ``/layer2/layer2.0/downsample/downsample.0/Conv``
(a child of a called container repeats the container's name), and the
wrapper that feeds keyword inputs adds a ``/model`` scope. ``node_layer``
turns such a name back into the module's ``named_modules()`` name.

Fusion runs ONNX Runtime's transformer optimizer (attention, LayerNorm and
GELU fusion) before quantization; squeezelab decides when, and falls back to
the unfused graph with the reason recorded when fusion fails or fuses no
attention (``fused_graph``; inside ``remembered_fusion()`` each export is fused
once). ``fused_holders`` names the layers a fused op holds: they can only stay
float together.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import load_proto, write_external, is_file_model
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.runtime.bert_fusion import optimize_bert
from squeezelab.engine.runtime.ort_tools import quiet_onnxruntime_tools

__all__ = [
    "node_layer", "layer_nodes", "kept_float", "looks_like_transformer", "fuse_transformer", "attention_shape", "layers_in_graph",
    "fused_holders", "same_layer", "fused_graph", "fused_graph_file", "fusion_remembered", "remembered_fusion", "float_neighbours", "FUSED_OP_TYPES",
]

log = logging.getLogger(__name__)

# Fused ops ONNX Runtime's dynamic quantizer turns into int8 kernels (QAttention, QEmbedLayerNormalization):
# with fusion their weights are no longer MatMul/Gather inputs, so they are quantized where those are.
FUSED_OP_TYPES: dict[str, str] = {"Attention": "MatMul", "EmbedLayerNormalization": "Gather"}  # fused op -> its source


def node_layer(node_name: str) -> str:
    """The module path of an exported node: ``/a/a.0/conv/Conv`` -> ``a.0.conv`` (``""`` if unscoped)."""
    segments = [s for s in node_name.split("/") if s][:-1]  # the last segment names the op
    path: list[str] = []
    for segment in segments:
        if path and segment.startswith(path[-1] + "."):
            path[-1] = segment  # "layer1" then "layer1.0": the child of a called container
        else:
            path.append(segment)
    return ".".join(path)


def layer_nodes(onnx_bytes: bytes, names: Sequence[str]) -> dict[str, list[str]]:
    """The ONNX node names of each layer in ``names``; ``ConfigError`` naming layers that map to none.

    A node belongs to a layer when its scope is the layer's name, or ``model.`` + the name
    (the export wrapper's scope). Only nodes directly in the layer count (a Linear's MatMul
    and bias Add), not those of its children.
    """
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    found = _scan(graph, names)
    missing = [name for name, nodes in found.items() if not nodes]
    if missing:
        scopes = sorted({node_layer(n.name) for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "Gather")})
        shown = ", ".join(scopes[:8]) + (", ..." if len(scopes) > 8 else "")
        raise ConfigError(
            f"layers {missing} kept float (bits=32) match no node of the exported ONNX graph; layer names "
            f"found in the graph include: {shown or 'none'}. Use names from model.named_modules() of layers "
            "that compute (Linear, Conv, Embedding) and feed the selected output (an unused pooler has no node), "
            "and the default exporter='torchscript' (it names nodes by module)."
        )
    return found


def kept_float(onnx_bytes: bytes, recipe: Recipe) -> dict[str, list[str]]:
    """Layer name -> the ONNX nodes kept float for it (``LayerSetting(bits=32)``)."""
    names = [item.name for item in recipe.layers if item.bits == 32]
    return layer_nodes(onnx_bytes, names) if names else {}


def _scan(graph: Any, names: Sequence[str]) -> dict[str, list[str]]:
    wanted = set(names)
    found: dict[str, list[str]] = {name: [] for name in names}
    for node in graph.node:
        scope = node_layer(node.name)
        for candidate in (scope, scope[len("model."):] if scope.startswith("model.") else None):
            if candidate in wanted:
                found[candidate].append(node.name)
                break
    return found


# Ops that hold a layer's weights: they stay float only when their layer is named, never by propagation.
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"})


def float_neighbours(onnx_bytes: bytes, excluded: Sequence[str]) -> list[str]:
    """The weightless nodes (Clip, Relu, Pad, Add, pooling, ...) that only connect nodes kept float.

    ONNX Runtime's static QDQ quantizer quantizes the inputs and outputs of every node it is not
    told to exclude. Excluding only a layer's Conv keeps its weights float, but its input and output
    still pass through uint8 Quantize/Dequantize pairs placed for the Clip, Pad or Add beside it:
    on EfficientNet-Lite0, 49 of its 50 layers "kept float" were still 68 % top-1 agreement. A
    weightless node whose data inputs all come from float nodes carries float activations and is
    kept float too (to a fixed point); so is one fed only by graph inputs whose outputs all go to
    float nodes (the padding before a float stem). A node after an int8 layer stays quantized
    even when a float layer follows: an int8 Conv's Clip/Relu is folded into its output's range,
    and floating it would quantize the conv's wider pre-activation range instead (EfficientNet-Lite0,
    first block's projection float: cosine 0.96 -> 0.81). Weight-bearing ops are only ever excluded
    by name. Returns the added node names.
    """
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    constants = {i.name for i in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    producer = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    floating, added = set(excluded), []
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.name in floating or node.op_type in _WEIGHT_OPS or node.op_type == "Constant":
                continue
            sources = [producer.get(i) for i in node.input if i and i not in constants]
            targets = [c for out in node.output for c in consumers.get(out, [])]
            from_float = bool(sources) and all(p is None or p in floating for p in sources)
            to_float = bool(targets) and all(c in floating for c in targets)
            if from_float and (to_float or any(p is not None for p in sources)):
                floating.add(node.name)
                added.append(node.name)
                changed = True
    return added


def layers_in_graph(onnx_bytes: bytes, names: Sequence[str]) -> list[str]:
    """The layers of ``names`` (in order) that have nodes in the graph: the ones that can be kept float."""
    import onnx

    found = _scan(onnx.load_from_string(onnx_bytes).graph, names)
    return [name for name in names if found[name]]


def same_layer(layer: str, scope: str) -> bool:
    """True when the graph scope ``scope`` is the module ``layer`` (directly, or under the export wrapper's ``model.``)."""
    return scope == layer or scope == "model." + layer


def fused_holders(onnx_bytes: bytes, fused_bytes: bytes) -> dict[str, list[str]]:
    """Fused node name -> the graph scopes of the layers whose weights it now holds.

    Fusion merges a self-attention's query, key and value MatMuls into one ``Attention`` node and
    the embedding Gathers into one ``EmbedLayerNormalization``: those layers can then only be kept
    float together, by excluding the fused node. An ``Attention`` is matched by the scope of its
    output (the attention module, e.g. ``model.encoder.layer.0.attention.self``, parent of the
    projections); an ``EmbedLayerNormalization`` by the embedding tables it reads.
    """
    import onnx

    graph, fused = onnx.load_from_string(onnx_bytes).graph, onnx.load_from_string(fused_bytes).graph
    present = {node.name for node in fused.node}
    weights = {init.name for init in graph.initializer}
    absorbed = list(dict.fromkeys(
        node_layer(node.name) for node in graph.node
        if node.op_type in ("MatMul", "Gemm", "Gather") and node.name not in present and weights.intersection(node.input)
    ))
    holders: dict[str, list[str]] = {}
    for node in fused.node:
        if node.op_type == "Attention" and node.output:
            owner = node_layer(node.output[0])  # the output is named in the attention module's scope
            holders[node.name] = [s for s in absorbed if s.rpartition(".")[0] == owner]
        elif node.op_type == "EmbedLayerNormalization":
            tables = set(node.input)
            holders[node.name] = [s for s in absorbed if f"{s}.weight" in tables]
    return {name: scopes for name, scopes in holders.items() if scopes}


def looks_like_transformer(onnx_bytes: bytes) -> bool:
    """True for a graph with attention (Softmax fed by a MatMul) and layer normalisation."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    ops = {node.op_type for node in graph.node}
    producers = {out: node.op_type for node in graph.node for out in node.output}
    attention = any(
        node.op_type == "Softmax" and producers.get(node.input[0]) in ("MatMul", "Add", "Div", "Mul")
        for node in graph.node
    )
    return attention and "MatMul" in ops and bool({"LayerNormalization", "ReduceMean"} & ops)


def attention_shape(onnx_bytes: bytes) -> tuple[int, int]:
    """``(num_heads, hidden_size)`` read from the graph, or ``(0, 0)`` (the optimizer then guesses).

    The hidden size is the length of the first LayerNormalization's scale; the head size comes
    from the attention scores' scale, ``1 / sqrt(head_size)`` (a Mul, or a Div by its inverse),
    between the scores' MatMul and the Softmax. Exports whose shapes are computed at run time
    (transformers 5) carry no constant head count the optimizer can find by itself.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    floats = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    sizes = {i.name: int(np.prod(i.dims)) for i in floats}  # the LayerNorm scale's length: its dims suffice
    # Only scalars are read as values (the attention scale): converting every weight was a model-sized copy.
    values = {i.name: numpy_helper.to_array(i) for i in floats if sizes[i.name] == 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            sizes[node.output[0]] = int(values[node.output[0]].size)
    norm = next((n for n in graph.node if n.op_type == "LayerNormalization"), None)
    hidden = sizes[norm.input[1]] if norm is not None and norm.input[1] in sizes else 0
    producers = {out: node for node in graph.node for out in node.output}
    softmax = next((n for n in graph.node if n.op_type == "Softmax"), None)
    node, head = (producers.get(softmax.input[0]) if softmax is not None else None), 0
    for _ in range(4):  # Softmax <- Add(mask) <- Mul/Div(scale) <- MatMul
        if node is None or node.op_type == "MatMul":
            break
        scalars = [values[i] for i in node.input if i in values and np.size(values[i]) == 1]
        if node.op_type in ("Mul", "Div") and scalars and float(scalars[0]) > 0:
            scale = float(np.asarray(scalars[0]).reshape(()))
            head = round(scale**2) if node.op_type == "Div" else round(1.0 / scale**2)
            break
        node = producers.get(node.input[0])
    if hidden and head and hidden % head == 0:
        return hidden // head, hidden
    return 0, 0


def fuse_transformer(onnx_bytes: bytes) -> tuple[bytes | None, dict[str, Any]]:
    """ONNX Runtime's transformer optimizer on ``onnx_bytes``: the fused graph (or None) and what happened.

    The optimizer is ``optimize_model(model_type="bert", opt_level=0)`` as ``engine.runtime.bert_fusion``
    runs it (the same fused graph; its shape inference does not copy the weights).

    The second value holds ``fused`` (op type -> count) or ``error`` (why the unfused graph is
    used instead). Fusion that fuses no attention counts as a failure: the rest alone is not
    worth a graph that differs from the export.
    """
    proto, info = _fused_model(onnx_bytes)
    return (proto.SerializeToString() if proto is not None else None), info


def _fused_model(onnx_bytes: bytes) -> tuple[Any, dict[str, Any]]:
    """``fuse_transformer``'s fused graph as the optimizer's ``ModelProto`` (None when fusion failed), and its info."""
    import onnx

    heads, hidden = attention_shape(onnx_bytes)
    try:
        with _quiet_optimizer():  # optimize_model(..., "bert", opt_level=0), its shape inference without weight copies
            optimized = optimize_bert(load_proto(onnx_bytes), heads, hidden)  # an OnnxFile's weights read from its path
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    except Exception as exc:  # noqa: BLE001 - the optimizer raises many types; the export is still good
        log.info("transformer fusion failed (%s); quantizing the unfused graph", exc)
        return None, {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if not fused.get("Attention"):
        return None, {"error": f"no attention fused (fused: {fused or 'nothing'})"}
    proto = optimized.model
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):  # the fused ops' domain
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return proto, {"fused": fused, "num_heads": heads, "hidden_size": hidden}


def _fusion_why(info: dict[str, Any]) -> str:
    if "error" in info:
        return f"fusion failed, unfused graph quantized: {info['error']}"
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(info["fused"].items()))
    return f"fused ({ops}): ONNX Runtime's transformer optimizer, before quantization"


def _not_fused_why(onnx_bytes: bytes, runtime: Any) -> str | None:
    """Why ``runtime`` does not fuse this graph at all (None: it tries)."""
    if runtime.fusion is False:
        return "off (fusion=False)"
    if runtime.fusion == "auto" and not looks_like_transformer(onnx_bytes):
        return "not a transformer graph (no attention with layer normalisation): nothing to fuse"
    return None


def fused_graph_file(onnx_bytes: bytes, runtime: Any, path: Any) -> tuple[bool, str]:
    """As ``fused_graph``, the fused graph written to ``path`` (weights as external data beside it, as ONNX
    Runtime's ``quantize_dynamic`` writes a model it is given) instead of returned: no serialised copy of it
    is held. Whether it fused, and why. Nothing is remembered (``remembered_fusion`` works on bytes)."""
    import onnx

    refused = _not_fused_why(onnx_bytes, runtime)
    if refused is not None:
        return False, refused
    proto, info = _fused_model(onnx_bytes)
    if proto is not None:
        if is_file_model(onnx_bytes):  # past 2 GB: the data in one file, as the export's
            write_external(proto, Path(path))
        else:
            onnx.save_model(proto, str(path), save_as_external_data=True)
    return proto is not None, _fusion_why(info)


_FUSION_MEMO: list[dict[bytes, tuple[bytes | None, str]]] = []  # set while a search runs (see remembered_fusion)


@contextlib.contextmanager
def remembered_fusion() -> Iterator[None]:
    """Within the block, ``fused_graph`` fuses each export once (by its hash) and reuses the result.

    A search quantizes one export dozens of times with different layers kept float, and fusing
    MiniLM takes seconds each time. Outside such a block nothing is remembered.
    """
    _FUSION_MEMO.append({})
    try:
        yield
    finally:
        _FUSION_MEMO.pop()


def fused_graph(onnx_bytes: bytes, runtime: Any) -> tuple[bytes | None, str]:
    """The transformer-fused graph an ``Int8Dynamic`` ``runtime`` asks for (None: quantize the export as is) and why."""

    refused = _not_fused_why(onnx_bytes, runtime)
    if refused is not None:
        return None, refused
    memo = _FUSION_MEMO[-1] if _FUSION_MEMO else {}
    key = hashlib.sha256(onnx_bytes).digest()
    if key not in memo:
        fused, info = fuse_transformer(onnx_bytes)
        memo.clear()  # one export at a time: a fused MiniLM is ~90 MB
        memo[key] = (fused, _fusion_why(info))
    return memo[key]


def fusion_remembered() -> bool:
    """Whether a ``remembered_fusion()`` block is active (then fusion goes through ``fused_graph``'s memo)."""
    return bool(_FUSION_MEMO)


@contextlib.contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """The optimizer's modules log warnings under their bare module names: raised to ERROR, then restored.

    Its shape inference also ``print()``s its failures on stdout: captured into the debug log with the
    quantizer's prints (``ort_quantize.quiet_onnxruntime_tools``).
    """
    import onnxruntime.transformers.optimizer  # noqa: F401 - registers its loggers

    prefixes = ("fusion", "onnx_model", "optimizer", "onnxruntime.transformers")
    loggers = [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith(prefixes)
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with quiet_onnxruntime_tools():
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)

"""ONNX files as inputs: a model a team exported itself, read into the same input spec a PyTorch model gets.

``compress("model.onnx", Recipe(runtime=Int8Dynamic()))`` and
``measure("model.onnx", data)`` work on the graph as it is: its input names,
element types and shapes (``dim_param`` and unknown dimensions are dynamic)
become an ``InputSpec``, so inputs are checked and fed exactly as for a
PyTorch model. Weights kept in external ``.onnx.data`` files are loaded and
embedded, so the size counted is the size shipped; a model past ONNX's 2 GB
limit is read in place instead, its weights left beside it (``OnnxFile``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from squeezelab.engine.core.errors import ConfigError, ModelError
from squeezelab.engine.core.inputs import InputSpec
from squeezelab.engine.runtime.external_data import OnnxFile, as_file, initializer_bytes
from squeezelab.engine.runtime.size_limit import current_file_threshold

__all__ = ["is_onnx_model", "load_onnx_model", "spec_of_graph", "select_graph_output", "graph_output_names"]


def is_onnx_model(model: Any) -> bool:
    """A path to an ``.onnx`` file, ONNX bytes, or an ``onnx.ModelProto``."""
    if isinstance(model, (str, Path)):
        return True  # a path: load_onnx_model says clearly if it is not an ONNX file
    if isinstance(model, (bytes, bytearray)):
        return True
    return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")


def load_onnx_model(source: Any) -> tuple[bytes, str]:
    """The model's bytes (external data embedded) and a label naming where it came from.

    A model past the protobuf limit (``size_limit.current_file_threshold()``) is an ``OnnxFile`` instead: a path is
    read in place (its weights beside it, never written to), a ``ModelProto`` is written to a working folder.
    """
    import onnx

    if isinstance(source, OnnxFile):  # a large model compress made (e.g. the gate's fp32 export): already a file
        return source, source.path.name
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ModelError(f"ONNX file {str(path)!r} not found; pass the path of an .onnx file or a PyTorch module.")
        try:
            graph = onnx.load(str(path), load_external_data=False)  # the graph: its weights' sizes are known
        except Exception as exc:  # onnx raises DecodeError, OSError, ...
            raise ModelError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__}: {exc}).") from exc
        label = path.name
        if initializer_bytes(graph, path.parent) > current_file_threshold():  # read in place, its weights beside it
            return _checked_file(path, graph, label), label
        proto = onnx.load(str(path))  # pulls a .onnx.data file beside it back in
    elif isinstance(source, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(source))
        except Exception as exc:
            raise ModelError(f"the bytes given are not an ONNX model ({type(exc).__name__}: {exc}).") from exc
        label = "onnx bytes"
    else:
        proto, label = source, "onnx ModelProto"
        if initializer_bytes(proto, None) > current_file_threshold():  # written to a working folder: a copy, the caller's kept
            copy = onnx.ModelProto()
            copy.CopyFrom(proto)
            model = as_file(copy)
            return _checked_file(model.path, proto, label, model), label
    if not proto.graph.node:
        raise ModelError(f"the ONNX model {label!r} has an empty graph; export the model first.")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"the ONNX model {label!r} fails onnx.checker: {exc}") from exc
    return proto.SerializeToString(), label



def _checked_file(path: Path, graph: Any, label: str, model: OnnxFile | None = None) -> OnnxFile:
    """A model past the protobuf limit as an ``OnnxFile``, checked by ``onnx.checker`` from its path."""
    import onnx

    if not graph.graph.node:
        raise ModelError(f"the ONNX model {label!r} has an empty graph; export the model first.")
    try:
        onnx.checker.check_model(str(path))  # from the path: the checker reads a model past 2 GB only so
    except Exception as exc:
        raise ModelError(f"the ONNX model {label!r} fails onnx.checker: {exc}") from exc
    return model if model is not None else OnnxFile(path)


def _graph_inputs(proto: Any) -> list[Any]:
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]  # old exports list weights as inputs


def spec_of_graph(onnx_bytes: bytes) -> InputSpec:
    """The graph's inputs as an ``InputSpec``: one input is a tensor, several are keyword inputs by name."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    proto = onnx.load_from_string(onnx_bytes)
    inputs = _graph_inputs(proto)
    if not inputs:
        raise ModelError("the ONNX model takes no inputs; nothing to feed it.")
    names, dtypes, shapes, fixed = [], [], [], []
    for value in inputs:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelError(f"ONNX input {value.name!r} is not a tensor; squeezelab feeds tensors only.")
        names.append(value.name)
        dtypes.append(str(tensor_dtype_to_np_dtype(tensor.elem_type)))
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        shapes.append((None, *dims[1:]) if dims else dims)  # the first axis is the batch axis
        fixed.append(dims[0] if dims else None)
    kind = "tensor" if len(names) == 1 else "dict"  # one input: an array fits; several: by name (or in order)
    del onnx
    # A graph exported with a fixed first axis (torch.onnx.export without dynamic_axes: batch 1) runs in
    # batches of that size; the outputs are checked to follow it (a graph with no batch axis is refused).
    batch = next((k for k in fixed if k is not None), None)
    return InputSpec(kind, tuple(names), tuple(dtypes), tuple(shapes), batch, _vocabularies(proto, names))


def _vocabularies(proto: Any, names: list[str]) -> tuple[tuple[int, str] | None, ...]:
    """Per input, ``(rows, table)`` of the embedding table a ``Gather`` indexes with it (directly or
    through a ``Cast``), so ids outside the table are refused by name instead of by ONNX Runtime."""
    tables = {i.name: (int(i.dims[0]), i.name) for i in proto.graph.initializer if len(i.dims) == 2}
    source = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Cast" and n.input and n.output}
    found: dict[str, tuple[int, str]] = {}
    for node in proto.graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Gather" or axis != 0 or len(node.input) < 2 or node.input[0] not in tables:
            continue
        index = source.get(node.input[1], node.input[1])
        if index in names and (index not in found or tables[node.input[0]][0] < found[index][0]):
            found[index] = tables[node.input[0]]
    return tuple(found.get(n) for n in names) if found else ()


def graph_output_names(onnx_bytes: bytes) -> list[str]:
    import onnx

    return [o.name for o in onnx.load_from_string(onnx_bytes).graph.output]


def select_graph_output(onnx_bytes: bytes, output: Any) -> str | None:
    """The graph output ``output=`` names (a name or an index); ``None`` for the first."""
    names = graph_output_names(onnx_bytes)
    if output is None:
        return names[0] if len(names) > 1 else None
    if isinstance(output, str) and output in names:
        return output
    if isinstance(output, int) and not isinstance(output, bool) and -len(names) <= output < len(names):
        return names[output]
    raise ConfigError(
        f"output={output!r} is not an output of the ONNX graph; its outputs are {names} (pass a name or an index; "
        "a callable needs the PyTorch model)."
    )

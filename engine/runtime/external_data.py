"""Models past ONNX's 2 GB limit: one ``.onnx`` file whose weights lie beside it as external data.

One ``ModelProto`` cannot be serialised past 2 GB (protobuf's signed 32-bit sizes); ONNX keeps the
weights of such a model in a data file beside the graph. ``compress`` moves a model past the limit
(``size_limit.current_limit()``, lowered by ``protobuf_limit`` in tests) between its stages as
``OnnxFile``: the bytes of the ``.onnx`` file (the graph, its small tensors, references to the
weights), with the path they were read from and the working folder that holds both.

So everything that only reads the graph (input names, op counts, shapes, a layer's nodes, the weight
fractions) reads an ``OnnxFile`` as it reads any ONNX bytes; what needs the weights' values loads
them from the path (``load_proto``), ONNX Runtime opens the path (``session_source``), and a step that
writes a model writes it as a file again (``same_form``). Once a model is a file it stays one, so no
step holds it as one protobuf, and none holds a second serialised copy beside its parsed model.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from squeezelab.engine.runtime.size_limit import current_file_threshold, current_limit

__all__ = ["OnnxFile", "is_file_model", "load_proto", "same_form", "write_external", "working_folder",
           "session_source", "whole_if_it_fits", "model_size", "weights_folder", "write_model", "read_model", "model_sha256",
           "external_locations", "gathered", "initializer_bytes"]

DATA_SUFFIX = ".data"  # the data file beside ``model.onnx`` is ``model.onnx.data``
_THRESHOLD = 1024  # bytes: as ONNX's default, smaller tensors (shape constants, scalars) stay in the graph


class OnnxFile(bytes):
    """The bytes of an ``.onnx`` file whose weights are external data beside it.

    ``path`` is the file; ``keep`` (a ``tempfile.TemporaryDirectory``, or None for a caller's own
    file) is the working folder, removed when the last ``OnnxFile`` of it is garbage-collected.
    """

    path: Path
    keep: Any

    def __new__(cls, path: str | Path, keep: Any = None) -> OnnxFile:
        self = super().__new__(cls, Path(path).read_bytes())
        self.path = Path(path)
        self.keep = keep
        return self

    def __repr__(self) -> str:
        return f"OnnxFile({str(self.path)!r}, {model_size(self) / 1e9:.2f} GB)"

    __str__ = __repr__  # never the graph's bytes in a message

    def __reduce__(self) -> tuple:  # a copy (or a pickle) names the same file and keeps its folder alive
        return (OnnxFile, (str(self.path),))


def is_file_model(model: Any) -> bool:
    """Whether ``model`` is an ``OnnxFile`` (weights beside it) rather than self-contained bytes."""
    return isinstance(model, OnnxFile)


def working_folder() -> tempfile.TemporaryDirectory:
    """A new folder for a model's file and its data, removed with the last model that uses it."""
    return tempfile.TemporaryDirectory(prefix="squeezelab-model-")


def external_locations(model: bytes) -> list[str]:
    """The data files an ONNX model's tensors refer to (empty for self-contained bytes)."""
    import onnx

    proto = onnx.load_from_string(bytes(model))
    found: dict[str, None] = {}
    for tensor in _all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            found.update({entry.value: None for entry in tensor.external_data if entry.key == "location"})
    return list(found)


def _initializers(proto: Any) -> Any:
    from onnx.external_data_helper import _get_initializer_tensors

    return _get_initializer_tensors(proto)


def _all_tensors(proto: Any) -> Any:
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def model_size(model: bytes) -> int:
    """Bytes the model occupies: the file, and for an ``OnnxFile`` its data files too."""
    if not is_file_model(model):
        return len(model)
    folder = model.path.parent
    return len(model) + sum((folder / name).stat().st_size for name in external_locations(model))


def weights_folder(model: bytes) -> str:
    """Where a tensor's external data is read from (``numpy_helper.to_array(tensor, base_dir)``)."""
    return str(model.path.parent) if is_file_model(model) else ""


def load_proto(model: bytes, *, weights: bool = True) -> Any:
    """The ``ModelProto`` of ONNX bytes or of an ``OnnxFile`` (its weights loaded unless ``weights=False``)."""
    import onnx

    if not is_file_model(model):
        return onnx.load_from_string(bytes(model))
    proto = onnx.load(str(model.path), load_external_data=weights)
    if weights:  # as it was before it was written: ONNX leaves data_location=DEFAULT set, which would serialise
        for tensor in _all_tensors(proto):
            if tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.DEFAULT:
                tensor.ClearField("data_location")
    return proto


def write_external(proto: Any, path: Path) -> None:
    """``proto`` saved to ``path`` with its weights in one data file beside it (``path.name + '.data'``).

    The proto's tensors are changed to refer to the file (ONNX's ``save_model`` does that in place).
    """
    import onnx

    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + DATA_SUFFIX, size_threshold=_THRESHOLD)


def as_file(proto: Any, name: str = "model.onnx") -> OnnxFile:
    """``proto`` written to a new working folder with its weights beside it."""
    keep = working_folder()
    path = Path(keep.name) / name
    write_external(proto, path)
    return OnnxFile(path, keep)


def gathered(graph: Any, folder: Path, name: str = "model.onnx") -> OnnxFile:
    """``graph`` (loaded without its external data, which lies in ``folder``) written to a new working folder with
    every tensor of 1 kB and more in one data file, read and written one tensor at a time: what ``as_file`` gives
    for the loaded model, without holding all its weights at once."""
    import onnx

    keep = working_folder()
    path = Path(keep.name) / name
    location = path.name + DATA_SUFFIX
    with open(path.with_name(location), "wb") as data:
        for tensor in _initializers(graph):  # as ONNX's save_model: tensors inside node attributes stay in the graph
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                info = {entry.key: entry.value for entry in tensor.external_data}
                with open(folder / info["location"], "rb") as f:
                    f.seek(int(info.get("offset", 0)))
                    raw = f.read(int(info["length"])) if "length" in info else f.read()
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= _THRESHOLD:
                raw = tensor.raw_data
            else:
                continue
            offset = data.tell()
            data.write(raw)
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()  # as ONNX's set_external_data writes them
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del raw
    path.write_bytes(graph.SerializeToString())
    return OnnxFile(path, keep)


def same_form(source: bytes, proto: Any) -> bytes:
    """A model made from ``source``: an ``OnnxFile`` in a new working folder when ``source`` is one and the
    new model's weights are still past the file threshold, else serialised bytes (a 4-bit model of a 1.3 GB
    one is bytes again)."""
    large = is_file_model(source) and initializer_bytes(proto) > current_file_threshold()
    return as_file(proto) if large else proto.SerializeToString()


def initializer_bytes(proto: Any, folder: Path | None = None) -> int:
    """Bytes of the initializers' data: in the proto, or (not loaded) the length its external entry gives, else
    the size of the file it names in ``folder``."""
    import onnx

    total = 0
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            if "length" in info:
                total += int(info["length"])
            elif folder is not None and (folder / info.get("location", "")).is_file():
                total += (folder / info["location"]).stat().st_size
        else:
            total += len(tensor.raw_data)
    return total


def whole_if_it_fits(model: bytes) -> bytes:
    """``model`` as one self-contained protobuf when it fits the protobuf limit (for the steps that need one),
    else as it is."""
    if is_file_model(model) and model_size(model) <= current_limit():
        return load_proto(model).SerializeToString()
    return model


def session_source(model: bytes) -> bytes | str:
    """What ``onnxruntime.InferenceSession`` opens: the path of an ``OnnxFile`` (it reads the data beside
    it), else the bytes."""
    return str(model.path) if is_file_model(model) else model


def model_sha256(model: bytes) -> str:
    """SHA-256 of the file, followed by its data files for an ``OnnxFile`` (read in 16 MB pieces)."""
    digest = hashlib.sha256(bytes(model))
    if is_file_model(model):
        for name in external_locations(model):
            with open(model.path.parent / name, "rb") as f:
                for piece in iter(lambda: f.read(1 << 24), b""):
                    digest.update(piece)
    return digest.hexdigest()


def write_model(model: bytes, path: Path) -> list[Path]:
    """``model`` written to ``path``: the bytes, or an ``OnnxFile``'s graph with its one data file copied to
    ``path.name + '.data'`` (the graph's references renamed to it; the tensors' offsets are unchanged).
    The files written."""
    import onnx

    if not is_file_model(model):
        path.write_bytes(bytes(model))
        return [path]
    locations = external_locations(model)
    if len(locations) != 1:  # compress writes one data file; a caller's file with several is copied as it is
        path.write_bytes(bytes(model))
        written = [path]
        for name in locations:
            shutil.copyfile(model.path.parent / name, path.parent / name)
            written.append(path.parent / name)
        return written
    graph = onnx.load_from_string(bytes(model))
    target = path.name + DATA_SUFFIX
    for tensor in _all_tensors(graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = target
    path.write_bytes(graph.SerializeToString())
    shutil.copyfile(model.path.parent / locations[0], path.parent / target)
    return [path, path.parent / target]


def read_model(path: Path) -> bytes:
    """The model in ``path``: its bytes, or an ``OnnxFile`` of it when its weights are external data
    (read in place, never written to)."""
    model = path.read_bytes()
    try:
        external = bool(external_locations(model))
    except Exception:  # noqa: BLE001 - not an ONNX model: the caller's checksum or session says so
        return model
    return OnnxFile(path) if external else model

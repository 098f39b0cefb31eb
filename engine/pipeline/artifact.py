"""The packed artifact: a ``safetensors`` file of encoded tensors.

Simulated (sub-8-bit, k-means, fixed-point) results have no ONNX kernel, so
what a user ships is this file: each weight's codes packed to ``bits`` bits
plus scales/codebooks, and every other tensor as float. Its size is counted
from the bytes actually written. The JSON header carries the squeezelab
version, the recipe, the model's class, how to decode each tensor and a
SHA-256 of all of it, so the file verifies itself; ``load_packed`` checks that
checksum (and the ``.json`` written beside the file, when there is one), then
turns the file back into a model given a module of the same class.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab._version import __version__
from squeezelab.engine.quantization.encoding import Encoded
from squeezelab.engine.core.errors import ArtifactError, ArtifactPathError
from squeezelab.engine.core.paths import file_to_read

__all__ = ["FORMAT", "pack_encoded", "unpack_encoded", "load_packed", "class_path"]

# /2: the header carries a SHA-256 of the file's content and the model's class.
FORMAT = "squeezelab.packed/2"
_SEP = "::"


def class_path(model: nn.Module) -> str:
    """``module.QualName`` of a model's class, seen through PyTorch's parametrization subclasses."""
    cls = next(c for c in type(model).__mro__ if c.__module__ != "torch.nn.utils.parametrize")
    return f"{cls.__module__}.{cls.__qualname__}"


def _content_sha256(tensors: dict[str, Any], metadata: dict[str, str], payload: bytes) -> str:
    """SHA-256 over the tensor index (dtypes, shapes, offsets), the metadata and the tensor bytes."""
    index = json.dumps({"tensors": tensors, "metadata": metadata}, sort_keys=True).encode()
    return hashlib.sha256(index + payload).hexdigest()


def _split(data: bytes) -> tuple[dict[str, Any], dict[str, str], bytes]:
    """safetensors layout: 8-byte little-endian header length, the JSON header, then the tensor bytes."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    return header, metadata, data[8 + n :]


def pack_encoded(
    encoded: dict[str, Encoded], *, recipe: dict[str, Any] | None = None, model_class: str | None = None
) -> bytes:
    """Serialise encoded tensors into one safetensors blob whose header holds its own checksum."""
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, Any] = {}
    for name, enc in encoded.items():
        layout[name] = {"kind": enc.kind, "shape": list(enc.shape), **enc.meta}
        for part, array in enc.arrays.items():
            # safetensors needs contiguous arrays; 0-d scales become shape () which it supports.
            arrays[f"{name}{_SEP}{part}"] = np.ascontiguousarray(array)
    metadata = {
        "format": FORMAT,
        "squeezelab": __version__,
        "recipe": json.dumps(recipe or {}, sort_keys=True),
        "layout": json.dumps(layout, sort_keys=True),
        "model_class": model_class or "",
    }
    # Tensor offsets do not depend on the metadata: serialise once to hash, once with the hash.
    tensors, _, payload = _split(save(arrays))
    return save(arrays, metadata={**metadata, "sha256": _content_sha256(tensors, metadata, payload)})


def _verified(data: bytes, source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor index and metadata of a packed artifact, after checking its format and checksum."""
    try:
        tensors, metadata, payload = _split(bytes(data))
    except Exception as exc:  # a truncated or foreign file: any parse error
        raise ArtifactError(
            f"{source} is not a squeezelab packed artifact ({exc}); was it written by Compressed.save?"
        ) from exc
    if metadata.get("format") != FORMAT:
        raise ArtifactError(
            f"{source} has artifact format {metadata.get('format')!r}, not {FORMAT!r}; files from squeezelab "
            "before 'squeezelab.packed/2' carry no checksum: compress the model again and save it."
        )
    expected = metadata.pop("sha256", "")
    actual = _content_sha256(tensors, metadata, payload)
    if actual != expected:
        raise ArtifactError(
            f"{source} is corrupt: its content has sha256 {actual}, but the file records {expected}. It was "
            "damaged or edited after saving; save it again with Compressed.save or restore an intact copy."
        )
    return tensors, metadata


def _unpack(data: bytes, source: str) -> tuple[dict[str, Encoded], dict[str, str]]:
    from safetensors.numpy import load

    _, metadata = _verified(data, source)
    try:
        arrays = load(bytes(data))
        layout = json.loads(metadata["layout"])
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{source} is not a squeezelab packed artifact ({exc}).") from exc
    encoded: dict[str, Encoded] = {}
    for name, info in layout.items():
        info = dict(info)
        kind, shape = info.pop("kind"), tuple(info.pop("shape"))
        parts = {k.split(_SEP, 1)[1]: v for k, v in arrays.items() if k.split(_SEP, 1)[0] == name}
        encoded[name] = Encoded(kind, shape, parts, info)
    return encoded, metadata


def unpack_encoded(data: bytes, *, source: str = "the packed artifact") -> tuple[dict[str, Encoded], dict[str, Any]]:
    """Inverse of ``pack_encoded``: the encoded tensors and the stored recipe dict (checksum verified)."""
    encoded, metadata = _unpack(data, source)
    return encoded, json.loads(metadata.get("recipe", "{}"))


def _check_sidecar(path: Path, data: bytes) -> None:
    """Compare the file's bytes with the sha256 that ``Compressed.save`` wrote beside it, if there is one."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.exists():
        return
    try:
        expected = json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise ArtifactError(
            f"{str(sidecar)!r} beside {str(path)!r} is not readable JSON ({exc}); restore it, or move it away "
            "to load the file on its own checksum."
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise ArtifactError(
            f"{str(path)!r} does not match its checksum: expected sha256 {expected} (from {sidecar.name}), "
            f"actual {actual}. The file (or its .json) changed after saving; save it again with "
            "Compressed.save or restore an intact copy."
        )


def _check_class(stored: str, model: nn.Module) -> None:
    given = class_path(model)
    if not stored or stored == given:
        return
    (stored_module, _, stored_name), (given_module, _, given_name) = stored.rpartition("."), given.rpartition(".")
    # A class defined in a script is "__main__.Net" there and "mymodule.Net" when imported elsewhere.
    if stored_name == given_name and "__main__" in (stored_module, given_module):
        return
    raise ArtifactError(
        f"the artifact was made from a {stored} model, but a {given} model was passed; pass an instance of "
        f"{stored.rpartition('.')[2]}, or check_class=False if the classes are the same architecture under "
        "another name."
    )


def load_packed(source: str | Path | bytes, model: nn.Module, *, check_class: bool = True) -> nn.Module:
    """A copy of ``model`` (same class) with the weights stored in a packed artifact.

    The file's own checksum is verified, and so is the ``.json`` beside a path when there is one
    (``Compressed.save`` writes it). ``model`` itself is not changed.

    Raises:
        ArtifactPathError: ``source`` is a missing file, a folder, a path under a file, or neither a
            path nor bytes.
        ArtifactError: a corrupt or foreign file, a checksum mismatch, or a model of another class
            or architecture than the one compressed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "the packed artifact"
    else:  # a path: a missing file, a folder or a path under a file is named before anything is read
        path = file_to_read(
            source, what="source", wrote_by=" (the packed file Compressed.save wrote)",
            allowed="the path of the packed file Compressed.save wrote (a str or pathlib.Path), or its bytes",
        )
        try:
            data = path.read_bytes()
        except OSError as exc:  # removed or made unreadable since the check
            raise ArtifactPathError(
                f"source {str(path)!r} cannot be read: {exc.strerror or exc}; pass the packed file Compressed.save wrote.",
                path=path,
            ) from exc
        _check_sidecar(path, data)
        where = repr(str(path))
    encoded, metadata = _unpack(data, where)
    out = copy_model(model)
    state = out.state_dict()
    missing = sorted(set(state) - set(encoded))
    unexpected = sorted(set(encoded) - set(state))
    if missing or unexpected:
        raise ArtifactError(
            f"the artifact does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            "pass a model of the architecture that was compressed."
        )
    for name, enc in encoded.items():
        if tuple(enc.shape) != tuple(state[name].shape):
            raise ArtifactError(
                f"tensor {name!r} has shape {tuple(enc.shape)} in the artifact but "
                f"{tuple(state[name].shape)} in the model."
            )
    if check_class:
        _check_class(metadata.get("model_class", ""), model)
    with torch.no_grad():
        for name, enc in encoded.items():
            state[name].copy_(enc.decode().to(state[name].dtype))
    return out

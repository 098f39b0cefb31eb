"""The packed artifact: a ``safetensors`` file of encoded tensors.

Simulated (sub-8-bit, k-means, fixed-point) results have no ONNX kernel, so
what a user ships is this file: each weight's codes packed to ``bits`` bits
plus scales/codebooks, and every other tensor as float. Its size is counted
from the bytes actually written. The JSON header carries the squeezelab
version, the recipe and how to decode each tensor; ``load_packed`` turns the
file back into a model given a module of the same architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine._copy import copy_model
from squeezelab._version import __version__
from squeezelab.engine.encoding import Encoded
from squeezelab.engine.errors import ArtifactError

__all__ = ["FORMAT", "pack_encoded", "unpack_encoded", "load_packed"]

FORMAT = "squeezelab.packed/1"
_SEP = "::"


def pack_encoded(encoded: dict[str, Encoded], *, recipe: dict[str, Any] | None = None) -> bytes:
    """Serialise encoded tensors into one safetensors blob."""
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
    }
    return save(arrays, metadata=metadata)


def unpack_encoded(data: bytes) -> tuple[dict[str, Encoded], dict[str, Any]]:
    """Inverse of ``pack_encoded``: the encoded tensors and the stored recipe dict."""
    from safetensors.numpy import load

    try:
        arrays = load(bytes(data))
        header = _read_metadata(data)
        layout = json.loads(header["layout"])
        recipe = json.loads(header.get("recipe", "{}"))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"not a squeezelab packed artifact ({exc}); was it written by Compressed.save?") from exc
    if header.get("format") != FORMAT:
        raise ArtifactError(f"artifact format {header.get('format')!r} is not {FORMAT!r}.")
    encoded: dict[str, Encoded] = {}
    for name, info in layout.items():
        info = dict(info)
        kind, shape = info.pop("kind"), tuple(info.pop("shape"))
        parts = {k.split(_SEP, 1)[1]: v for k, v in arrays.items() if k.split(_SEP, 1)[0] == name}
        encoded[name] = Encoded(kind, shape, parts, info)
    return encoded, recipe


def _read_metadata(data: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then the JSON header.
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def load_packed(source: str | Path | bytes, model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same architecture) with the weights stored in a packed artifact.

    ``model`` itself is not changed.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    encoded, _ = unpack_encoded(data)
    out = copy_model(model)
    state = out.state_dict()
    missing = sorted(set(state) - set(encoded))
    unexpected = sorted(set(encoded) - set(state))
    if missing or unexpected:
        raise ArtifactError(
            f"the artifact does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            "pass a model of the architecture that was compressed."
        )
    with torch.no_grad():
        for name, enc in encoded.items():
            value = enc.decode()
            if tuple(value.shape) != tuple(state[name].shape):
                raise ArtifactError(
                    f"tensor {name!r} has shape {tuple(value.shape)} in the artifact but "
                    f"{tuple(state[name].shape)} in the model."
                )
            state[name].copy_(value.to(state[name].dtype))
    return out

"""The byte count of a packed artifact (``pipeline.artifact.pack_encoded``) without writing it.

A sensitivity probe's point carries the size of its whole simulated file. Writing the file costs two
serialisations of every tensor (about a second for MiniLM's 90 MB) to learn one number, while the
number is the safetensors layout's: 8 bytes, the JSON header padded to a multiple of 8, and the tensor
bytes. ``packed_size`` computes that header's length the way safetensors writes it (tensors sorted by
dtype, widest first, then by name; compact JSON); ``SizeOracle`` checks it against one real file
before trusting it, and writes every file when the two ever disagree (another safetensors version).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from squeezelab._version import __version__
from squeezelab.engine.pipeline.artifact import FORMAT, pack_encoded
from squeezelab.engine.quantization.encoding import Encoded

__all__ = ["packed_size", "SizeOracle"]

_PART_SEP = "::"  # pack_encoded's "layer.weight::codes" (checked against a real file by SizeOracle)
_SHA256_HEX = 64  # the checksum the header holds: always 64 hex characters

# safetensors' dtype names, and their order in its Dtype enum (the file sorts tensors by it, last first).
_DTYPES = [("bool", "BOOL"), ("uint8", "U8"), ("int8", "I8"), ("int16", "I16"), ("uint16", "U16"), ("float16", "F16"),
           ("int32", "I32"), ("uint32", "U32"), ("float32", "F32"), ("float64", "F64"), ("int64", "I64"), ("uint64", "U64")]
_NAME = dict(_DTYPES)
_RANK = {name: i for i, (name, _) in enumerate(_DTYPES)}


def _text(value: str) -> int:
    """Bytes of ``value`` as a JSON string (serde_json escapes what Python's json escapes)."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def packed_size(encoded: dict[str, Encoded], *, recipe: dict[str, Any] | None, model_class: str | None) -> int:
    """``len(pack_encoded(encoded, recipe=recipe, model_class=model_class))``, computed from the layout alone."""
    layout: dict[str, Any] = {}
    arrays: list[tuple[str, np.ndarray]] = []  # as pack_encoded hands them over (a 0-d array becomes shape (1,))
    for name, enc in encoded.items():
        layout[name] = {"kind": enc.kind, "shape": list(enc.shape), **enc.meta}
        arrays += [(f"{name}{_PART_SEP}{part}", np.ascontiguousarray(array)) for part, array in enc.arrays.items()]
    metadata = {
        "format": FORMAT, "squeezelab": __version__, "recipe": json.dumps(recipe or {}, sort_keys=True),
        "layout": json.dumps(layout, sort_keys=True), "model_class": model_class or "", "sha256": "0" * _SHA256_HEX,
    }
    arrays.sort(key=lambda item: item[0])
    arrays.sort(key=lambda item: -_RANK[item[1].dtype.name])  # stable: by dtype, widest first, then by name
    header = len('{"__metadata__":{') + sum(_text(k) + 1 + _text(v) for k, v in metadata.items()) + len(metadata) - 1 + 1
    offset = 0
    for key, array in arrays:
        end = offset + array.nbytes
        shape = "[" + ",".join(str(d) for d in array.shape) + "]"
        header += 1 + _text(key) + len(f':{{"dtype":"{_NAME[array.dtype.name]}","shape":{shape},"data_offsets":[{offset},{end}]}}')
        offset = end
    header += 1  # the closing brace
    padded = header + (-header) % 8
    return 8 + padded + offset


class SizeOracle:
    """``size(encoded, recipe, model_class)``: ``packed_size`` once it matched a real file, else the real file's length."""

    def __init__(self) -> None:
        self.trusted: bool | None = None  # None: not checked yet

    def size(self, encoded: dict[str, Encoded], recipe: dict[str, Any], model_class: str) -> int:
        if self.trusted is None:
            computed = packed_size(encoded, recipe=recipe, model_class=model_class)
            real = len(pack_encoded(encoded, recipe=recipe, model_class=model_class))
            self.trusted = computed == real
            return real
        if self.trusted:
            return packed_size(encoded, recipe=recipe, model_class=model_class)
        return len(pack_encoded(encoded, recipe=recipe, model_class=model_class))

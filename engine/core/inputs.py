"""Model inputs in the three forms models take: one tensor, a tuple (positional) or a dict (keyword).

``Inputs`` is the one type every path uses for a batch of inputs: export,
calibration, evaluation, ``predict`` and latency. It holds numpy arrays (so a
batch can be pickled, hashed and fed to ONNX Runtime), remembers the form the
model takes, and turns itself into what each runtime wants:

- ``inputs.call(model)`` — PyTorch: ``model(x)``, ``model(*xs)`` or ``model(**kw)``;
- ``inputs.feeds()`` — ONNX Runtime: ``{name: array}`` with the graph's input names
  (``input`` for one tensor, ``input_0, input_1, ...`` for a tuple, the keys for a dict).

Integer inputs (token ids, attention masks) keep their dtype everywhere; float
inputs become float32 (the dtype a float model is exported with).

``InputSpec`` is the form without the data: names, dtypes and shapes with their
dynamic axes (the batch axis always; the sequence axis of integer ``(batch, seq)``
inputs). ``Inputs.check(spec)`` refuses a batch that does not fit, naming the
expected shapes.

Examples:
    >>> import numpy as np
    >>> x = Inputs.of({"input_ids": np.ones((2, 5), dtype=np.int64), "attention_mask": np.ones((2, 5), dtype=np.int64)})
    >>> len(x), x.kind, x.names
    (2, 'dict', ('input_ids', 'attention_mask'))
    >>> x.spec().describe()
    'input_ids (batch, sequence) int64, attention_mask (batch, sequence) int64'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from squeezelab.engine.core.errors import DataError, ExampleInputError

__all__ = ["Inputs", "InputSpec", "is_array", "positional_names", "BATCH", "SEQUENCE"]

BATCH, SEQUENCE = "batch", "sequence"


def is_array(value: Any) -> bool:
    """A numpy array or a torch tensor."""
    return isinstance(value, (np.ndarray, torch.Tensor))


def positional_names(n: int) -> tuple[str, ...]:
    """ONNX input names of a model taking ``n`` positional inputs."""
    return ("input",) if n == 1 else tuple(f"input_{i}" for i in range(n))


def _to_numpy(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16 or value.dtype == torch.float16:
            value = value.float()
        value = value.numpy()
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where} must be an array or tensor, got {type(value).__name__}.")
    if value.dtype == np.float64 or value.dtype == np.float16:
        return value.astype(np.float32)  # float models are exported in float32 (scikit-learn gives float64)
    if value.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {value.dtype}; pass numbers (float or integer arrays).")
    return value


@dataclass(frozen=True)
class InputSpec:
    """The inputs a model takes: form, names, dtypes, and shapes (``None`` marks a dynamic axis).

    What the model can take beyond shapes, when known (``Inputs.check`` refuses what exceeds it):
    ``batch``, the fixed batch size of an ONNX graph exported without a batch axis (it runs in
    batches of that size); ``vocab``, per input, ``(rows, embedding)`` of the embedding table its
    ids index (ids must lie in ``[0, rows)``); ``positions``, ``(rows, embedding)`` of the position
    embedding table, the longest sequence the model holds.
    """

    kind: str  # "tensor" | "tuple" | "dict"
    names: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int | None, ...], ...]
    batch: int | None = None
    vocab: tuple[tuple[int, str] | None, ...] = ()
    positions: tuple[int, str] | None = None

    def axis_names(self, i: int) -> dict[int, str]:
        """The dynamic axes of input ``i``: ``{0: "batch", 1: "sequence"}`` for token ids."""
        return {axis: (BATCH if axis == 0 else SEQUENCE) for axis, size in enumerate(self.shapes[i]) if size is None}

    def describe(self) -> str:
        """``(batch, 1, 8, 8)``, or ``name (batch, sequence) int64, ...`` for several inputs."""
        parts = []
        for i, (name, dtype) in enumerate(zip(self.names, self.dtypes)):
            dims = ", ".join(self.axis_names(i).get(a, str(s)) for a, s in enumerate(self.shapes[i]))
            shown = f"({dims})" if dims else "()"
            parts.append(shown if self.kind == "tensor" else f"{name} {shown} {dtype}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "names": list(self.names), "dtypes": list(self.dtypes), "shapes": [list(s) for s in self.shapes]}
        if self.batch is not None:
            d["batch"] = self.batch
        if any(self.vocab):
            d["vocab"] = [list(v) if v else None for v in self.vocab]
        if self.positions is not None:
            d["positions"] = list(self.positions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        vocab = tuple(tuple(v) if v else None for v in d.get("vocab", ()))
        positions = tuple(d["positions"]) if d.get("positions") else None
        return cls(d["kind"], tuple(d["names"]), tuple(d["dtypes"]), tuple(tuple(s) for s in d["shapes"]),
                   d.get("batch"), vocab, positions)  # type: ignore[arg-type]


class Inputs:
    """One batch of model inputs (numpy arrays) in the form the model takes.

    Build it with ``Inputs.of(x)``: a tensor or array (one input), a tuple or
    list of them (positional inputs), or a mapping such as a dict or a Hugging
    Face ``BatchEncoding`` (keyword inputs).
    """

    __slots__ = ("kind", "names", "arrays")

    def __init__(self, kind: str, names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
        self.kind = kind
        self.names = tuple(names)
        self.arrays = tuple(arrays)
        sizes = {len(a) if a.ndim else None for a in self.arrays}
        if None in sizes:
            raise DataError(
                f"input {self.names[[a.ndim for a in self.arrays].index(0)]!r} is a scalar: it has no batch "
                "dimension; every input needs one first (e.g. x[None] or x.unsqueeze(0))."
            )
        if len(sizes) > 1:
            shown = ", ".join(f"{n}: {len(a)}" for n, a in zip(self.names, self.arrays))
            raise DataError(f"the inputs have different batch sizes ({shown}); every input needs the same first dimension.")

    # ------------------------------------------------------------------ building

    @classmethod
    def of(cls, x: Any, what: str = "inputs") -> Inputs:
        """Normalise a tensor, an array, a tuple/list of them, or a mapping of them."""
        if isinstance(x, Inputs):
            return x
        if is_array(x):
            return cls("tensor", positional_names(1), (_to_numpy(x, what),))
        if isinstance(x, Mapping):
            if not x:
                raise DataError(f"{what} is an empty mapping; pass the model's keyword inputs, e.g. input_ids=...")
            names = [str(k) for k in x]
            return cls("dict", names, [_to_numpy(v, f"{what}[{k!r}]") for k, v in x.items()])
        if isinstance(x, (tuple, list)) and x and all(is_array(v) for v in x):
            if len(x) == 1:
                return cls("tensor", positional_names(1), (_to_numpy(x[0], what),))
            return cls("tuple", positional_names(len(x)), [_to_numpy(v, f"{what}[{i}]") for i, v in enumerate(x)])
        raise DataError(
            f"cannot read {what} of the form {describe_form(x)}; pass a tensor or array, a tuple of them "
            "(positional inputs) or a dict of them (keyword inputs)."
        )

    @staticmethod
    def concat(parts: Sequence[Inputs]) -> Inputs:
        """One batch from several of the same form."""
        first = parts[0]
        for p in parts[1:]:
            if p.kind != first.kind or p.names != first.names:
                raise DataError(f"batches change form: {first.form()} then {p.form()}; every batch needs the same inputs.")
        arrays = []
        for i in range(len(first.names)):
            pieces = [p.arrays[i] for p in parts]
            try:
                arrays.append(np.concatenate(pieces))
            except ValueError:  # ragged sequence lengths: pad to the longest (padding is what masks are for)
                arrays.append(_pad_concat(pieces, first.names[i]))
        return Inputs(first.kind, first.names, arrays)

    # ------------------------------------------------------------------ facts

    def __len__(self) -> int:
        return len(self.arrays[0])

    def form(self) -> str:
        """A short description of the form: ``tensor (1, 8, 8) float32`` or the names and shapes."""
        shapes = ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for n, a in zip(self.names, self.arrays))
        return f"{self.kind}: {shapes}"

    def spec(self) -> InputSpec:
        """The spec of this batch: batch axis dynamic, and the sequence axis of integer (batch, seq) inputs."""
        shapes = []
        for a in self.arrays:
            dims: list[int | None] = [None, *a.shape[1:]]
            if a.dtype.kind in "iub" and a.ndim == 2:
                dims[1] = None  # token ids, masks: the sequence length varies between batches
            shapes.append(tuple(dims))
        return InputSpec(self.kind, self.names, tuple(str(a.dtype) for a in self.arrays), tuple(shapes))

    # ------------------------------------------------------------------ transforming

    def slice(self, start: int, stop: int) -> Inputs:
        return Inputs(self.kind, self.names, [a[start:stop] for a in self.arrays])

    def take(self, index: np.ndarray) -> Inputs:
        return Inputs(self.kind, self.names, [a[index] for a in self.arrays])

    def tile(self, batch_size: int) -> Inputs:
        """``batch_size`` samples, cycling through these (for timing at a given batch size)."""
        index = np.arange(batch_size) % len(self)
        return self.take(index)

    def check(self, spec: InputSpec, what: str = "inputs") -> Inputs:
        """These inputs, cast to the spec's dtypes, or an ``ExampleInputError`` naming the expected form."""
        expected = spec.describe()
        unknown = [n for n in self.names if n not in spec.names] if self.kind == "dict" and spec.kind == "dict" else []
        if unknown:  # (ONNX Runtime would say only "Invalid input name")
            missing = [n for n in spec.names if n not in self.names]
            raise ExampleInputError(
                f"{what} hold the key(s) {unknown}, which are not inputs of the model: the model takes the inputs "
                f"{list(spec.names)}{f' ({missing} missing)' if missing else ''}. Leave {unknown} out, or rename them to "
                "the model's input names."
            )
        if len(self.arrays) != len(spec.names):
            raise ExampleInputError(
                f"the model takes {len(spec.names)} input(s) shaped {expected}, got {len(self.arrays)} ({self.form()}); "
                "pass one array per input: a tuple of them, or a dict by name."
            )
        if self.kind != spec.kind and not (self.kind == "tuple" and spec.kind == "dict"):
            raise ExampleInputError(f"the model takes {_form_words(spec)} ({expected}); {what} are {self.form()}.")
        if self.kind == "dict" and set(self.names) != set(spec.names):
            raise ExampleInputError(
                f"the model takes the inputs {list(spec.names)}; {what} have {list(self.names)}."
            )
        order = [self.names.index(n) for n in spec.names] if self.kind == "dict" else range(len(spec.names))
        arrays = []
        for i, j in enumerate(order):
            a, shape = self.arrays[j], spec.shapes[i]
            ok = a.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, a.shape))
            if not ok:
                label = "input" if spec.kind == "tensor" else f"input {spec.names[i]!r}"
                raise ExampleInputError(
                    f"{label} of shape {tuple(a.shape)} does not fit the model, which takes {expected} (the shape "
                    "of the example inputs, any batch size); pass inputs of that shape, with the batch dimension first."
                )
            arrays.append(_cast(a, spec.dtypes[i], spec.names[i], what))
        _check_limits(arrays, spec, what)
        return Inputs(spec.kind, spec.names, arrays)

    def check_finite(self, what: str = "inputs") -> Inputs:
        """These inputs, or a ``DataError`` counting the NaN/Inf values of each float input."""
        for name, a in zip(self.names, self.arrays):
            if a.dtype.kind != "f" or a.size == 0:
                continue
            finite = np.isfinite(a)
            if finite.all():
                continue
            rows = np.flatnonzero(~finite.reshape(len(a), -1).all(axis=1))
            label = f"{what}" if self.kind == "tensor" else f"{what} input {name!r}"
            raise DataError(
                f"{label} holds {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} Inf value(s) in "
                f"{len(rows)} of {len(a)} samples (the first: sample {int(rows[0])}); a model's figures on them "
                "mean nothing. Fix or drop those samples first (e.g. keep x[np.isfinite(x).reshape(len(x), -1).all(1)])."
            )
        return self

    def feeds(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{graph input name: C-contiguous array}`` for ONNX Runtime (copies, never views of the caller's data)."""
        return {n: np.array(a, copy=True, order="C") for n, a in zip(names or self.names, self.arrays)}

    def torch(self) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """``(args, kwargs)`` as tensors (copies: a model that edits its input cannot change the caller's)."""
        tensors = [torch.from_numpy(np.array(a, copy=True)) for a in self.arrays]
        if self.kind == "dict":
            return (), dict(zip(self.names, tensors))
        return tuple(tensors), {}

    def call(self, model: torch.nn.Module) -> Any:
        """``model`` applied to these inputs, without gradients."""
        args, kwargs = self.torch()
        with torch.no_grad():
            return model(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Inputs({self.form()})"


def _cast(a: np.ndarray, dtype: str, name: str, what: str) -> np.ndarray:
    want = np.dtype(dtype)
    if a.dtype == want:
        return a
    if want.kind == "f":
        return a.astype(want)
    if want.kind in "iub" and a.dtype.kind in "iub":
        return a.astype(want)
    if want.kind in "iu" and a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
        return a.astype(want)  # integer-valued floats (token ids read from a float array)
    raise ExampleInputError(f"{what} {name!r} has dtype {a.dtype}; the model takes {want}.")


def _check_limits(arrays: Sequence[np.ndarray], spec: InputSpec, what: str) -> None:
    """Token ids inside their embedding table, sequences no longer than the position table (``DataError``)."""
    for i, a in enumerate(arrays):
        name = what if spec.kind == "tensor" else f"{what} {spec.names[i]!r}"
        limit = spec.vocab[i] if i < len(spec.vocab) else None
        if limit is not None and a.size and a.dtype.kind in "iu":
            rows, table = limit
            low, high = int(a.min()), int(a.max())
            if low < 0 or high >= rows:
                bad = (a < 0) | (a >= rows)
                raise DataError(
                    f"{name} hold token ids from {low} to {high} ({int(bad.sum())} outside, in "
                    f"{int(bad.reshape(len(a), -1).any(axis=1).sum())} of {len(a)} samples); the model's embedding "
                    f"{table!r} has {rows} rows (ids 0 to {rows - 1}). Tokenize with the model's own tokenizer, or "
                    "map unknown tokens to its unknown-token id."
                )
        sequence = len(spec.shapes[i]) == 2 and spec.shapes[i][1] is None and a.dtype.kind in "iub"
        if spec.positions is not None and sequence and a.shape[1] > spec.positions[0]:
            rows, table = spec.positions
            raise DataError(
                f"{name} hold sequences of {a.shape[1]} tokens; the model's position embedding {table!r} "
                f"holds {rows} positions. Truncate the inputs to {rows} tokens (e.g. tokenizer(..., truncation=True, "
                f"max_length={rows}))."
            )


def _pad_concat(pieces: Sequence[np.ndarray], name: str) -> np.ndarray:
    ranks = {p.ndim for p in pieces}
    if ranks != {2} or any(p.dtype.kind not in "iub" for p in pieces):
        shapes = [tuple(p.shape) for p in pieces]
        raise DataError(f"batches of input {name!r} have shapes {shapes} that cannot be stacked.")
    length = max(p.shape[1] for p in pieces)
    return np.concatenate([np.pad(p, ((0, 0), (0, length - p.shape[1]))) for p in pieces])


def _form_words(spec: InputSpec) -> str:
    return {"tensor": "one tensor", "tuple": f"{len(spec.names)} positional inputs", "dict": "keyword inputs"}[spec.kind]


def describe_form(x: Any, depth: int = 0) -> str:
    """A short structural description of ``x`` for error messages (``tuple of 3: array (4, 2) float32, ...``)."""
    if is_array(x):
        return f"{type(x).__name__} {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if x is None:
        return "None"
    if isinstance(x, Mapping):
        keys = list(x)[:6]
        return f"{type(x).__name__} with keys {keys}"
    if isinstance(x, (tuple, list)):
        if depth >= 1:
            return f"{type(x).__name__} of {len(x)}"
        inner = ", ".join(describe_form(v, depth + 1) for v in list(x)[:4])
        more = ", ..." if len(x) > 4 else ""
        return f"{type(x).__name__} of {len(x)} ({inner}{more})"
    return type(x).__name__

"""The input second moments ``H = sum(X^T X)`` of chosen ``MatMul`` inputs, gathered from an fp32 graph.

GPTQ needs, for each weight ``W`` (K, N) of ``Y = X @ W``, the K x K matrix ``X^T X`` over calibration rows:
the layer's output error for a weight change ``D`` is ``trace(D^T H D)``. The tensors are read by running
the fp32 graph in ONNX Runtime with them added as graph outputs, one batch (or slice of a batch) at a time,
and summed in float64; no batch's activations outlive its turn.

Rows that a padding mask marks as padding (an integer input named like ``attention_mask`` whose shape is
the activation's leading (batch, sequence) dims) are left out: the model discards them (attention masks
them, pooling skips them), so fitting the weights to them would spend precision on nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import as_file
from squeezelab.engine.runtime.size_limit import current_limit
from squeezelab.engine.runtime.providers import make_session

__all__ = ["Moments", "collect_hessians"]

# Activations held at once (bytes): a batch bigger than this is run in slices.
_BUDGET_BYTES = 256 * 2**20


@dataclass
class Moments:
    """``X^T X`` (K, K) float64 of one tensor over ``rows`` calibration rows."""

    xtx: np.ndarray
    rows: int = 0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        self.xtx += x.T @ x
        self.rows += x.shape[0]


def _padding_mask_name(graph: Any, feeds: Sequence[dict[str, np.ndarray]]) -> str | None:
    """The feed that marks padding: an integer (batch, sequence) input named ``*mask*`` holding only 0 and 1."""
    names = {i.name for i in graph.input}
    for name, value in feeds[0].items():
        if name in names and "mask" in name.lower() and value.ndim == 2 and value.dtype.kind in "iub":
            if all(np.isin(np.asarray(f[name]), (0, 1)).all() for f in feeds):
                return name
    return None


def _rows(value: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``value`` (..., K) as rows (R, K), padding rows dropped when ``mask`` matches its leading dims."""
    if mask is not None and value.ndim == 3 and value.shape[:2] == mask.shape:
        return value[mask.astype(bool)]
    return value.reshape(-1, value.shape[-1])


def _with_outputs(model: Any, names: Sequence[str]) -> bytes:
    """A copy of ``model`` whose outputs are ``names`` (float tensors, shapes left to ONNX Runtime)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.ClearField("output")
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    if sum(len(t.raw_data) for t in probe.graph.initializer) > current_limit():
        return as_file(probe)  # past 2 GB: ONNX Runtime opens it from a file with its weights beside it
    return probe.SerializeToString()


def _fixed_batch(graph: Any) -> bool:
    """True when an input's first dimension is a number: such a graph takes only whole batches."""
    return any(i.type.tensor_type.shape.dim and i.type.tensor_type.shape.dim[0].dim_value > 0 for i in graph.input)


def _slices(feed: dict[str, np.ndarray], rows_per_run: int) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(feed.values())))
    return [{k: v[i : i + rows_per_run] for k, v in feed.items()} for i in range(0, n, rows_per_run)]


def collect_hessians(
    model: Any, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]], *, threads: int | None = None
) -> tuple[dict[str, Moments], str | None]:
    """``X^T X`` of each float tensor in ``tensors`` over every row of ``feeds`` (one run of the graph per batch).

    Args:
        model: the fp32 ``onnx.ModelProto`` (not changed).
        tensors: names of the tensors (``MatMul`` inputs), graph inputs included.
        feeds: calibration batches, ``{input name: array}`` each.

    Returns:
        The moments by tensor name, and the name of the padding-mask input whose padding rows were left
        out (``None`` when every row counted).
    """
    graph = model.graph
    inputs = {i.name for i in graph.input}
    computed = [t for t in dict.fromkeys(tensors) if t not in inputs]
    mask_name = _padding_mask_name(graph, feeds)
    session = make_session(_with_outputs(model, computed), threads=threads) if computed else None
    moments: dict[str, Moments] = {}
    rows_per_run = None if _fixed_batch(graph) else 0  # 0: not yet known (sized on the first sample)
    for feed in feeds:
        if rows_per_run == 0:
            rows_per_run = _rows_per_run(session, computed, feed)
        for part in [feed] if rows_per_run is None else _slices(feed, rows_per_run):
            values = dict(zip(computed, session.run(computed, part))) if session is not None else {}
            mask = part.get(mask_name) if mask_name else None
            for name in dict.fromkeys(tensors):
                value = values[name] if name in values else np.asarray(part[name], np.float32)
                x = _rows(value, mask)
                moments.setdefault(name, Moments(np.zeros((x.shape[1], x.shape[1])))).add(x)
            del values
    return moments, mask_name


def _rows_per_run(session: Any, computed: list[str], feed: dict[str, np.ndarray]) -> int | None:
    """Samples per run that keep the requested activations under the budget, sized on one sample."""
    if session is None:
        return None
    one = session.run(computed, {k: v[:1] for k, v in feed.items()})
    per_sample = max(1, sum(v.nbytes for v in one))
    return max(1, _BUDGET_BYTES // per_sample)

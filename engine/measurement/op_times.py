"""Where an ONNX model's inference time goes: ONNX Runtime's own per-node kernel times, by op type.

A static int8 model that is not faster than fp32 usually says why in its profile: float ops left
between int8 layers, each wrapped in a DequantizeLinear and a QuantizeLinear (EfficientNet-Lite0's
"same" paddings, until the export let them fold into the convolutions), or int8 kernels this CPU runs slowly. ``op_times``
runs the model with ONNX Runtime's profiler and sums the kernel time of every node by op type;
``time_split`` says what share went to int8 kernels, to (de)quantization, and to float ops.

The profiler's times pass through ``timing.active_timer().factors``: 1 for real time, a random factor
per op type under ``SQUEEZELAB_SCRAMBLE_TIMINGS`` (so no test can depend on which op this CPU runs
faster); a cost model leaves them as measured (it models whole runs, not kernels).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from squeezelab.engine.core.errors import ConfigError, ProviderError
from squeezelab.engine.measurement.timing import Timer, active_timer
from squeezelab.engine.runtime.providers import QUANTIZED_OPS, profile_events

__all__ = ["op_times", "time_split", "INT8_KERNELS", "QUANTIZE_OPS", "WEIGHT_ONLY_KERNELS", "KINDS"]

# Ops that only move values between float and int8.
QUANTIZE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# Ops that compute in low precision: the provider check's list of int8 ops without the conversions, plus
# the rarer int8 kernels that check does not watch.
INT8_KERNELS = (QUANTIZED_OPS - QUANTIZE_OPS) | frozenset({
    "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere",
    "QEmbedLayerNormalization", "QOrderedMatMul", "DynamicQuantizeLSTM",
})
# Ops that store low-bit weights and (at the default accuracy level) multiply in float.
WEIGHT_ONLY_KERNELS = frozenset({"MatMulNBits", "GatherBlockQuantized"})
KINDS = ("int8", "quantize", "weight-only", "float")


def op_times(model: Any, inputs: Any, *, runs: int = 5, warmup: int = 3, threads: int | None = 1) -> pd.DataFrame:
    """Kernel time per op type of ``model`` (a ``Compressed`` with an ONNX graph, or ONNX bytes) on ``inputs``.

    ``warmup`` runs, then ``runs`` runs; times are per run (the mean), in milliseconds, as
    ONNX Runtime's profiler reports them (kernel time only: no session or Python overhead). Rows are
    sorted by time, with columns ``op_type``, ``nodes`` (executed per run), ``ms``, ``share`` (of the
    summed kernel time, 0-1), ``kind`` and ``provider``. ``kind`` is ``"int8"`` (an int8 kernel, or an
    op moving int8 data such as a uint8 Transpose), ``"quantize"`` (QuantizeLinear, DequantizeLinear,
    DynamicQuantizeLinear), ``"weight-only"`` (``MatMulNBits``, ``GatherBlockQuantized``: low-bit
    weights, float or int8 compute by their accuracy level) or ``"float"``; an op type that runs
    both ways has a row for each.
    ``inputs``: what ``Compressed.predict`` takes (for ONNX bytes: a dict of arrays by input name).
    One thread by default, as the benchmarks time; profile on the batch size you care about.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"op_times: runs={runs!r}; give a whole number >= 1 of profiled runs.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"op_times: warmup={warmup!r}; give a whole number >= 0 of runs left out.")
    onnx_bytes, feeds = _graph_and_feeds(model, inputs)
    timer = active_timer()  # a bad scramble switch is refused before the profiled runs
    events = profile_events(onnx_bytes, feeds, runs=warmup + runs, threads=threads)
    return _table(_after_warmup(events, warmup, runs), runs, timer)


def time_split(table: pd.DataFrame) -> dict[str, float]:
    """The share (0-1) of kernel time by ``kind`` (int8, quantize, weight-only, float), from ``op_times``."""
    return {kind: float(table.loc[table["kind"] == kind, "share"].sum()) for kind in KINDS}


def _graph_and_feeds(model: Any, inputs: Any) -> tuple[bytes, Mapping[str, np.ndarray]]:
    if isinstance(model, (str, Path)):
        raise ConfigError(f"op_times: model={str(model)!r} is a path; pass the file's bytes (Path(...).read_bytes()).")
    if isinstance(model, bytes):
        if not isinstance(inputs, Mapping):
            raise ConfigError("op_times: with ONNX bytes, give inputs as a dict of arrays by input name.")
        return model, {k: np.asarray(v) for k, v in inputs.items()}
    onnx_bytes = getattr(model, "onnx_bytes", None)
    if onnx_bytes is None:
        label = getattr(getattr(model, "recipe", None), "label", type(model).__name__)
        raise ConfigError(
            f"op_times: {label} has no ONNX graph to profile (a simulated result, or not a Compressed); "
            "compress with runtime=Onnx(), Int8Static(), Int8Dynamic() or WeightOnly()."
        )
    return onnx_bytes, model.prepare(inputs)


def _after_warmup(events: list[dict[str, Any]], warmup: int, runs: int) -> list[dict[str, Any]]:
    """The node events of the runs after the first ``warmup``.

    Early runs allocate and fault in memory: a QDQ graph that dequantizes its weights on every run
    (ONNX Runtime's ``quantize_static`` output for EfficientNet-Lite0) took 670 ms in its first two
    profiled runs and 470 ms from the third on.
    """
    starts = sorted(float(e["ts"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) != warmup + runs:
        raise ProviderError(
            f"op_times: ONNX Runtime's profile holds {len(starts)} model_run events where {warmup + runs} runs were "
            "made, so the warm-up runs cannot be told apart; this onnxruntime's profile format differs from the one "
            "op_times reads (1.32). Report it with the onnxruntime version."
        )
    if warmup == 0:
        return events
    return [e for e in events if e.get("cat") != "Node" or float(e.get("ts", 0)) >= starts[warmup]]


def _kind(op_type: str, args: Mapping[str, Any]) -> str:
    """``"quantize"`` for the conversions, ``"int8"`` for int8 kernels and ops on int8 data (a uint8
    Transpose or MaxPool), ``"weight-only"`` for the low-bit weight kernels, ``"float"`` for the rest."""
    if op_type in QUANTIZE_OPS:
        return "quantize"
    if op_type in INT8_KERNELS:
        return "int8"
    if op_type in WEIGHT_ONLY_KERNELS:
        return "weight-only"
    first = next(iter((args.get("input_type_shape") or [{}])[0]), None)  # the dtype of the first input
    return "int8" if first in ("uint8", "int8") else "float"


def _table(events: list[dict[str, Any]], runs: int, timer: Timer) -> pd.DataFrame:
    micros: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    providers: dict[tuple[str, str], set[str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        op = str(args.get("op_name", "?"))
        key = (op, _kind(op, args))
        micros[key] = micros.get(key, 0.0) + float(event.get("dur", 0))
        count[key] = count.get(key, 0) + 1
        providers.setdefault(key, set()).add(str(args.get("provider", "?")))
    factor = timer.factors(sorted(micros))
    micros = {key: us * factor[key] for key, us in micros.items()}
    total = sum(micros.values()) or 1.0
    rows = [
        {"op_type": op, "nodes": count[(op, kind)] // runs, "ms": us / runs / 1000.0, "share": us / total,
         "kind": kind, "provider": ", ".join(sorted(providers[(op, kind)]))}
        for (op, kind), us in micros.items()
    ]
    columns = ["op_type", "nodes", "ms", "share", "kind", "provider"]
    return pd.DataFrame(rows, columns=columns).sort_values("ms", ascending=False, ignore_index=True)

"""ONNX Runtime sessions, and where their nodes really run.

Silent CPU fallback is the most reported int8 problem with ONNX Runtime: the
CUDA provider has no kernels for many quantized ops and quietly hands them to
the CPU. ``node_placement`` profiles one run and reads, for every node, the
provider that executed it; ``check_placement`` turns a fallback of quantized
nodes into a ``ProviderFallbackError`` that names them.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from squeezelab.engine.runtime.external_data import session_source
from squeezelab.engine.core.errors import ProviderFallbackError, ProviderUnavailableError

__all__ = [
    "CPU",
    "QUANTIZED_OPS",
    "Placement",
    "available_providers",
    "make_session",
    "node_placement",
    "profile_events",
    "check_placement",
]

CPU = "CPUExecutionProvider"

# Ops that carry int8 work in ONNX Runtime's graphs (before and after its QDQ fusions).
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QGemm",
        "QAttention",
    }
)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _normalise(providers: Sequence[str | tuple[str, dict]] | None) -> list[str | tuple[str, dict]]:
    if providers is None:
        return [CPU]
    if isinstance(providers, str):
        providers = [providers]
    available = available_providers()
    for p in providers:
        name = p[0] if isinstance(p, tuple) else p
        if name not in available:
            raise ProviderUnavailableError(
                f"execution provider {name!r} is not available in this onnxruntime build "
                f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT, "
                "or leave providers=None for the CPU."
            )
    return list(providers)


def make_session(
    onnx_bytes: bytes,
    *,
    providers: Sequence[str | tuple[str, dict]] | None = None,
    threads: int | None = None,
    profile_dir: str | None = None,
) -> Any:
    """An ``InferenceSession`` over ``onnx_bytes`` (or an ``OnnxFile``: over its path).

    Spinning of idle worker threads is turned off: a spinning thread left
    behind by one session slows whatever runs next on a small machine, which
    biased side-by-side timings by up to 2x here.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    # A failed run's error reaches the caller as an exception (squeezelab words it); the C++ logger would print it
    # to stderr a second time, raw.
    options.log_severity_level = 4
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "squeezelab_profile")
    # A model past 2 GB is opened by its path: ONNX Runtime reads the weights beside it (external data).
    return ort.InferenceSession(session_source(onnx_bytes), sess_options=options, providers=_normalise(providers))


@dataclass(frozen=True)
class Placement:
    """Which provider ran each node of one profiled run."""

    nodes: Mapping[str, tuple[str, str]]  # node name -> (op type, provider)

    def by_op(self) -> dict[str, Counter]:
        """``{op_type: Counter({provider: count})}``."""
        out: dict[str, Counter] = {}
        for op, provider in self.nodes.values():
            out.setdefault(op, Counter())[provider] += 1
        return out

    def summary(self) -> str:
        return "; ".join(
            f"{op}: " + ", ".join(f"{n}x {p}" for p, n in sorted(c.items()))
            for op, c in sorted(self.by_op().items())
        )


def parse_profile(events: Sequence[Mapping[str, Any]]) -> Placement:
    """Read node placements from ONNX Runtime profiling events."""
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and "op_name" in args:
            name = str(event.get("name", "")).removesuffix("_kernel_time")
            nodes[name] = (str(args["op_name"]), str(args["provider"]))
    return Placement(nodes)


def node_placement(
    onnx_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    *,
    providers: Sequence[str | tuple[str, dict]] | None = None,
) -> Placement:
    """Run the model once with profiling on and report the provider of every executed node."""
    return parse_profile(profile_events(onnx_bytes, feeds, providers=providers))


def profile_events(
    onnx_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int = 1,
    providers: Sequence[str | tuple[str, dict]] | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """ONNX Runtime's profiling events of ``runs`` runs of the model on ``feeds`` (one session)."""
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(onnx_bytes, providers=providers, threads=threads, profile_dir=tmp)
        for _ in range(runs):
            session.run(None, dict(feeds))
        return json.loads(Path(session.end_profiling()).read_text())


def check_placement(placement: Placement, wanted: str) -> None:
    """Raise ``ProviderFallbackError`` if a quantized node ran anywhere but on ``wanted``."""
    fallen = sorted(
        f"{name} ({op} on {provider})"
        for name, (op, provider) in placement.nodes.items()
        if op in QUANTIZED_OPS and provider != wanted
    )
    if fallen:
        shown = ", ".join(fallen[:8]) + (f", ... ({len(fallen)} in all)" if len(fallen) > 8 else "")
        raise ProviderFallbackError(
            f"{len(fallen)} quantized node(s) did not run on {wanted}: {shown}. ONNX Runtime fell "
            "back to another provider silently; for int8 on NVIDIA GPUs use the "
            "TensorrtExecutionProvider, or pass allow_fallback=True to accept the placement."
        )

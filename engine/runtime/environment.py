"""The environment a measurement was taken in, recorded beside every figure."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from squeezelab._version import __version__
from squeezelab.engine.core.cpu import cpu_flags, cpu_name, default_reduce_range, int8_dot_product_is_exact

__all__ = ["environment"]


def environment() -> dict[str, object]:
    """Versions, CPU and int8 capabilities, as plain data."""
    versions = {}
    for package in ("torch", "onnx", "onnxruntime", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    flags = cpu_flags()
    return {
        "squeezelab": __version__,
        "python": platform.python_version(),
        **versions,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512") for f in flags),
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "int8_dot_product_exact": int8_dot_product_is_exact(),
        "int8_defaults": _int8_defaults(),
    }


def _int8_defaults() -> str:
    """What ``Int8Dynamic()`` / ``Int8Static()`` choose on this machine (each result records its own choices)."""
    weights = "7-bit weights (no VNNI)" if default_reduce_range() else "8-bit weights"
    return (
        f"Int8Dynamic: MatMul/Gemm/Gather, per-channel, {weights}, transformer fusion auto; "
        f"Int8Static: uint8 activations (U8S8), per-channel, {weights}"
    )

"""What the CPU can do for int8, read from the operating system.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights.
Without VNNI (AVX2-only CPUs such as AMD Zen 1-3) they use ``vpmaddubsw``,
which adds pairs of products into a saturating int16: 255 * 127 * 2
overflows, and outputs go wrong. Measured here on an AVX2-only EPYC: a
fused int8 Linear had 6-7x the error of the same QDQ graph executed
unfused (0.088 vs 0.013). With 7-bit weights (``reduce_range=True``) no
pair can overflow and fused equals unfused. ONNX Runtime's own guidance is
the same: ``reduce_range=True`` without VNNI, ``False`` with it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_name", "int8_dot_product_is_exact", "default_reduce_range", "default_weight_only_compute"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_dot_product_is_exact() -> bool:
    """True where ONNX Runtime's int8 GEMM accumulates without int16 saturation.

    x86 with AVX-512 VNNI or AVX-VNNI, and ARM (whose kernels use sdot/udot or
    widen before adding). Unknown x86 CPUs count as not exact: the safe side.
    """
    flags = cpu_flags()
    if {"avx512_vnni", "avx_vnni", "avx512vnni"} & flags:
        return True
    return platform.machine().lower() in ("arm64", "aarch64")


def default_reduce_range() -> bool:
    """``reduce_range`` to use when a recipe leaves it to the machine (``None``)."""
    return not int8_dot_product_is_exact()


def default_weight_only_compute() -> tuple[str, str]:
    """``WeightOnly``'s ``compute`` when a recipe leaves it to the machine (``None``), and why.

    ``MatMulNBits`` with ``accuracy_level=4`` quantizes activations to int8 per block and multiplies in int8:
    faster where int8 dot products are native, slower where they are emulated. Measured on MiniLM (4 bits,
    blocks of 32, one thread): 1.18x fp32 with int8 compute against 0.88x with float on an AVX-512 VNNI EPYC,
    and the reverse on an AVX2-only EPYC (0.63-0.89x against 0.88-1.02x).
    """
    flags = cpu_flags()
    vnni = sorted({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags)
    if vnni:
        return "int8", f"this CPU has {'/'.join(vnni)}: int8 dot products are native"
    if platform.machine().lower() in ("arm64", "aarch64") and "asimddp" in flags:
        return "int8", "this ARM CPU has the dot-product instructions (asimddp)"
    return "float", "this CPU has no VNNI / ARM dot product: int8 compute measured slower than float there"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

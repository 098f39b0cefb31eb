"""What every benchmark prints about the machine it ran on: the CPU with its SIMD flags, and the load.

int8 speed (and numerics) depend on the CPU kind (AVX2-only vs AVX-512 VNNI), and a shared machine's load
widens every interval, so each benchmark prints both beside its figures.
"""

from __future__ import annotations

import os

from squeezelab.engine.core.cpu import cpu_flags
from squeezelab.engine.runtime.environment import environment


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.79 1.39 0.67"``."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_line() -> str:
    """``CPU: <name> (<cores> cores), avx2=... avx512=... vnni=...; flags: <the SIMD flags>``."""
    env = environment()
    shown = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "f16c", "amx")) or "vnni" in f)
    return (f"CPU: {env['cpu']} ({env['cores']} cores), avx2={env['avx2']} avx512={env['avx512']} vnni={env['vnni']}; "
            f"flags: {' '.join(shown)}")

"""Shared fixtures: the trained default models (once per session) and seeded RNGs."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

pytest_plugins = ["pytester"]

# pytester runs pytest in-process and restores sys.modules after each run. Extension modules
# (onnx, onnxruntime, torch, scipy, scikit-learn) cannot be imported twice in one process, so they are
# imported here, outside any pytester run, and stay loaded.
import onnx  # noqa: E402, F401
import onnxruntime  # noqa: E402, F401
import scipy.stats  # noqa: E402, F401
import sklearn  # noqa: E402, F401

# Audit switch: SQUEEZELAB_TEST_ASSUME_CPU=vnni (or avx2) makes squeezelab take the int8 choices it takes on
# that CPU kind (reduce_range, the recorded environment) on whatever CPU runs the suite. Tests must pass
# both ways; the int8 *numerics* stay this CPU's, so this finds tests that hard-wire one kind's choices.
# (Perturbing PyTorch's float kernels the same way: ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41.)
import squeezelab.engine.core.cpu as _cpu  # noqa: E402

# Read from the hardware directly, not through squeezelab.engine.core.cpu, which the switch below replaces
# (this module can be imported twice: as pytest's conftest and as ``tests.conftest``).
_HARDWARE_FLAGS = _cpu.cpu_flags.__wrapped__() if hasattr(_cpu.cpu_flags, "__wrapped__") else frozenset()


def hardware_int8_exact() -> bool:
    """Whether *this machine's* int8 dot product is exact (VNNI/ARM), whatever the audit switch assumes.

    For the few tests about the hardware itself (e.g. that AVX2-only CPUs saturate full-range weights).
    """
    import platform

    return bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & _HARDWARE_FLAGS) or platform.machine().lower() in (
        "arm64",
        "aarch64",
    )


_ASSUMED_CPU = os.environ.get("SQUEEZELAB_TEST_ASSUME_CPU")
if _ASSUMED_CPU:
    import squeezelab.engine.runtime.environment as _environment

    if _ASSUMED_CPU not in ("vnni", "avx2"):
        raise pytest.UsageError(f"SQUEEZELAB_TEST_ASSUME_CPU={_ASSUMED_CPU!r}; use 'vnni' or 'avx2'.")
    _base = {f for f in _cpu.cpu_flags() if "vnni" not in f}
    _flags = frozenset(_base | {"avx2", "avx512f", "avx512_vnni"} if _ASSUMED_CPU == "vnni" else _base | {"avx2"})
    _hardware_reader = _cpu.cpu_flags.__wrapped__

    def _assumed_flags() -> frozenset[str]:
        return _flags

    _assumed_flags.__wrapped__ = _hardware_reader  # type: ignore[attr-defined]  # the hardware stays readable
    _cpu.cpu_flags = _assumed_flags
    _environment.cpu_flags = _cpu.cpu_flags


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of a state_dict: equal hashes mean an unchanged model."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def digits_cnn():
    from squeezelab.engine.zoo.digits import default_model

    return default_model("cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    from squeezelab.engine.zoo.digits import default_model

    return default_model("mlp")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run gates in-process: on CI, only the session's own gate (the dogfood one) may write the step summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


# Timing. Which variant runs faster depends on the CPU (int8 on AVX-512 VNNI vs AVX2-only), so no test may
# assert an outcome that depends on measured time: logic that acts on timings (the latency search, speed
# gates, "faster" readings) is tested under a cost model. SQUEEZELAB_SCRAMBLE_TIMINGS=<seed> multiplies every
# measured time by a seeded random factor (engine/measurement/timing.py); the suite passes with it on.
from squeezelab.engine.measurement.timing import CostModel, active_timer, using_timer  # noqa: E402


@pytest.fixture
def timed_by_size():
    """Every timing in the test modelled as proportional to the file's bytes: smaller is faster, on every CPU."""
    with using_timer(CostModel.by_size()) as timer:
        yield timer


@pytest.fixture
def gate_timer(request):
    """For a test that demonstrates a gate on real speed: the real clock, or under the scramble a cost model by size.

    Asserting that a real speed gate passes under scrambled times would assert luck; under the scramble the
    gate's logic is still run end to end, on modelled times, and the test's properties say so.
    """
    if active_timer().key is None:
        yield None
        return
    request.node.user_properties.append(("timing", "SQUEEZELAB_SCRAMBLE_TIMINGS is on: speed gated on a cost model by size"))
    with using_timer(CostModel.by_size()) as timer:
        yield timer

"""Real int8 in ONNX Runtime: the fused kernels compute what the QDQ graph says.

ONNX Runtime with every graph optimisation off executes the QDQ graph literally
(DequantizeLinear, then the float op): that is the reference semantics of the
quantized model. With optimisations on (what users run) the QDQ pairs are fused
into int8 kernels, which must give the same outputs.

Numeric tests pin ``reduce_range=True`` (7-bit weights): the one int8 path that is
exact on every x86 CPU, AVX2-only and VNNI alike, so they assert the same thing on
both. Full-range weights are tested where the hardware computes them exactly (VNNI,
ARM), and shown to saturate where it does not (AVX2-only).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.core.cpu import int8_dot_product_is_exact
from tests.conftest import hardware_int8_exact


def _unfused(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def wide_mlp():
    # Wide layers with large activations: where int16 saturation would show.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(384, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64)
    ).eval()
    x = torch.randn(256, 384).numpy()
    return model, x


@pytest.mark.parametrize(
    "runtime",
    [
        sl.Int8Static(reduce_range=True),
        sl.Int8Static(activations="uint8", per_channel=False, reduce_range=True),
        sl.Int8Static(calibration="entropy", reduce_range=True),
    ],
    ids=lambda r: sl.Recipe(runtime=r).label,
)
def test_fused_int8_kernels_match_the_qdq_reference(wide_mlp, runtime):
    model, x = wide_mlp
    c = sl.compress(model, sl.Recipe(runtime=runtime), example_inputs=x[:1], calibration_data=x)
    fused, reference = c.predict(x), _unfused(c.onnx_bytes, x)
    scale = np.abs(reference).max()
    # One int8 step of the output quantizer at most (requantisation rounding).
    assert np.abs(fused - reference).max() <= scale / 100
    fp32 = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(fused - fp32).max() <= scale / 20


def test_dynamic_int8_stays_close_to_fp32(wide_mlp):
    model, x = wide_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)), example_inputs=x[:1])
    fp32 = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(c.predict(x) - fp32).max() <= np.abs(fp32).max() / 20
    assert c.details["reduce_range"] is True


def test_reduce_range_left_to_the_machine_follows_its_int8_dot_product(wide_mlp):
    model, x = wide_mlp
    for runtime in (sl.Int8Dynamic(), sl.Int8Static()):
        c = sl.compress(model, sl.Recipe(runtime=runtime), example_inputs=x[:1], calibration_data=x[:64])
        assert c.details["reduce_range"] is (not int8_dot_product_is_exact())  # recorded with the result


def test_full_range_weights_match_the_qdq_reference_where_the_cpu_is_exact(wide_mlp):
    if not hardware_int8_exact():
        pytest.skip("this CPU lacks an exact int8 dot product (AVX2-only): full-range weights saturate here")
    model, x = wide_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(reduce_range=False)), example_inputs=x[:1], calibration_data=x)
    reference = _unfused(c.onnx_bytes, x)
    assert np.abs(c.predict(x) - reference).max() <= np.abs(reference).max() / 100


def test_without_vnni_full_range_weights_saturate(wide_mlp):
    """Why reduce_range defaults to True on AVX2-only CPUs: full-range weights overflow there."""
    if hardware_int8_exact():
        pytest.skip("this CPU has VNNI (or is ARM): its int8 kernels do not saturate")
    model, x = wide_mlp
    errors = {}
    for rr in (False, True):
        c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(reduce_range=rr)), example_inputs=x[:1], calibration_data=x)
        errors[rr] = np.abs(c.predict(x) - _unfused(c.onnx_bytes, x)).max()
    assert errors[False] > 3 * errors[True]


def test_cpu_placement_reports_quantized_kernels(digits_cnn):
    model, split = digits_cnn
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=split.x_train[:128])
    placement = c.placement()
    by_op = placement.by_op()
    assert any(op in by_op for op in ("QLinearConv", "QLinearMatMul", "QGemm"))
    assert {p for counter in by_op.values() for p in counter} == {"CPUExecutionProvider"}
    assert "CPUExecutionProvider" in placement.summary()

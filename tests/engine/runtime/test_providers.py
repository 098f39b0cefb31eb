"""Execution providers: unavailable ones are refused, silent fallback is turned into an error."""

from __future__ import annotations

import pytest
import torch

import squeezelab as sl
from squeezelab.engine.runtime.providers import Placement, check_placement, parse_profile


def test_unavailable_provider_is_refused_with_the_available_list(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    with pytest.raises(sl.errors.ProviderUnavailableError, match="'NoSuchExecutionProvider'.*available: .*CPUExecutionProvider"):
        c.session(["NoSuchExecutionProvider"])


def test_provider_options_are_accepted(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])
    session = c.session([("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})])
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_a_provider_that_failed_to_start_is_not_silently_replaced(digits_mlp, monkeypatch):
    """ONNX Runtime retries CUDA -> CPU on its own when CUDA fails to initialise; that must raise."""
    import squeezelab.engine.pipeline.compressed as compress_module

    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=split.x_test[:1])

    class FellBack:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(compress_module, "make_session", lambda *a, **k: FellBack())
    with pytest.raises(sl.errors.ProviderFallbackError, match="asked for CUDAExecutionProvider but .* CPUExecutionProvider"):
        c.session(["CUDAExecutionProvider"])
    assert isinstance(c.session(["CUDAExecutionProvider"], allow_fallback=True), FellBack)


def test_fallback_of_quantized_nodes_raises_and_names_them():
    placement = Placement(
        {
            "conv_q": ("QLinearConv", "CPUExecutionProvider"),
            "relu": ("Relu", "CUDAExecutionProvider"),
            "shape": ("Shape", "CPUExecutionProvider"),  # shape ops on CPU are normal
            "mm_q": ("QLinearMatMul", "CUDAExecutionProvider"),
        }
    )
    with pytest.raises(sl.errors.ProviderFallbackError) as info:
        check_placement(placement, "CUDAExecutionProvider")
    message = str(info.value)
    assert "conv_q (QLinearConv on CPUExecutionProvider)" in message
    assert "mm_q" not in message and "shape" not in message
    assert "TensorrtExecutionProvider" in message and "allow_fallback=True" in message


def test_no_error_when_every_quantized_node_is_where_it_was_asked():
    check_placement(Placement({"q": ("QuantizeLinear", "TensorrtExecutionProvider")}), "TensorrtExecutionProvider")


def test_parse_profile_reads_node_events():
    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "/fc/Gemm_quant_kernel_time", "args": {"op_name": "QGemm", "provider": "CPUExecutionProvider"}},
        {"cat": "Node", "name": "/fc/Gemm_quant_fence_before", "args": {"op_name": "QGemm"}},
    ]
    assert parse_profile(events).nodes == {"/fc/Gemm_quant": ("QGemm", "CPUExecutionProvider")}


def test_simulated_results_have_no_session(digits_mlp):
    model, split = digits_mlp
    c = sl.compress(model, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()), example_inputs=torch.from_numpy(split.x_test[:1]))
    with pytest.raises(sl.errors.ConfigError, match="simulated"):
        c.session()

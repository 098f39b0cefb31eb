"""Linear quantization against two oracles: ONNX Runtime's QuantizeLinear/DequantizeLinear
and PyTorch's fake_quantize_per_tensor_affine / fake_quantize_per_channel_affine."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from squeezelab.engine.quantization import choose_qparams, dequantize, fake_quantize, quantize

ONNX_TYPES = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int16): TensorProto.INT16,
    np.dtype(np.uint16): TensorProto.UINT16,
}


def _ort_quant_dequant(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None):
    """Run x -> QuantizeLinear -> (q, DequantizeLinear(q)) in ONNX Runtime."""
    zp_type = ONNX_TYPES[zp.dtype]
    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], **attrs),
            helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], **attrs),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("q", zp_type, list(x.shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape)),
        ],
        initializer=[
            onnx.numpy_helper.from_array(scale.astype(np.float32), "scale"),
            onnx.numpy_helper.from_array(zp, "zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _data(rng, shape, spread=3.0):
    # Mixed magnitudes per channel, so per-channel scales differ, plus exact zeros.
    x = rng.normal(size=shape).astype(np.float32) * spread
    x *= np.linspace(0.05, 1.0, shape[0], dtype=np.float32).reshape(-1, *[1] * (len(shape) - 1))
    x.reshape(-1)[::17] = 0.0
    return x


@pytest.mark.parametrize(
    ("bits", "symmetric", "zp_dtype"),
    [(8, True, np.int8), (8, False, np.uint8), (16, True, np.int16), (16, False, np.uint16)],
)
@pytest.mark.parametrize("axis", [None, 0])
def test_matches_onnxruntime_quantize_dequantize(rng, bits, symmetric, zp_dtype, axis):
    x = _data(rng, (16, 8, 3, 3))
    qp = choose_qparams(torch.from_numpy(x), bits=bits, symmetric=symmetric, axis=axis)
    q_ort, y_ort = _ort_quant_dequant(x, qp.scale.numpy(), qp.zero_point.numpy().astype(zp_dtype), axis)

    q = quantize(torch.from_numpy(x), qp)
    np.testing.assert_array_equal(q.numpy(), q_ort.astype(np.int32))
    np.testing.assert_array_equal(dequantize(q, qp).numpy(), y_ort)
    # Saturation: values beyond the range clamp as ONNX saturates, except that symmetric codes
    # stop at the narrow range (-127, not -128, for int8), ONNX Runtime's own choice for weights.
    big = (x * 10).astype(np.float32)
    q_big, _ = _ort_quant_dequant(big, qp.scale.numpy(), qp.zero_point.numpy().astype(zp_dtype), axis)
    ours_big = quantize(torch.from_numpy(big), qp).numpy()
    np.testing.assert_array_equal(ours_big, np.clip(q_big.astype(np.int32), qp.qmin, qp.qmax))
    assert (ours_big == qp.qmin).any() and (ours_big == qp.qmax).any()
    if not symmetric:
        np.testing.assert_array_equal(ours_big, q_big.astype(np.int32))


def test_rounds_half_to_even_like_onnx():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], dtype=np.float32)
    qp = choose_qparams(torch.tensor([-127.0, 127.0]), bits=8, symmetric=True)  # scale exactly 1
    q_ort, _ = _ort_quant_dequant(x, qp.scale.numpy(), np.array(0, dtype=np.int8), None)
    assert quantize(torch.from_numpy(x), qp).tolist() == q_ort.tolist() == [0, 2, 2, 0, -2, -2]


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_torch_fake_quantize_per_tensor(rng, bits, symmetric):
    x = torch.from_numpy(_data(rng, (32, 20)))
    qp = choose_qparams(x, bits=bits, symmetric=symmetric)
    oracle = torch.fake_quantize_per_tensor_affine(
        x, float(qp.scale), int(qp.zero_point), qp.qmin, qp.qmax
    )
    ours = fake_quantize(x, qp)
    # torch multiplies by 1/scale where ONNX divides: the two may differ by one step
    # on values within float rounding of a tie. Require exact equality almost everywhere.
    diff = (ours - oracle).abs()
    assert float(diff.max()) <= float(qp.scale) * 1.0001
    assert float((diff > 0).float().mean()) < 1e-3


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_torch_fake_quantize_per_channel(rng, bits, symmetric):
    x = torch.from_numpy(_data(rng, (12, 5, 3, 3)))
    qp = choose_qparams(x, bits=bits, symmetric=symmetric, axis=0)
    oracle = torch.fake_quantize_per_channel_affine(
        x, qp.scale, qp.zero_point, 0, qp.qmin, qp.qmax
    )
    ours = fake_quantize(x, qp)
    steps = (ours - oracle).abs() / qp.scale.reshape(-1, 1, 1, 1)
    assert float(steps.max()) <= 1.0001
    assert float((steps > 0).float().mean()) < 1e-3


def test_straight_through_gradient_matches_torch(rng):
    x = torch.from_numpy(_data(rng, (40,)))
    qp = choose_qparams(x[:30], bits=4, symmetric=False)  # x[30:] partly outside the range
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    upstream = torch.from_numpy(rng.normal(size=40).astype(np.float32))
    (fake_quantize(xa, qp) * upstream).sum().backward()
    (torch.fake_quantize_per_tensor_affine(xb, float(qp.scale), int(qp.zero_point), qp.qmin, qp.qmax) * upstream).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    assert (xa.grad == 0).any() and (xa.grad != 0).any()  # both the clipped and the passed branch occur


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_symmetric_codes_are_narrow_and_zero_is_exact(rng, bits):
    x = torch.from_numpy(_data(rng, (8, 16)))
    for axis in (None, 0):
        qp = choose_qparams(x, bits=bits, symmetric=True, axis=axis)
        q = quantize(x, qp)
        assert int(q.min()) >= -(2 ** (bits - 1) - 1) and int(q.max()) <= 2 ** (bits - 1) - 1
        assert (dequantize(q, qp)[x == 0] == 0).all()
        # The largest magnitude maps to the largest code (no wasted range).
        assert int(q.abs().max()) == 2 ** (bits - 1) - 1


def test_affine_uses_full_unsigned_range_and_zero_is_exact(rng):
    x = torch.from_numpy(np.abs(_data(rng, (64,))) + 0.5)  # all positive: range still includes 0
    qp = choose_qparams(x, bits=3, symmetric=False)
    assert (qp.qmin, qp.qmax) == (0, 7) and int(qp.zero_point) == 0
    assert float(dequantize(quantize(torch.zeros(1), qp), qp)) == 0.0
    assert int(quantize(x, qp).max()) == 7


def test_constant_zero_channel_gets_unit_scale():
    x = torch.zeros(3, 4)
    x[1] = torch.tensor([1.0, -2.0, 0.5, 0.0])
    qp = choose_qparams(x, bits=8, symmetric=True, axis=0)
    assert qp.scale[0] == 1.0 and qp.scale[2] == 1.0
    torch.testing.assert_close(dequantize(quantize(x, qp), qp)[0], torch.zeros(4))

"""Static int8 inside remembered_quantization(): the export is pre-processed and calibrated once, and the
models are byte-identical to those made without it (the oracle: the same compress outside the block)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import squeezelab as sl
from squeezelab.engine.runtime.quantize_memo import (
    calibration_cache_path, calibration_cache_supported, remembered_quantization,
)


@pytest.fixture(scope="module")
def cnn_export(digits_cnn):
    model, split = digits_cnn
    export = sl.compress(model, sl.Recipe(), example_inputs=split.x_test[:1]).onnx_bytes
    return export, split


def _float(*names: str) -> sl.Recipe:
    return sl.Recipe(runtime=sl.Int8Static(), layers=tuple(sl.LayerSetting(name=n, bits=32) for n in names))


def test_remembered_quantization_makes_the_same_models_and_calibrates_once(cnn_export, monkeypatch):
    export, split = cnn_export
    calibration = split.x_train[:64]
    recipes = [_float(), _float("features.0"), _float("classifier.1")]
    plain = [sl.compress(export, r, example_inputs=split.x_test[:1], calibration_data=calibration) for r in recipes]
    calls = []
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function
    real = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: calls.append(1) or real(*a, **k))
    with remembered_quantization():
        memo = [sl.compress(export, r, example_inputs=split.x_test[:1], calibration_data=calibration) for r in recipes]
    for a, b in zip(plain, memo):
        assert a.onnx_bytes == b.onnx_bytes
        np.testing.assert_array_equal(a.predict(split.x_test[:8]), b.predict(split.x_test[:8]))
    assert len(calls) == (1 if calibration_cache_supported() else 3)


def test_the_calibration_key_covers_the_graph_the_batches_and_the_method(cnn_export):
    export, split = cnn_export
    feeds = [{"x": split.x_train[:8]}]
    assert calibration_cache_path(export, feeds, ["MinMax"]) is None  # outside the block nothing is remembered
    if not calibration_cache_supported():
        pytest.skip("this ONNX Runtime has no calibration_cache_path (added in 1.22)")
    with remembered_quantization():
        key = calibration_cache_path(export, feeds, ["MinMax"])
        assert calibration_cache_path(export, [{"x": split.x_train[:8].copy()}], ["MinMax"]) == key
        assert calibration_cache_path(export, [{"x": split.x_train[8:16]}], ["MinMax"]) != key
        assert calibration_cache_path(export, feeds, ["Entropy"]) != key
        assert calibration_cache_path(export + b" ", feeds, ["MinMax"]) != key

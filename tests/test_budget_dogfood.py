"""This repository gates its own default model: run with `pytest --compress-budget` (CI does)."""

from __future__ import annotations

import squeezelab as sl


def test_shipped_int8_digits_model_fits_the_budget(compress_budget, digits_cnn):
    model, split = digits_cnn
    int8 = sl.compress(
        model,
        sl.Recipe(runtime=sl.Int8Static()),
        example_inputs=split.x_test[:1],
        calibration_data=split.x_train[:512],
    )
    verdict = compress_budget.check(model, int8, data=split.test)
    assert {f.name for f in verdict.figures} == {
        "accuracy_drop",
        "size_mb",
        "compression",
        "speedup",
        "executable",
    }

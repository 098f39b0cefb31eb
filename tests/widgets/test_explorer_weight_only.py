"""The explorer's weight-only runtime choice: the bit-width slider picks 4 or 8 bits, other widths say why."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from squeezelab.widgets import Explorer  # noqa: E402


def test_weight_only_choice_measures_matmul_nbits_points(digits_mlp, tmp_path):
    model, split = digits_mlp
    x, y = split.test
    ex = Explorer(model, (x[:100], y[:100]), cache=tmp_path, progress=False, rounds=0, runtime="weight-only", bits=4)
    try:
        ex.wait()
        assert ex.error is None and ex.current_point.label == "weightonly4-b32-auto" and ex.current_point.executable
        four_bit = ex.current_point.size_bytes
        assert four_bit < ex.baseline.size_bytes / 4
        ex.bits_slider.value = 8
        ex.wait()
        assert ex.current_point.label == "weightonly8-b32-auto" and four_bit < ex.current_point.size_bytes
        ex.bits_slider.value = 3  # no MatMulNBits width: the status says so, nothing is measured
        ex.wait()
        assert "4 or 8" in ex.error
    finally:
        ex.close()

"""compare(): one table, baseline first, every row measured in the same interleaved rounds."""

from __future__ import annotations

import pytest

import squeezelab as sl
from squeezelab.engine.compare import compare, format_table


def test_table_rows_and_ratios(digits_mlp):
    model, split = digits_mlp
    recipes = [
        sl.Recipe(runtime=sl.Int8Dynamic()),
        sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()),
    ]
    table = compare(model, recipes, split.test, example_inputs=split.x_test[:1], batch_sizes=(1, 4), rounds=3)
    assert list(table["recipe"]) == ["fp32", "int8-dynamic", "linear4-sym-perchannel (simulated)"]
    assert list(table["kind"]) == ["executable", "executable", "simulated"]
    assert table.loc[1, "size_ratio"] == pytest.approx(table.loc[1, "size_bytes"] / table.loc[0, "size_bytes"])
    assert table.loc[1, "size_ratio"] < 0.5 and table.loc[2, "size_ratio"] < table.loc[1, "size_ratio"]
    assert table.loc[0, "accuracy_drop"] == 0 and table.loc[0, "speedup_b4"] == 1.0
    assert (table[["latency_ms_b1", "latency_ms_b4"]] > 0).all().all()
    text = format_table(table)
    assert "ms b4" in text and "(simulated)" in text


def test_duplicate_recipes_are_refused(digits_mlp):
    model, split = digits_mlp
    twice = [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(runtime=sl.Int8Dynamic())]
    with pytest.raises(sl.ConfigError, match="int8-dynamic.*more than once"):
        compare(model, twice, split.test, example_inputs=split.x_test[:1])

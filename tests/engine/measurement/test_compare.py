"""compare(): one table, baseline first, every row measured in the same interleaved rounds."""

from __future__ import annotations

import pytest

import squeezelab as sl
from squeezelab.engine.measurement.compare import compare, format_table
from squeezelab.engine.measurement.timing import CostModel, using_timer


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
    assert table.loc[1, "compression"] == pytest.approx(1 / table.loc[1, "size_ratio"])  # the report's unit
    for b in (1, 4):
        assert (table[f"latency_ms_b{b}_p25"] <= table[f"latency_ms_b{b}"]).all()
        assert (table[f"latency_ms_b{b}"] <= table[f"latency_ms_b{b}_p75"]).all()
    text = format_table(table)
    assert "ms b4" in text and "(simulated)" in text and "compression" in text
    assert f"{table.loc[1, 'compression']:.2f}x" in text.splitlines()[3]


def test_duplicate_recipes_are_refused(digits_mlp):
    model, split = digits_mlp
    twice = [sl.Recipe(runtime=sl.Int8Dynamic()), sl.Recipe(runtime=sl.Int8Dynamic())]
    with pytest.raises(sl.errors.ConfigError, match="int8-dynamic.*more than once"):
        compare(model, twice, split.test, example_inputs=split.x_test[:1])


def _table(speedups):
    """A compare table by hand: fp32 first, then one row per (median, low, high) at batch 1."""
    import pandas as pd

    rows = []
    for i, (median, low, high) in enumerate([(1.0, 1.0, 1.0), *speedups]):
        rows.append({"recipe": f"r{i}", "kind": "executable", "value": 0.98, "drop": 0.0, "accuracy": 0.98, "accuracy_drop": 0.0,
                     "size_bytes": 1000, "size_ratio": 1.0, "latency_ms_b1": 0.1,
                     "speedup_b1": median, "speedup_b1_low": low, "speedup_b1_high": high})
    table = pd.DataFrame(rows)
    table.attrs["batch_sizes"] = [1]
    return table


def test_format_table_reads_each_speedup_from_its_whole_interval():
    text = format_table(_table([(0.80, 0.70, 1.05), (0.80, 0.70, 0.90), (1.30, 1.10, 1.50), (1.30, 0.95, 1.50)]))
    lines = text.splitlines()[2:]
    assert lines[0].endswith("1.00x (1.00-1.00)")  # the baseline: no reading
    assert lines[1].endswith("0.80x (0.70-1.05) about the same")  # a median below 1 is not "slower"
    assert lines[2].endswith("0.80x (0.70-0.90) slower")
    assert lines[3].endswith("1.30x (1.10-1.50) faster")
    assert lines[4].endswith("1.30x (0.95-1.50) about the same")
    assert sum("slower" in line for line in lines) == 1 and sum("faster" in line for line in lines) == 1


def test_compare_columns_carry_the_interval(digits_mlp):
    model, split = digits_mlp
    table = compare(model, [sl.Recipe(runtime=sl.Int8Dynamic())], split.test, example_inputs=split.x_test[:1],
                    batch_sizes=(2,), rounds=8)
    row = table.iloc[1]
    assert row["speedup_b2_low"] <= row["speedup_b2"] <= row["speedup_b2_high"]
    assert row["speedup_b2_reading"] in ("faster", "slower", "about the same")
    assert table.iloc[0][["speedup_b2", "speedup_b2_low", "speedup_b2_high"]].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("int8_ms, reading", [(1.0, "faster"), (4.0, "slower"), (2.0, "about the same")])
def test_the_reading_follows_the_times_on_modelled_times(digits_mlp, int8_ms, reading):
    """The reading of a speedup is read off the interval the times give, whichever CPU runs the test."""
    model, split = digits_mlp

    def cost(c):
        return int8_ms if isinstance(c.recipe.runtime, sl.Int8Dynamic) else 2.0

    with using_timer(CostModel(cost)):
        table = compare(model, [sl.Recipe(runtime=sl.Int8Dynamic())], split.test, example_inputs=split.x_test[:1],
                        batch_sizes=(2,), rounds=6)  # the fewest rounds with an interval at 95%
    row = table.iloc[1]
    assert row["speedup_b2"] == row["speedup_b2_low"] == row["speedup_b2_high"] == 2.0 / int8_ms
    assert row["speedup_b2_reading"] == reading and row["latency_ms_b2"] == int8_ms

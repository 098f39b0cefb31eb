"""`squeezelab demo`: the README's main job prints the table and writes the report."""

from __future__ import annotations

import json

from squeezelab.cli import main, speed_lines
from squeezelab.engine.stats import speed_reading


def test_demo_prints_table_and_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "mlp", "--rounds", "3", "--batch-sizes", "1,8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "int8-static-minmax-perchannel" in printed and "linear4-sym-perchannel (simulated)" in printed
    assert "speedup" in printed and "ms b8" in printed
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert rows[0]["recipe"] == "fp32" and len(rows) == 10
    assert {r["kind"] for r in rows} == {"executable", "simulated"}
    assert all("(simulated)" in r["recipe"] for r in rows if r["kind"] == "simulated")
    assert results["environment"]["onnxruntime"] and results["threads"] == 1
    report = (out / "report.md").read_text()
    assert "simulated" in report and "Environment" in report
    assert "batch 8:" in report and "No conclusion is drawn from batch 1 alone" in report
    meta = json.loads((out / "digits.int8.onnx.json").read_text())
    assert meta["executable"] is True and meta["size_bytes"] == (out / "digits.int8.onnx").stat().st_size
    assert (out / "results.csv").read_text().startswith("recipe,")
    html = (out / "report.html").read_text()  # the trade-off sweep, as one offline HTML file
    assert "squeezelab demo: digits MLP" in html and "int8-static-minmax-perchannel" in html
    assert "magnitude50%-layer + linear4-sym-perchannel + huffman (simulated)" in html
    assert "<script src=" not in html


def _demo_table(batch_sizes, intervals):
    """A demo table by hand: fp32, then int8 rows whose speedup interval per batch size is given."""
    import pandas as pd

    rows = [{"recipe": "fp32", "kind": "executable"}]
    rows += [{"recipe": name, "kind": "executable"} for name in intervals]
    rows.append({"recipe": "kmeans4 (simulated)", "kind": "simulated"})
    for row in rows:
        for b in batch_sizes:
            low, high = intervals.get(row["recipe"], {}).get(b, (0.5, 0.6))  # simulated/fp32: never read
            row[f"speedup_b{b}_reading"] = speed_reading(low, high)
    table = pd.DataFrame(rows)
    table.attrs["batch_sizes"] = list(batch_sizes)
    return table


ENV = {"cpu": "AMD EPYC 7B13", "avx2": True, "vnni": False}


def test_demo_draws_no_speed_conclusion_from_batch_1_alone():
    table = _demo_table([1], {"int8-static": {1: (0.7, 0.9)}, "int8-dynamic": {1: (0.9, 1.1)}})
    text = "\n".join(speed_lines(table, ENV))
    assert "AMD EPYC 7B13, AVX2 only, no VNNI" in text
    assert "batch 1: slower: int8-static; about the same: int8-dynamic." in text
    assert "Only batch 1 was measured, and batch 1 alone is not conclusive" in text
    assert "kmeans4" not in text  # simulated rows time PyTorch, not a kernel: no speed claim


def test_demo_states_per_batch_size_what_each_interval_says():
    intervals = {"int8-static": {1: (0.7, 0.9), 256: (0.95, 1.2)}, "int8-dynamic": {1: (0.9, 1.1), 256: (1.2, 1.4)}}
    text = "\n".join(speed_lines(_demo_table([1, 256], intervals), {**ENV, "vnni": True}))
    assert "with VNNI" in text
    assert "batch 1: slower: int8-static; about the same: int8-dynamic." in text
    assert "batch 256: about the same: int8-static; faster: int8-dynamic." in text
    assert "No conclusion is drawn from batch 1 alone" in text and "not conclusive" not in text

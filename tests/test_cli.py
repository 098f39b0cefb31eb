"""`squeezelab demo`: the README's main job prints the table and writes the report."""

from __future__ import annotations

import json

from squeezelab.cli import main


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
    meta = json.loads((out / "digits.int8.onnx.json").read_text())
    assert meta["executable"] is True and meta["size_bytes"] == (out / "digits.int8.onnx").stat().st_size
    assert (out / "results.csv").read_text().startswith("recipe,")
    html = (out / "report.html").read_text()  # the trade-off sweep, as one offline HTML file
    assert "squeezelab demo: digits MLP" in html and "int8-static-minmax-perchannel" in html
    assert "magnitude50%-layer + linear4-sym-perchannel + huffman (simulated)" in html
    assert "<script src=" not in html

"""``squeezelab gate --save / --compare / --markdown``: the plugin's gates over time, for any CI.

The candidates are fp32 ONNX exports of the trained digits MLP, so every figure is exact on every CPU
(no int8 numerics): "good" is the model itself, "regressed" the model with its class-0 bias raised by
5, which sends samples of other classes to class 0. Speed is never gated here (no assertion on time).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.cli import main

FACTORY = "tests/factories.py:digits_mlp"
BUDGET = "[tool.squeezelab.budget]\nmax_accuracy_drop = 0.5\nmax_regression = 0.0\nmax_size_growth = 0.05\n"


@pytest.fixture(scope="module")
def gate_files(digits_mlp, tmp_path_factory):
    """The fp32 baseline, a good and a regressed candidate (ONNX files), the data, the budget, the weights."""
    from safetensors.torch import save_file

    model, split = digits_mlp
    folder = tmp_path_factory.mktemp("gate")
    worse = copy.deepcopy(model)
    last = [m for m in worse.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias[0] += 5.0
    example = split.x_test[:1]
    paths = {
        "baseline": sl.compress(model, example_inputs=example).save(folder / "fp32.onnx"),
        "good": sl.compress(model, example_inputs=example).save(folder / "good.onnx"),
        "regressed": sl.compress(worse, example_inputs=example).save(folder / "regressed.onnx"),
    }
    np.savez(folder / "test.npz", x=split.x_test[:200], targets=split.y_test[:200])
    (folder / "budget.toml").write_text(BUDGET)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "mlp.safetensors")
    return folder, paths


def _gate(gate_files, candidate, *extra, capsys):
    folder, paths = gate_files
    argv = ["gate", paths["baseline"], paths[candidate], "--data", folder / "test.npz", "--budget", folder / "budget.toml", *extra]
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_save_then_compare_fails_a_regressed_candidate_paired_and_passes_the_same_one(gate_files, tmp_path, capsys):
    saved = tmp_path / "gates.json"
    code, out, err = _gate(gate_files, "good", "--save", saved, capsys=capsys)
    assert code == 0, err
    assert "not judged: max_regression, max_size_growth: no saved run to compare with" in out
    document = json.loads(saved.read_text())
    assert list(document["gates"]) == ["squeezelab gate default"] and document["gates"]["squeezelab gate default"]["candidate"]["scores"]["n"] == 200

    for _ in range(2):  # the same candidate passes, every time
        code, out, err = _gate(gate_files, "good", "--compare", saved, "--json", tmp_path / "v.json", capsys=capsys)
        assert code == 0, err
        figures = {f["name"]: f for f in json.loads((tmp_path / "v.json").read_text())["figures"]}
        assert figures["accuracy_regression"]["value"] == 0.0 and figures["size_growth"]["value"] == 0.0

    code, out, err = _gate(gate_files, "regressed", "--compare", saved, "--json", tmp_path / "v.json", capsys=capsys)
    assert code == 1, err
    verdict = json.loads((tmp_path / "v.json").read_text())
    figures = {f["name"]: f for f in verdict["figures"]}
    base, now = verdict["summary"]["baseline_value"], verdict["summary"]["candidate_value"]
    regression = figures["accuracy_regression"]
    assert regression["passed"] is False and regression["method"] == "exact-binomial"  # paired: same data
    assert regression["value"] == pytest.approx(base - now) and now < base  # saved (= the baseline's) minus now
    assert "paired on the same 200 samples" in regression["interval"]


def test_markdown_goes_to_its_file_and_to_the_step_summary(gate_files, tmp_path, capsys, monkeypatch):
    saved = tmp_path / "gates.json"
    assert _gate(gate_files, "good", "--save", saved, capsys=capsys)[0] == 0
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    code, out, err = _gate(gate_files, "regressed", "--compare", saved, "--markdown", tmp_path / "gate.md", capsys=capsys)
    assert code == 1, err
    text = (tmp_path / "gate.md").read_text()
    assert (tmp_path / "summary.md").read_text() == text + "\n"
    assert "| `squeezelab gate default` (default) | top-1 accuracy |" in text and "**FAIL**" in text
    assert "accuracy_regression" in text and "(paired, max 0.0000)" in text


def test_a_missing_or_malformed_saved_file_is_one_line_before_any_work(gate_files, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    for path, words in ((tmp_path / "none.json", "does not exist; write one with"),
                        (tmp_path / "bad.json", "is not a saved gate results file")):
        with pytest.raises(SystemExit) as exc:
            _gate(gate_files, "good", "--compare", path, capsys=capsys)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
        assert err.startswith("squeezelab gate: error: saved gate results") or "is not a saved gate results file" in err


def test_speed_against_another_cpu_is_refused_with_the_reason(gate_files, tmp_path, capsys):
    folder, _ = gate_files
    budget = tmp_path / "speed.toml"
    budget.write_text("[tool.squeezelab.budget]\nmax_accuracy_drop = 0.5\nmin_speedup_ratio = 0.5\nlatency_rounds = 3\n")
    saved = tmp_path / "gates.json"
    assert _gate(gate_files, "good", "--budget", budget, "--save", saved, capsys=capsys)[0] == 0
    document = json.loads(saved.read_text())
    document["cpu"]["name"] = "Imaginary CPU 9000"
    saved.write_text(json.dumps(document))
    code, out, err = _gate(gate_files, "good", "--budget", budget, "--compare", saved, capsys=capsys)
    assert code == 0, err  # the other gates pass; speed is not judged, and says why
    assert "not judged: min_speedup_ratio: refused: the saved run was timed on 'Imaginary CPU 9000'" in out


def test_a_factory_baseline_comes_from_the_cache_the_second_time(gate_files, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    folder, paths = gate_files
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    argv = ["gate", FACTORY, paths["good"], "--weights", folder / "mlp.safetensors", "--data", folder / "test.npz",
            "--budget", folder / "budget.toml", "--cache", tmp_path / "cache", "--json", tmp_path / "v.json"]
    outs = []
    for _ in range(2):
        assert main([str(a) for a in argv]) == 0
        outs.append((capsys.readouterr().out, json.loads((tmp_path / "v.json").read_text())["summary"]))
    assert "fp32 baseline: exported and measured, then cached" in outs[0][0]
    assert "fp32 baseline: read from the cache (export and outputs skipped)" in outs[1][0]
    assert outs[0][1] == outs[1][1]
    assert main([str(a) for a in [*argv, "--no-cache"]]) == 0
    assert "fp32 baseline: exported and measured (cache off)" in capsys.readouterr().out


def test_a_budget_of_regression_limits_alone_needs_compare(gate_files, tmp_path, capsys):
    budget = tmp_path / "only.toml"
    budget.write_text("max_regression = 0.01\n")
    with pytest.raises(SystemExit) as exc:
        _gate(gate_files, "good", "--budget", budget, capsys=capsys)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "sets only limits against a saved run (max_regression) and no --compare was given" in err

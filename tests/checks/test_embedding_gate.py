"""The budget gate on an embedding model: a Hugging Face BertModel with dict inputs and a ModelOutput.

One pytester run holds every case, so the tiny BERT is exported and quantized once per candidate.
Inside it each passing check is compared with an oracle written apart from the engine: cosines of
the runtime's outputs in numpy, and scipy's t-interval of the per-sample differences.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("transformers", reason='pip install "squeezelab[models]"')
# Loaded here, outside pytester's runs (which unload what they import): BertModel pulls in ~1,500
# modules, among them torch._inductor's, whose operator library cannot be registered twice.
from transformers import BertModel  # noqa: E402, F401

CONFTEST = '''
import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs

# Dynamic int8 of a BERT must name its ops: the default refuses models whose MatMul/Gemm hold under
# half the weights, and a BERT's embedding tables (Gather) hold most of them.
DYNAMIC = sl.Recipe(runtime=sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather")))


@pytest.fixture(scope="session")
def bert():
    return tiny_bert()


@pytest.fixture(scope="session")
def inputs():
    return tiny_bert_inputs(batch=64, seq=16)  # a dict of int64 tensors, padded rows included


@pytest.fixture(scope="session")
def int8(bert, inputs):
    return sl.compress(bert, DYNAMIC, example_inputs=inputs)  # evaluates last_hidden_state (the first tensor)


@pytest.fixture(scope="session")
def int8_pooled(bert, inputs):
    return sl.compress(bert, DYNAMIC, example_inputs=inputs, output="pooler_output")


@pytest.fixture(scope="session")
def reference(bert, inputs):
    """Reference embeddings (targets): the PyTorch model's own pooled outputs."""
    with torch.no_grad():
        return bert(**inputs).pooler_output.numpy()


def cosines(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_oracle(figure, base_scores, cand_scores):
    """The figure's drop and t-interval against scipy's, from scores computed here in numpy."""
    from scipy.stats import ttest_1samp

    d = base_scores - cand_scores
    ci = ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert figure.method == "t" and figure.value == pytest.approx(d.mean(), rel=1e-5, abs=1e-9)
    assert (figure.low, figure.high) == pytest.approx((ci.low, ci.high), rel=1e-4, abs=1e-9)
'''

TESTS = '''
import numpy as np
import pytest

import squeezelab as sl
from conftest import check_oracle, cosines


def test_fidelity_loose(compress_budget, bert, int8, inputs):
    verdict = compress_budget.check(bert, int8, data=(inputs, None))  # no targets: cosine_to_baseline
    figure = verdict.figures[0]
    assert figure.name == "cosine_drop" and figure.metric == "cosine to fp32" and verdict.n_samples == 64
    base = sl.compress(bert, sl.Recipe(), example_inputs=inputs).predict(inputs)  # the fp32 ONNX baseline
    check_oracle(figure, cosines(base, base), cosines(int8.predict(inputs), base))


@pytest.mark.compress_budget(max_drop=1e-6)
def test_fidelity_tight(compress_budget, bert, int8, inputs):
    compress_budget.check(bert, int8, data=(inputs, None))


@pytest.mark.compress_budget(accuracy_gate="strict")
def test_pooled_targets_loose_strict(compress_budget, bert, int8_pooled, inputs, reference):
    verdict = compress_budget.check(bert, int8_pooled, data=(inputs, reference), metric="cosine",
                                    output="pooler_output")
    figure = verdict.figures[0]
    assert figure.name == "cosine_drop" and figure.metric == "cosine" and figure.mode == "strict"
    base = sl.compress(bert, sl.Recipe(), example_inputs=inputs, output="pooler_output").predict(inputs)
    check_oracle(figure, cosines(base, reference), cosines(int8_pooled.predict(inputs), reference))


@pytest.mark.compress_budget(max_drop=1e-6)
def test_pooled_targets_tight(compress_budget, bert, int8_pooled, inputs, reference):
    compress_budget.check(bert, int8_pooled, data=(inputs, reference), metric="cosine")  # output from int8_pooled


def test_onnx_files(compress_budget, bert, int8, inputs, tmp_path):
    fp32 = sl.compress(bert, sl.Recipe(), example_inputs=inputs).save(tmp_path / "bert.onnx")
    shipped = int8.save(tmp_path / "bert.int8.onnx")
    verdict = compress_budget.check(str(fp32), shipped, data=(inputs, None))
    assert (verdict.baseline, verdict.candidate) == ("bert.onnx (ONNX file)", "bert.int8.onnx (ONNX file)")
    assert verdict.figures[0].name == "cosine_drop"
    in_memory = compress_budget.check(bert, int8, data=(inputs, None))
    assert verdict.figures[0].value == pytest.approx(in_memory.figures[0].value, rel=1e-6)


def test_static_int8(compress_budget, bert, inputs):
    static = sl.compress(bert, sl.Recipe(runtime=sl.Int8Static()), example_inputs=inputs, calibration_data=inputs)
    verdict = compress_budget.check(bert, static, data=(inputs, None))
    assert verdict.figures[0].name == "cosine_drop" and verdict.executable


def test_another_output_than_the_candidate_was_made_with(compress_budget, bert, int8, inputs):
    compress_budget.check(bert, int8, data=(inputs, None), output="pooler_output")
'''


def test_budget_gate_on_an_embedding_model(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.squeezelab.budget]\nmax_drop = 0.01\nmin_compression = 1.5\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_bert_gate=TESTS)
    result = pytester.runpytest("--compress-budget", "--compress-budget-report=r.json", "--junitxml=j.xml", "-p", "no:cacheprovider")
    checks = {c["test"].split("::")[1]: c for c in json.loads((pytester.path / "r.json").read_text())["checks"]}
    result.assert_outcomes(passed=4, failed=3)
    out = result.stdout.str()
    assert "Traceback" not in out and "During handling" not in out

    # The loose budget passes every form: fidelity, reference targets (strict mode too), ONNX files, static int8.
    for name in ("test_fidelity_loose", "test_pooled_targets_loose_strict", "test_onnx_files", "test_static_int8"):
        assert checks[name]["passed"] is True, name
        drop = checks[name]["figures"][0]
        assert drop["name"] == "cosine_drop" and drop["method"] == "t" and drop["low"] < drop["value"] < drop["high"]

    # The tight one fails, naming the cosine, in its metric's units, with its t-interval shown.
    for name, metric in (("test_fidelity_tight", "cosine to fp32"), ("test_pooled_targets_tight", "cosine")):
        check = checks[name]
        assert check["passed"] is False and check["metric"] == metric and check["metric_key"] == "cosine"
        assert check["percent"] is False and check["figures"][0]["name"] == "cosine_drop"
    # Distinct lines: on CI (the CI variable set) pytest repeats each failure's full message in its short summary.
    failures = {line.strip() for line in out.splitlines() if "cosine_drop" in line and "FAIL, gate 'measured'" in line}
    assert len(failures) == 2
    for line in failures:
        assert line.lstrip().startswith("cosine_drop ") and "> max 1e-06 (over by " in line
        assert "95% CI [" in line and "t on paired differences, n=64" in line
        assert "accuracy" not in line and "pp" not in line
    result.stdout.fnmatch_lines(
        ["*broken by int8-dynamic (executable) vs BertModel (fp32 ONNX): 1 of 2 gate(s) failed "
         "(metric: cosine to fp32, n=64)"]
    )
    head = next(line for line in out.splitlines() if "broken by" in line and "metric: cosine," in line)
    assert "accuracy" not in head and "pp" not in head

    # A candidate made for another output is refused before anything is measured.
    result.stdout.fnmatch_lines(
        ["*could not run: the candidate int8-dynamic was compressed with output=None (the first "
         "tensor), but the check evaluates output='pooler_output'; compress it with output='pooler_output'*"]
    )
    assert "test_another_output_than_the_candidate_was_made_with" not in checks

    # The summary and the JUnit properties carry the figure under the metric's name.
    result.stdout.fnmatch_lines(["*test_fidelity_tight*cosine_drop*FAIL", "*n=64, metric cosine to fp32"])
    properties = {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(pytester.path / "j.xml").getroot().iter("testcase")
    }
    loose = properties["test_fidelity_loose"]
    assert loose["compress_budget.default.cosine_drop.metric"] == "cosine to fp32"
    assert loose["compress_budget.default.cosine_drop.method"] == "t"
    assert not any("accuracy_drop" in key for key in loose)

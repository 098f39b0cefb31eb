"""``squeezelab compress / sweep / report / gate`` on an ONNX file and on PyTorch factories (digits MLP, tiny BERT).

Oracles: the saved file is what ``compress`` gives for the same recipe (size and recipe); the printed
and JSON figures are the engine's Points; the gate's verdict is the one ``judge`` gives with the same
budget, its exit status follows the verdict, and a budget no model can meet fails with exit 1.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import squeezelab as sl
from squeezelab.cli import main

FACTORY = "tests/factories.py:digits_mlp"
BERT = "tests/factories.py:tiny_bert"


@pytest.fixture(scope="module")
def files(digits_mlp, tmp_path_factory):
    """The trained digits MLP as safetensors and as an fp32 ONNX file, with .npz data and calibration."""
    from safetensors.torch import save_file

    model, split = digits_mlp
    folder = tmp_path_factory.mktemp("cli")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "mlp.safetensors")
    onnx = sl.compress(model, example_inputs=split.x_test[:1]).save(folder / "mlp.onnx")
    np.savez(folder / "test.npz", x=split.x_test[:200], targets=split.y_test[:200])
    np.savez(folder / "cal.npz", x=split.x_train[:128])
    return folder, onnx


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("source", ["onnx", "factory"])
def test_compress_saves_the_recipes_model_and_prints_and_writes_its_figures(files, source, tmp_path, capsys, monkeypatch):
    folder, onnx = files
    monkeypatch.chdir(tmp_path.parent if source == "onnx" else _repo())
    model = [onnx] if source == "onnx" else [FACTORY, "--weights", folder / "mlp.safetensors"]
    out = tmp_path / "mlp.int8.onnx"
    code, printed, err = run(["compress", *model, "--recipe", "int8-static", "--calibration", folder / "cal.npz",
                              "--data", folder / "test.npz", "--output", out, "--rounds", 3, "--json", tmp_path / "f.json"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "mlp.int8.onnx.json").read_text())
    assert sl.Recipe.from_dict(meta["recipe"]) == sl.Recipe(runtime=sl.Int8Static())
    assert meta["size_bytes"] == out.stat().st_size and out.stat().st_size < 0.5 * onnx.stat().st_size
    figures = json.loads((tmp_path / "f.json").read_text())["points"]
    assert [p["label"] for p in figures] == ["fp32", "int8-static-minmax-perchannel"]
    assert figures[1]["size_bytes"] == out.stat().st_size and figures[0]["accuracy"] > 0.9  # trained weights loaded
    assert abs(figures[0]["accuracy"] - figures[1]["accuracy"]) < 0.05
    assert "int8-static-minmax-perchannel" in printed and "compression" in printed and "accuracy %" in printed
    assert "Traceback" not in err and "\r" not in err  # no progress bar when stderr is not a terminal


def test_compress_a_hugging_face_bert_through_a_factory(tmp_path, capsys, monkeypatch):
    from squeezelab.engine.zoo import tiny_bert_inputs

    monkeypatch.chdir(_repo())
    inputs = {k: v.numpy() for k, v in tiny_bert_inputs(batch=16, seq=12).items()}
    np.savez(tmp_path / "tokens.npz", **inputs)  # no targets: cosine to the fp32 model's own output
    out = tmp_path / "bert.int8.onnx"
    code, printed, err = run(["compress", BERT, "--recipe", "int8-dynamic", "--output-key", "pooler_output",
                              "--data", tmp_path / "tokens.npz", "--output", out, "--rounds", 2, "--json", "-"], capsys)
    assert code == 0, err
    payload = json.loads(printed)  # stdout is the JSON alone; the table went to stderr
    candidate = payload["points"][1]
    assert candidate["metric"] == "cosine to fp32" and 0.9 < candidate["value"] <= 1.0
    assert candidate["size_bytes"] == out.stat().st_size < 0.5 * payload["points"][0]["size_bytes"]
    assert "cosine to fp32" in err and "int8-dynamic" in err


@pytest.mark.parametrize("source", ["onnx", "factory"])
def test_sweep_prints_the_apis_table_and_report_writes_the_page(files, source, tmp_path, capsys, monkeypatch):
    folder, onnx = files
    monkeypatch.chdir(_repo())
    if source == "onnx":
        model, grid = [onnx], []
    else:
        model, grid = [FACTORY, "--weights", folder / "mlp.safetensors"], ["--bits", "8,4", "--sparsity", "0,0.5"]
    common = [*model, "--data", folder / "test.npz", *grid, "--rounds", 3, "--cache", tmp_path / "cache"]
    code, printed, err = run(["sweep", *common, "--json", tmp_path / "s.json", "--csv", tmp_path / "s.csv"], capsys)
    assert code == 0, err
    points = json.loads((tmp_path / "s.json").read_text())["points"]
    labels = [p["label"] for p in points]
    if source == "onnx":
        assert labels == ["fp32", "int8-dynamic", "float16"]
    else:
        assert len(labels) == 5 and "magnitude50%-layer + linear4-sym-perchannel (simulated)" in labels
    assert all(label in printed for label in labels)
    code, printed, err = run(["report", *common, "--output", tmp_path / "r.html", "--max-drop", "0.02"], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "chosen: " in printed and "the smallest file whose top-1 accuracy drop" in printed
    assert "Chosen as the smallest file" in page and all(label.split(" (")[0] in page for label in labels)


def test_gate_gives_the_budgets_verdict_with_exit_status_json_and_junit(files, tmp_path, capsys, monkeypatch):
    folder, onnx = files
    monkeypatch.chdir(_repo())
    int8 = sl.compress(onnx, sl.Recipe(runtime=sl.Int8Dynamic())).save(tmp_path / "int8.onnx")
    budget = tmp_path / "pyproject.toml"
    budget.write_text("[tool.squeezelab.budget]\nmax_accuracy_drop = 0.05\nmin_compression = 2.0\n"
                      "[tool.squeezelab.budget.tiny]\nmax_size_mb = 0.001\n")
    argv = ["gate", onnx, int8, "--data", folder / "test.npz", "--budget", budget]
    code, printed, err = run([*argv, "--json", tmp_path / "v.json", "--junit", tmp_path / "j.xml"], capsys)
    assert code == 0, err
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["passed"] is True and [f["name"] for f in verdict["figures"]] == ["accuracy_drop", "compression"]
    assert "accuracy_drop" in printed and "2 figure(s): 2 within budget, 0 over" in printed
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "0" and suite.findall("testcase/failure") == []
    # A 1 kB size limit no model here meets: exit 1, the figure failed in JSON and JUnit alike.
    code, printed, err = run([*argv, "--name", "tiny", "--json", tmp_path / "v.json", "--junit", tmp_path / "j.xml"], capsys)
    assert code == 1 and "FAIL" in printed
    failed = [f["name"] for f in json.loads((tmp_path / "v.json").read_text())["figures"] if not f["passed"]]
    assert failed == ["size_mb"]
    assert [c.get("name") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase") if c.find("failure") is not None] == ["size_mb"]


def test_gate_measures_a_factory_baseline_against_its_onnx_candidate(files, tmp_path, capsys, monkeypatch):
    folder, onnx = files
    monkeypatch.chdir(_repo())
    budget = tmp_path / "budget.toml"
    budget.write_text("max_accuracy_drop = 0.0\n")
    code, printed, err = run(["gate", FACTORY, onnx, "--weights", folder / "mlp.safetensors", "--data",
                              folder / "test.npz", "--budget", budget], capsys)
    assert code == 0, err  # the same weights exported: no drop at all
    assert "tests/factories.py:digits_mlp (fp32 ONNX)" in printed and "mlp.onnx (ONNX file)" in printed


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- bad arguments: one line, exit 2, before any work

BAD = [
    (["compress", "missing.onnx", "--recipe", "int8-dynamic", "--output", "o.onnx"], ["ONNX file 'missing.onnx' not found"]),
    (["compress", "resnet", "--recipe", "int8-dynamic", "--output", "o.onnx"], ["neither an ONNX file", "package.module:function"]),
    (["compress", "{onnx}", "--recipe", "int4", "--output", "o.onnx"], ["recipe='int4'; use one of 'fp32', 'int8-dynamic'", "recipe.toml"]),
    (["compress", "{onnx}", "--recipe", "int8-static", "--output", "{tmp}/o.onnx"], ["calibrates activation ranges", "--calibration"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx", "--json", "-"], ["--json", "pass --data"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{tmp}/nowhere/o.onnx"], ["folder of --output", "does not exist"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{onnx}"], ["exists", "--overwrite"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx", "--weights", "{dir}/mlp.safetensors"],
     ["--weights applies to a PyTorch factory"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "o.onnx", "--data", "test.csv"], ["not an .npz file"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "o.onnx", "--weights", "w.bin"], ["not a weights file", ".safetensors"]),
    (["compress", "tests/factories.py:not_a_model", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx",
      "--example-shape", "1,64"], ["returned str, not a torch.nn.Module"]),
    (["compress", "tests/factories.py:nothing", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx"], ["has no function 'nothing'"]),
    (["compress", "no_such_package.models:net", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx"], ["cannot import factory module"]),
    (["compress", "tests/factories.py:digits_mlp", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx"], ["--example-shape"]),
    (["compress", "tests/factories.py:tiny_bert", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx",
      "--weights", "{dir}/mlp.safetensors", "--example-shape", "1,8"], ["do not fit the model"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "o.onnx", "--example-shape", "1,0"], ["every size must be >= 1"]),
    (["sweep", "{onnx}", "--data", "{dir}/test.npz", "--bits", "8,4"], ["--bits/--sparsity need the PyTorch model"]),
    (["sweep", "{onnx}", "--data", "{dir}/test.npz", "--bits", "8,99"], ["--bits", "99"]),
    (["sweep", "{onnx}", "--data", "{dir}/test.npz", "--sparsity", "0,1.5"], ["--sparsity", "[0, 1)"]),
    (["sweep", "{onnx}", "--data", "{dir}/both.npz"], ["both 'targets' and 'labels'"]),
    (["sweep", "{onnx}"], ["required", "--data"]),
    (["sweep", "{onnx}", "--data", "{dir}/test.npz", "--runtime", "tensorrt"],  # the names of the engine's table
     ["--runtime", "runtime='tensorrt'; use one of 'simulated', 'simulated-huffman', 'int8-dynamic', 'int8-static', 'weight-only'"]),
    (["report", "{onnx}", "--data", "{dir}/test.npz", "--output", "{dir}"], ["is a folder"]),
    (["report", "{onnx}", "--data", "{dir}/test.npz", "--output", "{tmp}/r.html", "--max-drop", "-1"],
     ["--max-drop", "finite number >= 0"]),
    (["gate", "{onnx}", "{onnx}", "--data", "{dir}/test.npz", "--budget", "{tmp}/none.toml"], ["budget file", "not found", "--budget PATH"]),
    (["gate", "{onnx}", "{onnx}", "--data", "{dir}/test.npz", "--budget", "{dir}/settings-only.toml"],
     ["table holds only confidence, which gate nothing", "every check would pass", "max_accuracy_drop (or max_drop)"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{dir}/test.npz/o.onnx"],
     ["--output", "test.npz' is a file, not a folder"]),
    (["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx", "--data", "{dir}/test.npz",
      "--json", "{dir}/test.npz/f.json"], ["--json", "test.npz' is a file, not a folder"]),
    (["report", "{onnx}", "--data", "{dir}/test.npz", "--output", "{dir}/test.npz"], ["--output", "exists", "pass --overwrite"]),
    (["report", "{onnx}", "--data", "{dir}/test.npz", "--output", "{dir}/test.npz/r.html"],
     ["--output", "test.npz' is a file, not a folder"]),
    (["sweep", "{onnx}", "--data", "{dir}/test.npz", "--csv", "{dir}/test.npz/t.csv"], ["--csv", "is a file, not a folder"]),
    (["gate", "{onnx}", "{onnx}", "--data", "{dir}/test.npz", "--budget", "{dir}/budget.toml", "--name", "x"],
     ["no budget named 'x'", "default"]),
    (["gate", "{onnx}", "{onnx}", "--data", "{dir}/test.npz", "--junit", "{tmp}/no/j.xml"], ["--junit", "does not exist"]),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a[:1] + w[:1]) for a, w in BAD])
def test_bad_arguments_are_one_line_exit_2_and_start_no_work(files, argv, words, tmp_path, capsys, monkeypatch):
    folder, onnx = files
    monkeypatch.chdir(_repo())
    np.savez(folder / "both.npz", x=np.zeros((2, 64)), targets=np.zeros(2), labels=np.zeros(2))
    (folder / "budget.toml").write_text("max_accuracy_drop = 0.01\n")
    (folder / "settings-only.toml").write_text("confidence = 0.9\n")  # gates nothing: every check would pass
    monkeypatch.setattr(sl, "compress", lambda *a, **k: pytest.fail("work started despite a bad argument"))
    monkeypatch.setattr(sl, "sweep", lambda *a, **k: pytest.fail("work started despite a bad argument"))
    filled = [a.format(onnx=onnx, tmp=tmp_path, dir=folder) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(filled)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"squeezelab {argv[0]}: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for word in words:
        assert word in lines[0], lines[0]
    assert not API_WORDS.search(lines[0]), lines[0]  # the CLI's options, not the API's arguments


# The API's arguments that the CLI has options for, which it must show in its own words (--overwrite, --budget,
# --calibration, --cache / --no-cache, --output, --output-key). torch.load(weights_only=True) is not one of ours.
API_WORDS = re.compile(r"\boverwrite=|--compress-budget|calibration_data=|\bcache=|report path|(?<![\w-])output=")


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{ro}/o.onnx"],
        ["compress", "{onnx}", "--recipe", "int8-dynamic", "--output", "{tmp}/o.onnx", "--data", "{dir}/test.npz",
         "--json", "{ro}/f.json"],
        ["report", "{onnx}", "--data", "{dir}/test.npz", "--output", "{ro}/r.html"],
        ["sweep", "{onnx}", "--data", "{dir}/test.npz", "--json", "{ro}/s.json"],
        ["gate", "{onnx}", "{onnx}", "--data", "{dir}/test.npz", "--budget", "{dir}/budget.toml", "--junit", "{ro}/j.xml"],
    ],
    ids=["compress-output", "compress-json", "report-output", "sweep-json", "gate-junit"],
)
def test_a_read_only_output_folder_is_one_line_exit_2_before_any_work(files, argv, tmp_path, capsys, monkeypatch):
    # Once: exit 1 and a 19-line traceback, after compressing and measuring.
    folder, onnx = files
    monkeypatch.chdir(_repo())
    (folder / "budget.toml").write_text("max_accuracy_drop = 0.01\n")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    real_access = os.access  # root writes anywhere, whatever the folder's mode: os.access decides there
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(read_only) else real_access(p, mode))
    monkeypatch.setattr(sl, "compress", lambda *a, **k: pytest.fail("work started despite a read-only folder"))
    monkeypatch.setattr(sl, "sweep", lambda *a, **k: pytest.fail("work started despite a read-only folder"))
    try:
        with pytest.raises(SystemExit) as exc:
            main([a.format(onnx=onnx, tmp=tmp_path, dir=folder, ro=read_only) for a in argv])
    finally:
        read_only.chmod(0o700)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert str(read_only) in lines[0] and "no permission to write" in lines[0] and "choose a writable folder" in lines[0]
    assert not API_WORDS.search(lines[0]), lines[0]


def test_every_new_option_shows_help_and_its_default(capsys):
    for command in ("compress", "sweep", "report", "gate"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())
        for option in {"compress": ["--recipe", "--weights", "--example-shape", "--json", "--calibration"],
                       "sweep": ["--bits", "--sparsity", "--runtime", "--cache", "--csv"],
                       "report": ["--max-drop", "--objective", "--output"],
                       "gate": ["--budget", "--junit", "--name"]}[command]:
            assert option in shown
        assert "(default: " in shown


def test_a_recipe_toml_and_a_pt_state_dict_without_data(files, digits_mlp, tmp_path, capsys, monkeypatch):
    """A .pt state dict is read with weights_only=True; a pickled object in it is refused, not run."""
    import torch

    model, _ = digits_mlp
    monkeypatch.chdir(_repo())
    recipe = sl.Recipe(quantization=sl.Float16())
    (tmp_path / "half.toml").write_text(recipe.to_toml())
    torch.save(model.state_dict(), tmp_path / "mlp.pt")
    argv = ["compress", FACTORY, "--weights", tmp_path / "mlp.pt", "--recipe", tmp_path / "half.toml",
            "--example-shape", "1,64", "--output", tmp_path / "half.onnx"]
    code, printed, err = run(argv, capsys)
    assert code == 0, err
    assert sl.Recipe.from_dict(json.loads((tmp_path / "half.onnx.json").read_text())["recipe"]) == recipe
    assert "float16" in printed and "bytes" in printed
    torch.save({"net.1.weight": _Pickled()}, tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv[:3]] + [str(tmp_path / "evil.pt")] + [str(a) for a in argv[4:-1]] + [str(tmp_path / "x.onnx")])
    assert exc.value.code == 2 and "weights_only=True" in capsys.readouterr().err


class _Pickled:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def test_sweep_and_gate_a_hugging_face_bert_through_a_factory(tmp_path, capsys, monkeypatch):
    """Dict inputs by name from the .npz, no targets (cosine to fp32), the output named by --output-key."""
    from squeezelab.engine.zoo import tiny_bert_inputs

    monkeypatch.chdir(_repo())
    np.savez(tmp_path / "tokens.npz", **{k: v.numpy() for k, v in tiny_bert_inputs(batch=16, seq=12).items()})
    bert = [BERT, "--output-key", "pooler_output", "--data", tmp_path / "tokens.npz"]
    code, printed, err = run(["sweep", *bert, "--bits", "8", "--sparsity", "0", "--recipe", "int8-dynamic-embeddings",  # an old name, still read
                              "--rounds", 2, "--cache", tmp_path / "cache", "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    points = json.loads((tmp_path / "s.json").read_text())["points"]
    assert [p["label"] for p in points] == ["fp32", "linear8-sym-perchannel (simulated)", "int8-dynamic"]  # the default quantizes embeddings too
    assert {p["metric"] for p in points} == {"cosine to fp32"} and "cosine to fp32" in printed and "pp" not in printed
    assert all(0.9 < p["value"] <= 1.0 for p in points)
    int8 = tmp_path / "bert.int8.onnx"
    code, _, err = run(["compress", BERT, "--output-key", "pooler_output", "--recipe", "int8-dynamic",
                        "--data", tmp_path / "tokens.npz", "--output", int8, "--quiet"], capsys)
    assert code == 0, err
    (tmp_path / "budget.toml").write_text("max_drop = 0.2\nmin_compression = 2.0\n")
    code, printed, err = run(["gate", BERT, int8, "--output-key", "pooler_output", "--data", tmp_path / "tokens.npz",
                              "--budget", tmp_path / "budget.toml", "--json", tmp_path / "v.json"], capsys)
    assert code == 0, err
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["metric"] == "cosine to fp32" and [f["name"] for f in verdict["figures"]] == ["cosine_drop", "compression"]


# ---------------------------------------------------------------- the newcomer's path: defaults that apply, executable picks


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    """A CNN whose weights are 94 % convolution, as an ONNX file, with .npz data and calibration inputs."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    ).eval()
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("cnn")
    x = rng.standard_normal((48, 1, 8, 8)).astype(np.float32)
    onnx = sl.compress(net, example_inputs=x[:1]).save(folder / "cnn.onnx")
    np.savez(folder / "test.npz", x=x[:32], targets=rng.integers(0, 10, 32))
    np.savez(folder / "cal.npz", x=x[32:])
    return folder, onnx


def test_a_cnns_onnx_file_sweeps_with_the_defaults_that_apply_and_says_what_it_left_out(cnn_files, tmp_path, capsys):
    folder, onnx = cnn_files
    common = [onnx, "--data", folder / "test.npz", "--rounds", 2, "--cache", tmp_path / "cache"]
    code, printed, err = run(["sweep", *common, "--json", tmp_path / "s.json"], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [p["label"] for p in saved["points"]] == ["fp32", "float16"]  # int8-dynamic would be refused on a CNN
    assert set(saved["left_out"]) == {"the bits x sparsity grid", "int8-dynamic", "int8-static-minmax-perchannel"}
    left = [line for line in printed.splitlines() if line.startswith("left out of the default grid: ")]
    assert len(left) == 3 and not any(API_WORDS.search(line) for line in left)
    dynamic = next(line for line in left if ": int8-dynamic: " in line)
    assert "leaves the convolutions float" in dynamic and "use int8-static with --calibration CAL.npz" in dynamic
    assert any("int8-static" in line and "pass --calibration CAL.npz" in line for line in left)
    code, printed, err = run(["sweep", *common, "--calibration", folder / "cal.npz", "--json", tmp_path / "c.json"], capsys)
    assert code == 0, err
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [p["label"] for p in saved["points"]] == ["fp32", "int8-static-minmax-perchannel", "float16"]
    assert saved["calibration"] == "static int8 calibrated on the 16 calibration_data inputs, kept apart from the 32 samples evaluated"


def test_a_point_asked_for_that_cannot_run_is_refused_in_the_commands_words(cnn_files, tmp_path, capsys, monkeypatch):
    folder, onnx = cnn_files
    monkeypatch.setattr(sl, "sweep", lambda *a, **k: pytest.fail("work started despite a point that cannot run"))
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in ["sweep", onnx, "--data", folder / "test.npz", "--recipe", "int8-dynamic"]])
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("squeezelab sweep: error: --recipe int8-dynamic does not apply to ") and "cnn.onnx" in line
    assert "leaves the convolutions float" in line and "use int8-static with --calibration CAL.npz" in line
    assert not API_WORDS.search(line) and "Int8Static()" not in line


def test_report_recommends_an_executable_recipe_unless_simulated_ones_are_asked_for(files, tmp_path, capsys, monkeypatch):
    folder, _ = files
    monkeypatch.chdir(_repo())
    common = [FACTORY, "--weights", folder / "mlp.safetensors", "--data", folder / "test.npz", "--bits", "8,4",
              "--sparsity", "0", "--rounds", 3, "--cache", tmp_path / "cache", "--max-drop", "0.05"]
    code, printed, err = run(["report", *common, "--output", tmp_path / "r.html"], capsys)
    assert code == 0, err
    (chosen,) = [line for line in printed.splitlines() if line.startswith("chosen: ")]
    assert chosen.startswith("chosen: fp32 (") and "among the executable points" in chosen  # the grid is all simulated
    assert "simulated ones are shown, not chosen" in (tmp_path / "r.html").read_text()
    code, printed, err = run(["report", *common, "--output", tmp_path / "s.html", "--include-simulated"], capsys)
    assert code == 0, err
    (chosen,) = [line for line in printed.splitlines() if line.startswith("chosen: ")]
    assert "(simulated)" in chosen and "simulated ones included" in chosen
    code, printed, err = run(["report", *common, "--output", tmp_path / "d.html", "--executable-only"], capsys)
    assert code == 0 and "chosen: fp32 (" in printed  # the old option still works: it is the default

"""`squeezelab demo`: the README's main job prints the table and writes the report."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from squeezelab import _cmd_demo, cli
from squeezelab.cli import main, speed_lines
from squeezelab.engine.measurement.stats import speed_reading


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
    html = (out / "report.html").read_text()  # the very rows of the table, measured once, as one offline HTML file
    assert "squeezelab demo: digits MLP" in html and "<script src=" not in html
    assert all(row["recipe"].replace("(simulated)", "").strip() in html for row in rows)
    assert "huffman" not in html  # no other sweep: the report and the table show the same recipes
    for row in rows[1:3]:  # the same measurement: sizes and the largest batch's median latency as printed
        assert f"{row['size_bytes']:,}" in html and f"{row['latency_ms_b8']:.3f}" in html
    assert "Chosen as the smallest file whose top-1 accuracy drop" in html and "among the executable points" in html


# ---------------------------------------------------------------- arguments checked before any work

@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--rounds", "0"], ["--rounds", "0 is not allowed", ">= 1"]),
        (["demo", "--rounds", "many"], ["--rounds", "'many' is not an integer"]),
        (["demo", "--batch-sizes", "abc"], ["--batch-sizes", "'abc' is not an integer", "1,256"]),
        (["demo", "--batch-sizes", "1,,8"], ["--batch-sizes", "not a list of batch sizes"]),
        (["demo", "--batch-sizes", "1,-4"], ["--batch-sizes", "batch size -4", ">= 1"]),
        (["demo", "--threads", "0"], ["--threads", "0 is not allowed"]),
        (["demo", "--model", "resnet"], ["--model", "invalid choice: 'resnet'"]),
        (["demo", "--allow-root"], ["unrecognized arguments: --allow-root"]),
        (["lab", "--port", "99999"], ["--port", "99999 is not a port number", "1-65535"]),
        ([], ["required", "COMMAND"]),
    ],
)
def test_bad_arguments_are_one_line_on_stderr_with_exit_status_2(argv, words, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_demo", lambda args: pytest.fail("work started despite a bad argument"))
    monkeypatch.setattr(cli, "run_lab", lambda args, extra=None: pytest.fail("work started despite a bad argument"))
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1, captured.err  # one line, no usage block, no traceback
    assert err_lines[0].startswith("squeezelab") and "error:" in err_lines[0]
    for word in words:
        assert word in err_lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_an_out_folder_that_is_a_file_or_cannot_be_created_is_refused_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_demo", lambda args: pytest.fail("work started despite a bad --out"))
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    for out, words in [(a_file, "is a file, not a folder"), (a_file / "sub", "cannot be written")]:
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and str(a_file) in err
    assert a_file.read_text() == "keep me"


def test_a_squeeze_error_during_the_work_is_one_line_with_exit_status_2(tmp_path, capsys, monkeypatch):
    from squeezelab.engine.core.errors import DataError

    def broken(args):
        raise DataError("the evaluation data is empty; pass at least one sample.")

    monkeypatch.setattr(cli, "run_demo", broken)
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "squeezelab demo: error: the evaluation data is empty; pass at least one sample."


def test_every_command_and_option_has_help_text_and_the_description_says_what_the_tool_does(capsys):
    parser = cli.build_parser()
    assert "int8" in parser.description and "CI" in parser.description
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"demo", "lab", "compress", "sweep", "report", "gate"}
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert all(helps[name] for name in sub.choices), helps
    for name, command in sub.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        shown = capsys.readouterr().out
        assert "(default:" in shown  # defaults are shown beside the options that have one

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


def test_a_speedup_without_an_interval_is_said_to_have_no_verdict():
    table = _demo_table([1], {"int8-static": {1: (0.7, 0.9)}, "int8-dynamic": {1: (1.2, float("inf"))}})
    text = "\n".join(speed_lines(table, ENV))
    assert "batch 1: slower: int8-static; no verdict (too few timing rounds for an interval: pass --rounds 6 or more): " \
           "int8-dynamic." in text


def test_the_demo_table_and_report_are_named_after_the_metric(digits_mlp, tmp_path):
    """Top-1 reads in % and pp; a fidelity metric (no targets: cosine to fp32) by its own name, never as accuracy."""
    import squeezelab as sl
    from squeezelab.engine.measurement.compare import compare_compressed, format_table

    model, split = digits_mlp
    results = [sl.compress(model, r, example_inputs=split.x_test[:1]) for r in (sl.Recipe(), sl.Recipe(runtime=sl.Int8Dynamic()))]
    env = {**ENV, "int8_dot_product_exact": False}
    top1 = compare_compressed(results, split.test, batch_sizes=[1], rounds=3)
    header = format_table(top1).splitlines()[0]
    assert "accuracy %" in header and "drop pp" in header
    assert "top-1 accuracy on the 450 held-out test digits" in _cmd_demo._report(top1, env, "mlp", tmp_path / "m.onnx", True)
    fidelity = compare_compressed(results, (split.x_test, None), batch_sizes=[1], rounds=3)
    text = format_table(fidelity)
    header, rule, base, int8 = text.splitlines()
    assert header.split()[2:4] == ["cosine", "drop"] and "accuracy" not in text and " pp" not in text
    assert "%" not in header.split("speedup")[0]  # only the interval's 95% remains
    value, drop = (float(v) for v in int8.split()[2:4])
    assert value == pytest.approx(fidelity.loc[1, "cosine"], abs=5e-7) and drop == pytest.approx(1 - value, abs=2e-6)
    assert base.split()[2:4] == ["1.000000", "0.000000"] and 0 < drop < 0.01
    report = _cmd_demo._report(fidelity, env, "mlp", tmp_path / "m.onnx", True)
    assert "cosine to fp32 on the 450 held-out test digits, drop = fp32 minus candidate (in its units)" in report


# ---------------------------------------------------------------- engine errors shown in the CLI's words


def _engine_messages(tmp_path) -> list[str]:
    """Messages of errors the engine raises itself with the API's argument names, each one the CLI can show."""
    import torch

    import squeezelab as sl
    from squeezelab.checks.budget import load_budgets
    from squeezelab.engine.explore.cache import ResultCache
    from squeezelab.widgets.html_report import _check_path

    messages = []

    def caught(call) -> None:
        with pytest.raises(sl.SqueezeError) as info:
            call()
        messages.append(str(info.value))

    linear = torch.nn.Linear(4, 2)
    (tmp_path / "taken.onnx").write_text("keep me")
    result = sl.compress(linear, example_inputs=torch.randn(1, 4))
    caught(lambda: result.save(tmp_path / "taken.onnx"))  # pass overwrite=True
    caught(lambda: _check_path(tmp_path / "taken.onnx", False))  # report path ..., pass overwrite=True
    caught(lambda: load_budgets(tmp_path / "none.toml"))  # --compress-budget=PATH
    caught(lambda: sl.compress(linear, sl.Recipe(runtime=sl.Int8Static()), example_inputs=torch.randn(1, 4)))  # calibration
    caught(lambda: ResultCache(tmp_path / "taken.onnx"))  # cache='...' is a file; pass a folder (or cache=None)
    caught(lambda: ResultCache(tmp_path / "taken.onnx" / "sub").check_writable())  # cache='/a/writable/folder' ...
    conv = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 3), torch.nn.Flatten(), torch.nn.Linear(512, 1))  # mostly Conv
    caught(lambda: sl.compress(conv, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=torch.randn(1, 4, 6, 6)))

    class Pair(torch.nn.Module):
        def forward(self, x):
            return {"scores": x * 2}

    caught(lambda: sl.compress(Pair(), example_inputs=torch.randn(1, 4), output="logits"))  # output='logits' ...
    return messages


def test_engine_errors_the_cli_shows_name_its_options_not_the_apis_arguments(tmp_path):
    from squeezelab._cli_args import CLI_WORDS, cli_words

    messages = _engine_messages(tmp_path)
    api = [re.compile(pattern) for pattern, _ in CLI_WORDS]
    used = {i for i, pattern in enumerate(api) for m in messages if pattern.search(m)}
    assert used == set(range(len(api))), [CLI_WORDS[i][0] for i in set(range(len(api))) - used]  # each entry is real
    shown = [cli_words(m) for m in messages]
    for before, after in zip(messages, shown):
        assert not any(pattern.search(after) for pattern in api), after
        assert not re.search(r"overwrite=|calibration_data=|--compress-budget|\bcache=|(?<![\w-])output=", after), after
    text = "\n".join(shown)
    for option in ["pass --overwrite", "--output '", "--budget PATH", "pass --calibration CAL.npz", "--recipe int8-dynamic",
                   "--recipe int8-static", "--cache FOLDER", "--no-cache", "--output-key 'logits'"]:
        assert option in text, option


def test_every_api_fix_in_an_error_message_has_its_cli_words():
    """A new message naming overwrite=True, calibration_data=, cache=... or --compress-budget=PATH that the
    CLI could print without translation fails here (the pytest plugin's own messages keep pytest's words)."""
    from pathlib import Path

    from squeezelab._cli_args import cli_words

    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("engine/**/*.py"), root / "checks" / "budget.py", root / "widgets" / "html_report.py"]
    api = re.compile(r"overwrite=True|calibration_data=|--compress-budget=PATH|cache=False|cache=None|cache='")
    untranslated = []
    for source in sources:
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if api.search(line) and '"' in line and not line.lstrip().startswith(("#", ">>>", "def ")) and api.search(cli_words(line)):
                untranslated.append(f"{source.relative_to(root)}:{number}: {line.strip()}")
    assert untranslated == []


def test_timing_options_left_out_take_the_apis_defaults_from_settings(tmp_path):
    """The CLI keeps no rounds or threads of its own: options left out are not passed, so the API's Settings apply."""
    from squeezelab._cli_args import timing
    from squeezelab.engine.measurement.point import Settings

    (tmp_path / "d.npz").write_bytes(b"")
    (tmp_path / "m.onnx").write_bytes(b"")
    parser = cli.build_parser()
    for argv in (["demo"], ["sweep", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz")]):
        args = parser.parse_args(argv)
        assert (args.rounds, args.threads) == (None, None) and timing(args) == {}
    given = parser.parse_args(["demo", "--rounds", "7", "--threads", "2"])
    assert timing(given) == {"rounds": 7, "threads": 2}
    assert Settings().threads == 1 and Settings.for_sweeps().rounds == 20  # what sweep and demo then use

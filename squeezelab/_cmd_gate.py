"""``squeezelab gate BASELINE CANDIDATE --data DATA``: the verdict of ``pytest --compress-budget``, for any CI.

The budget, the measurement and the verdict are ``checks``' own: ``load_budgets`` reads the
budget file, ``settings_for`` takes its timing (batch size, rounds, threads, confidence),
``measured_pair`` measures both sides together (paired drop, interleaved speedup) and ``judge``
compares every figure with its limit. Exit status 0 when every figure is within budget, 1 when
one is over; a bad argument or a budget the data cannot judge is exit 2 with one line.

``--json PATH`` writes the verdict (``Verdict.to_dict()``, the same entry the plugin's
``--compress-budget-report`` holds); ``--junit PATH`` writes JUnit XML, one test case per gated
figure, failed ones carrying the figure's line, every figure's value, limit and interval as
properties, so a CI system without pytest shows the gate as tests.

Over time, as the plugin: ``--save PATH`` writes the gate's result (``checks.history``, under the key
``squeezelab gate NAME``), ``--compare PATH`` judges ``max_regression`` / ``max_size_growth`` /
``min_speedup_ratio`` against a saved one (``checks.regression``), ``--markdown PATH`` writes the
Markdown summary (also appended to ``$GITHUB_STEP_SUMMARY`` when set), and a PyTorch factory's fp32
export and outputs are cached between runs (``--cache DIR``, ``--no-cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

__all__ = ["run_gate", "junit_xml", "verdict_table", "gate_key"]


def verdict_table(verdict: Any) -> str:
    """One line per gated figure: value, the judged value, its limit, headroom and pass / FAIL, then details."""
    lines = [
        f"budget {verdict.budget_name!r}: {verdict.candidate} ({'executable' if verdict.executable else 'SIMULATED'}) "
        f"vs {verdict.baseline}, metric {verdict.metric}, n={verdict.n_samples}",
        f"{'figure':26s} {'value':>12s} {'judged':>12s} {'limit':>15s} {'headroom':>12s}  result",
    ]
    for f in verdict.figures:
        lines.append(
            f"{f.name:26s} {f.value:12.4g} {f.judged:12.4g} {f.op} {f.limit:12.4g} {f.headroom:12.4g}  "
            f"{'pass' if f.passed else 'FAIL'}"
        )
    lines += [f"  {f.detail()}" for f in verdict.figures if f.detail()]
    lines += [f"  not judged: {reason}" for reason in verdict.not_judged]
    failed = sum(not f.passed for f in verdict.figures)
    lines.append(f"{len(verdict.figures)} figure(s): {len(verdict.figures) - failed} within budget, {failed} over")
    return "\n".join(lines)


def junit_xml(verdict: Any, source: str) -> str:
    """JUnit XML of a verdict: a ``testsuite`` named ``squeezelab gate``, one ``testcase`` per figure."""
    failed = sum(not f.passed for f in verdict.figures)
    suite = ET.Element("testsuite", name="squeezelab gate", tests=str(len(verdict.figures)), failures=str(failed),
                       errors="0", skipped="0")
    properties = ET.SubElement(suite, "properties")
    for key, value in (("budget", verdict.budget_name), ("budget_source", source), ("baseline", verdict.baseline),
                       ("candidate", verdict.candidate), ("metric", verdict.metric), ("n_samples", verdict.n_samples)):
        ET.SubElement(properties, "property", name=key, value=str(value))
    for f in verdict.figures:
        case = ET.SubElement(suite, "testcase", classname=f"squeezelab.gate.{verdict.budget_name}", name=f.name)
        props = ET.SubElement(case, "properties")
        for key in ("value", "limit", "judged", "headroom", "low", "high", "mode", "reading"):
            value = getattr(f, key)
            if value not in (None, ""):
                ET.SubElement(props, "property", name=key, value=str(value))
        if not f.passed:
            ET.SubElement(case, "failure", message=f.line(), type="BudgetExceeded").text = f.line()
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _budget(args: argparse.Namespace) -> Any:
    from squeezelab.checks.budget import BudgetError, load_budgets

    budgets = load_budgets(args.budget)
    if args.name not in budgets:
        raise BudgetError(f"no budget named {args.name!r} in {str(args.budget)!r}; defined: {', '.join(sorted(budgets))}.")
    return budgets[args.name]


def _selected(model: Any, data: Any, output: str) -> Any:
    """A factory's model as its fp32 ONNX (as the engine measures a PyTorch model) exporting only ``output``.

    A compressed ONNX file exports one output; the pair then compares that with the baseline's
    ``output`` (``Settings.output`` would ask the ONNX file for a graph output of that name).
    """
    import squeezelab as sl
    from squeezelab._cmd_inputs import example_for

    if isinstance(model, Path):
        return model
    return sl.compress(model, sl.Recipe(), example_inputs=example_for(model, data, None), output=output).onnx_bytes


def gate_key(name: str) -> str:
    """The key of a ``squeezelab gate`` result in saved results: one per budget name."""
    return f"squeezelab gate {name}"


def _saved(args: argparse.Namespace) -> Any:
    """The saved run of ``--compare``, read before any work (a bad file: one line, exit 2)."""
    from squeezelab.checks.history import SavedResults

    return None if args.compare is None else SavedResults.load(args.compare)


def _check_judges_something(budget: Any, saved: Any, args: argparse.Namespace) -> None:
    """A budget of regression limits alone judges nothing without ``--compare``: refused before any work."""
    from squeezelab.checks.budget import REGRESSION_KEYS, BudgetError, gating_keys

    if saved is None and set(budget.gates()) <= set(REGRESSION_KEYS):
        raise BudgetError(
            f"budget {args.name!r} sets only limits against a saved run ({', '.join(budget.gates())}) and no --compare "
            f"was given, so the gate would judge nothing: pass --compare PATH, or add a limit of this run: {gating_keys()}."
        )


def _cache(args: argparse.Namespace) -> Any:
    from squeezelab.checks.baseline_cache import BaselineCache, default_baseline_dir

    return BaselineCache(None if args.no_cache else (args.cache or default_baseline_dir()))


def run_gate(args: argparse.Namespace) -> int:
    """Measure baseline and candidate together, judge them, print, write --json/--junit/--save/--markdown; 0 pass, 1 fail."""
    from squeezelab._cmd_inputs import example_for, load_data, load_model
    from squeezelab._cmd_output import write_json, write_text
    from squeezelab.checks.fixture import GateRun, with_regressions
    from squeezelab.checks.pairing import measured_pair, settings_for, side_label
    from squeezelab.checks.verdict import judge
    from squeezelab.engine.core.fingerprints import data_fingerprint

    budget, saved = _budget(args), _saved(args)
    _check_judges_something(budget, saved, args)
    specs = (args.baseline, args.candidate)
    models = [load_model(spec, args.weights if not spec.is_onnx else None) for spec in specs]
    data = load_data(args.data)
    labels = tuple(side_label(m) if spec.is_onnx else f"{spec.text} (fp32 ONNX)" for spec, m in zip(specs, models))
    output = args.output_key
    if output is not None and not all(spec.is_onnx for spec in specs):
        models = [_selected(m, data, output) for m in models]  # one output each; an ONNX file has its own
        output = None
    settings = settings_for(budget, output=output)
    pair, status = measured_pair(models[0], models[1], data, settings, budget, example_for(models[0], data, None), _cache(args))
    run = GateRun(judge(pair, budget, budget_name=args.name, labels=labels), pair, data_fingerprint(data), status)
    verdict = with_regressions(run, saved, gate_key(args.name), budget)
    run = GateRun(verdict, pair, run.data_fingerprint, status)
    shown = sys.stderr if args.json == "-" else sys.stdout
    print(verdict_table(verdict), file=shown)
    print(f"fp32 baseline: {_BASELINE_WORDS.get(status, status)}", file=shown)
    if args.json is not None:
        write_json(args.json, {"budget_source": str(args.budget), **verdict.to_dict()})
    if args.junit is not None:
        write_text(args.junit, junit_xml(verdict, str(args.budget)), "--junit")
    _write_history(args, run, saved)
    return 0 if verdict.passed else 1


_BASELINE_WORDS = {"hit": "read from the cache (export and outputs skipped)", "stored": "exported and measured, then cached",
                   "off": "exported and measured (cache off)"}


def _write_history(args: argparse.Namespace, run: Any, saved: Any) -> None:
    """``--save`` (the saved results, this gate under its key) and ``--markdown`` / ``$GITHUB_STEP_SUMMARY``."""
    from squeezelab._cmd_output import write_text
    from squeezelab.checks.fixture import gate_record
    from squeezelab.checks.history import results_document
    from squeezelab.checks.markdown import markdown_summary

    key = gate_key(args.name)
    if args.save is not None:
        document = results_document([gate_record(key, key, run)], str(args.budget))
        write_text(args.save, json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", "--save")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if args.markdown is None and not summary_file:
        return
    entry = json.loads(json.dumps({"test": key, "key": key, "baseline_cache": run.baseline_cache, **run.verdict.to_dict()},
                                  default=str))
    note = None if saved is None else f"saved {saved.created} with squeezelab {saved.squeezelab}"
    text = markdown_summary([entry], budget_source=str(args.budget), compare_source=None if saved is None else saved.source,
                            saved_note=note)
    if args.markdown is not None:
        write_text(args.markdown, text, "--markdown")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as f:  # GitHub's convention: each step appends
            f.write(text + "\n")

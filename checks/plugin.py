"""pytest plugin: ``pytest --compress-budget`` gates compressed models in CI.

Registered through the ``pytest11`` entry point. Importing it is light (no
torch): the engine loads when a gated test first measures something.

- ``--compress-budget`` turns the gates on with ``[tool.squeezelab.budget]``
  from ``pyproject.toml``; ``--compress-budget=PATH`` reads another file. A bare
  flag never takes the next argument: ``pytest --compress-budget tests/`` runs
  ``tests/``.
- Tests opt in with the ``compress_budget`` fixture, and may override limits or
  pick a named budget with ``@pytest.mark.compress_budget(name=..., **limits)``.
- Without the flag those tests are skipped, saying how to enable them.
- The run ends with a table of every gated figure (drops named after their
  metric: ``accuracy_drop``, ``cosine_drop`` ...), the interval of each drop
  and speedup, and, where a test set cannot resolve a budget, how many
  samples would; ``--compress-budget-report=PATH`` writes it as JSON; each figure
  (with its mode, interval, method and samples needed) is also a JUnit XML
  property. Works under xdist.
- ``--compress-budget-save=PATH`` writes every gate's result (both models' per-sample scores, bytes,
  speedup, the data's fingerprint, the CPU, versions) as one JSON file (``checks.history``);
  ``--compress-budget-compare=PATH`` judges ``max_regression``, ``max_size_growth`` and
  ``min_speedup_ratio`` against such a file (``checks.regression``).
- ``--compress-budget-markdown=PATH`` writes a Markdown summary of every gate, also appended to
  ``$GITHUB_STEP_SUMMARY`` when that is set (``checks.markdown``).
- ``--compress-budget-cache=DIR`` (or ``none``) is where the fp32 baselines' exports and outputs are
  kept between runs (default: ``gate-baselines`` in squeezelab's cache folder; ``checks.baseline_cache``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from squeezelab.checks.budget import BUDGET_ALIASES, BUDGET_KEYS, Budget, BudgetError, canonical_keys, load_budgets, valid_keys
from squeezelab.checks.history import SavedResults, SavedResultsError, results_document, write_results
from squeezelab.checks.markdown import markdown_summary
from squeezelab.checks.verdict import figure_detail
from squeezelab.engine.core.errors import ArtifactPathError
from squeezelab.engine.core.paths import file_to_write

__all__ = ["SKIP_REASON", "STATE"]

# What a bare --compress-budget means; angle brackets keep it from ever being a real path.
AUTO = "<pyproject.toml>"
SKIP_REASON = (
    "compress budget gates are off: run `pytest --compress-budget` (or --compress-budget=PATH) to enable them"
)
PROPERTY = "compress_budget"
RECORD = "compress_budget_record"  # a check's full record (Points, fingerprint), only when results are saved
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
NO_CACHE = "none"


@dataclass
class GateState:
    """Per-run plugin state, kept in ``config.stash``."""

    enabled: bool = False
    source: str | None = None
    budgets: dict[str, Budget] = field(default_factory=dict)
    report_path: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    save_path: str | None = None
    markdown_path: str | None = None
    compare: SavedResults | None = None
    cache_dir: str | None = None  # None: the default folder; NO_CACHE: off
    records: list[dict[str, Any]] = field(default_factory=list)


STATE = pytest.StashKey[GateState]()


def _budget_path(value: str) -> str:
    if not value.strip():
        raise pytest.UsageError("--compress-budget= needs a path, e.g. --compress-budget=budget.toml")
    return value


def _report_path(value: str) -> str:
    if not value or value.endswith(("/", "\\")):
        raise pytest.UsageError(f"--compress-budget-report={value!r} must name a file, e.g. budget.json")
    return value


def _file_option(option: str, example: str) -> Any:
    """An option's ``type=``: a file path (not empty, not a folder)."""

    def parse(value: str) -> str:
        if not value or value.endswith(("/", "\\")):
            raise pytest.UsageError(f"{option}={value!r} must name a file, e.g. {option}={example}")
        return value

    return parse


def _check_report_path(path: Path, option: str = "--compress-budget-report", example: str = "budget.json") -> None:
    """A file written when the session ends: a path that cannot be written is refused now, not then."""
    try:
        file_to_write(path, what=option, overwrite=True, create_folders=True, example=example)
    except ArtifactPathError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compress-budget", "squeezelab compression budgets")
    group.addoption(
        "--compress-budget",
        action="store",
        nargs="?",
        const=AUTO,
        default=None,
        metavar="PATH",
        type=_budget_path,
        dest="compress_budget",
        help="turn on compression budget gates: [tool.squeezelab.budget] from pyproject.toml, "
        "or the budget file given as --compress-budget=PATH.",
    )
    group.addoption(
        "--compress-budget-report",
        action="store",
        default=None,
        metavar="PATH",
        type=_report_path,
        dest="compress_budget_report",
        help="write every gated figure (value, limit, headroom, verdict) as JSON to PATH.",
    )
    for option, dest, example, text in _FILE_OPTIONS:
        group.addoption(option, action="store", default=None, metavar="PATH", dest=dest,
                        type=_file_option(option, example), help=text)
    group.addoption(
        "--compress-budget-cache", action="store", default=None, metavar="DIR", dest="compress_budget_cache",
        help="where the fp32 baselines' exports and outputs are kept between runs (default: gate-baselines in "
        f"$SQUEEZELAB_CACHE or ~/.cache/squeezelab); {NO_CACHE!r} turns the cache off.",
    )


_FILE_OPTIONS = (
    ("--compress-budget-save", "compress_budget_save", "gates.json",
     "write every gate's result (recipe, per-sample scores, bytes, speedup, data fingerprint, CPU, versions) as JSON to PATH."),
    ("--compress-budget-compare", "compress_budget_compare", "gates.json",
     "judge max_regression, max_size_growth and min_speedup_ratio against the results saved in PATH."),
    ("--compress-budget-markdown", "compress_budget_markdown", "gates.md",
     f"write a Markdown summary of every gate to PATH (it is also appended to ${SUMMARY_ENV} when that is set)."),
)


@pytest.hookimpl
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    # argparse's nargs="?" would take `pytest --compress-budget tests/` as PATH=tests/.
    # A bare flag means "the default budget"; only the --compress-budget=PATH form names a file.
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--compress-budget":
            args[i] = f"--compress-budget={AUTO}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compress_budget(name=None, **limits): gate this test with a squeezelab compression budget "
        f"(named budget and/or limit overrides: {valid_keys()}).",
    )
    state = GateState(report_path=config.getoption("compress_budget_report"))
    value = config.getoption("compress_budget")
    extras = [o for o, dest in _EXTRA_OPTIONS if config.getoption(dest) is not None]
    if value is None and extras:
        raise pytest.UsageError(f"{extras[0]} needs --compress-budget (the gates are off).")
    if value is not None:
        if value == AUTO:
            path = Path(config.rootpath) / "pyproject.toml"
        else:
            path = Path(config.invocation_params.dir) / value
            if path.is_dir() or path.suffix == ".py":
                # Only reachable when the plugin was loaded too late to rewrite a bare flag.
                raise pytest.UsageError(
                    f"--compress-budget took {value!r}, a test path, as its budget file; write "
                    "--compress-budget=FILE for a budget file, or put the flag after the test paths."
                )
        try:
            state.budgets = load_budgets(path)
        except BudgetError as exc:
            raise pytest.UsageError(f"--compress-budget: {exc}") from None
        state.enabled, state.source = True, str(path)
        _configure_history(config, state)
    config.stash[STATE] = state
    if not _is_xdist_worker(config):
        config.pluginmanager.register(_Recorder(config, state), "squeezelab-compress-budget-recorder")


_EXTRA_OPTIONS = (("--compress-budget-report", "compress_budget_report"), *((o, d) for o, d, _, _ in _FILE_OPTIONS),
                  ("--compress-budget-cache", "compress_budget_cache"))


def _configure_history(config: pytest.Config, state: GateState) -> None:
    """Files written at the end checked now; the saved run to compare with read now (a bad one is a usage error)."""
    here = Path(config.invocation_params.dir)
    state.save_path = config.getoption("compress_budget_save")
    state.markdown_path = config.getoption("compress_budget_markdown")
    state.cache_dir = config.getoption("compress_budget_cache")
    if state.cache_dir is not None and state.cache_dir != NO_CACHE:
        state.cache_dir = str(here / state.cache_dir)
    if not _is_xdist_worker(config):
        for option, path, example in (("--compress-budget-report", state.report_path, "budget.json"),
                                      ("--compress-budget-save", state.save_path, "gates.json"),
                                      ("--compress-budget-markdown", state.markdown_path, "gates.md")):
            if path:
                _check_report_path(here / path, option, example)
    compare = config.getoption("compress_budget_compare")
    if compare is not None:
        try:
            state.compare = SavedResults.load(here / compare)
        except SavedResultsError as exc:
            raise pytest.UsageError(f"--compress-budget-compare: {exc}") from None


def marker_settings(item: pytest.Item) -> tuple[str | None, dict[str, Any]]:
    """``(budget name, limit overrides)`` from the ``compress_budget`` markers of ``item``, validated.

    Markers on a module, class and function merge; the closest one wins per key (an alias such as
    ``max_drop`` counts as its key, so a closer ``max_drop`` overrides a farther ``max_accuracy_drop``).
    """
    name: str | None = None
    kwargs: dict[str, Any] = {}
    for marker in reversed(list(item.iter_markers("compress_budget"))):  # farthest first
        if len(marker.args) > 1 or (marker.args and not isinstance(marker.args[0], str)):
            raise BudgetError(f"{item.nodeid}: compress_budget mark takes one positional argument, the budget name.")
        these = dict(marker.kwargs)
        name = these.pop("name", marker.args[0] if marker.args else name)
        for key in these:
            if key not in BUDGET_KEYS and key not in BUDGET_ALIASES:
                raise BudgetError(
                    f"{item.nodeid}: compress_budget mark can't have {key!r} keyword argument; "
                    f"valid: name, {valid_keys()}."
                )
        kwargs.update(canonical_keys(these, f"{item.nodeid}: compress_budget mark"))
    Budget().replace(f"{item.nodeid}: compress_budget mark", **kwargs)  # types and ranges
    return name, kwargs


_MARK_ERROR = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        gated = item.get_closest_marker("compress_budget") is not None or PROPERTY in getattr(item, "fixturenames", ())
        if not gated:
            continue
        if not state.enabled:
            item.add_marker(skip)
            continue
        try:
            name, _ = marker_settings(item)
            if name is not None and name not in state.budgets:
                raise BudgetError(
                    f"{item.nodeid}: no budget named {name!r} in {state.source}; "
                    f"defined: {', '.join(sorted(state.budgets))}."
                )
        except BudgetError as exc:
            # Failing the test (not raising here) keeps the message clean under xdist, whose
            # workers collect: an exception from this hook would crash a worker.
            item.stash[_MARK_ERROR] = str(exc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    error = item.stash.get(_MARK_ERROR, None)
    if error is not None:
        pytest.fail(error, pytrace=False)


@pytest.fixture
def compress_budget(request: pytest.FixtureRequest) -> Any:
    """Measure a baseline and a candidate together and fail the test when the budget is broken."""
    state = request.config.stash[STATE]
    if not state.enabled:
        pytest.skip(SKIP_REASON)
    from squeezelab.checks.baseline_cache import BaselineCache, default_baseline_dir  # the engine (torch) loads only now
    from squeezelab.checks.fixture import BudgetGate, gate_record

    name, overrides = marker_settings(request.node)
    nodeid = request.node.nodeid

    def record(run: Any, key: str) -> None:
        verdict = run.verdict
        entry = {"test": nodeid, "key": key, "baseline_cache": run.baseline_cache, **verdict.to_dict()}
        request.node.user_properties.append((PROPERTY, json.dumps(entry, sort_keys=True, default=str)))
        if state.save_path:
            request.node.user_properties.append((RECORD, json.dumps(gate_record(key, nodeid, run), default=str)))
        for figure in verdict.figures:
            key = f"{PROPERTY}.{verdict.budget_name}.{figure.name}"
            request.node.user_properties.append((key, figure.value))
            for part, value in _statistics(figure).items():
                request.node.user_properties.append((f"{key}.{part}", value))

    folder = None if state.cache_dir == NO_CACHE else (state.cache_dir or default_baseline_dir())
    return BudgetGate(state.budgets, name=name, overrides=overrides, record=record, key=nodeid, compare=state.compare,
                      cache=BaselineCache(folder))


def _statistics(figure: Any) -> dict[str, Any]:
    """The JUnit properties beside a figure's value: its metric, gate mode, interval, method, samples needed."""
    parts = {
        "metric": figure.metric,
        "mode": figure.mode,
        "low": figure.low,
        "high": figure.high,
        "confidence": figure.confidence,
        "method": figure.method,
        "reading": figure.reading,
    }
    if figure.resolved is False:
        parts["samples_needed"] = "none would" if figure.samples_needed is None else figure.samples_needed
    return {k: v for k, v in parts.items() if v not in (None, "")}


def _cell(x: float, width: int = 11) -> str:
    """A table number: 4 decimals, or 3 significant digits where 4 decimals would read 0.0000 (a cosine's drop)."""
    shown = f"{x:.4f}" if x == 0 or abs(x) >= 0.001 or x != x else f"{x:.3g}"
    return f"{shown:>{width}s}"


def _shown_path(path: str | None, here: Path) -> str | None:
    """``path`` relative to where pytest was started when it lies below it (the summary names files as the job does)."""
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(here))
    except ValueError:
        return path


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _Recorder:
    """Collects verdicts from test reports (so xdist workers' results arrive too), then reports them."""

    def __init__(self, config: pytest.Config, state: GateState) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" or not self.state.enabled:
            return
        for key, value in report.user_properties:
            if key == PROPERTY:
                self.state.results.append(json.loads(value))
            elif key == RECORD:
                self.state.records.append(json.loads(value))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if state.enabled and state.report_path:
            path = Path(self.config.invocation_params.dir) / state.report_path
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"budget_source": state.source, "checks": sorted(state.results, key=lambda r: r["test"])}
            path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        if state.enabled:
            self._write_history(Path(self.config.invocation_params.dir))

    def _write_history(self, here: Path) -> None:
        """The saved results and the Markdown summary (to its file and to GitHub's step summary)."""
        state = self.state
        if state.save_path:
            write_results(here / state.save_path, results_document(state.records, state.source))
        summary_file = os.environ.get(SUMMARY_ENV)
        if not state.markdown_path and not summary_file:
            return
        compare = state.compare
        saved_note = None if compare is None else f"saved {compare.created} with squeezelab {compare.squeezelab}"
        text = markdown_summary(state.results, budget_source=_shown_path(state.source, here),
                                compare_source=None if compare is None else _shown_path(compare.source, here),
                                saved_note=saved_note)
        if state.markdown_path:
            (here / state.markdown_path).write_text(text, encoding="utf-8")
        if summary_file:
            with open(summary_file, "a", encoding="utf-8") as f:  # GitHub's convention: each step appends
                f.write(text + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = self.state
        if not state.enabled:
            return
        tr = terminalreporter
        tr.section("compress budget")
        tr.write_line(f"budget: {state.source}")
        if not state.results:
            tr.write_line("no gated checks ran")
            return
        tr.write_line(
            "judged = the value each gate compared (for a metric's drop: the measured drop in accuracy_gate "
            "'measured', the interval's low end in 'lenient', its high end in 'strict'); "
            "headroom = limit - judged; drops are in their metric's units"
        )
        tr.write_line(
            f"{'test':50s} {'budget':10s} {'figure':24s} {'value':>11s} {'judged':>11s} "
            f"{'limit':>13s} {'headroom':>11s}  result"
        )
        failed = unresolved = 0
        for result in sorted(state.results, key=lambda r: r["test"]):
            for fig in result["figures"]:
                failed += not fig["passed"]
                test = result["test"] if len(result["test"]) <= 50 else "..." + result["test"][-47:]
                tr.write_line(
                    f"{test:50s} {result['budget_name']:10s} {fig['name']:24s} {_cell(fig['value'])} "
                    f"{_cell(fig['judged'])} {fig['op']} {_cell(fig['limit'], 10)} {_cell(fig['headroom'])}  "
                    f"{'pass' if fig['passed'] else 'FAIL'}",
                    red=not fig["passed"],
                    green=fig["passed"],
                )
            kind = "executable" if result["executable"] else "SIMULATED"
            measured = f", metric {result['metric']}" if any(f.get("metric") for f in result["figures"]) else ""
            tr.write_line(f"{'':50s} candidate {result['candidate']} ({kind}), n={result['n_samples']}{measured}")
            for fig in result["figures"]:
                unresolved += fig.get("resolved") is False
                detail = figure_detail(fig)
                if detail:
                    tr.write_line(f"{'':50s} {detail}", yellow=fig.get("resolved") is False)
            for reason in result.get("not_judged") or []:
                tr.write_line(f"{'':50s} not judged: {reason}", yellow=True)
        total = sum(len(r["figures"]) for r in state.results)
        tail = f"; {unresolved} the test set cannot resolve (samples needed above)" if unresolved else ""
        tr.write_line(
            f"{len(state.results)} gated check(s), {total} figure(s): {total - failed} within budget, "
            f"{failed} over{tail}"
        )
        cached = sum(r.get("baseline_cache") == "hit" for r in state.results)
        if cached:
            tr.write_line(f"fp32 baseline read from the cache (export and outputs skipped) for {cached} of "
                          f"{len(state.results)} check(s)")
        if state.compare is not None:
            tr.write_line(f"compared with the saved run {state.compare.source} (saved {state.compare.created})")
        if state.save_path:
            tr.write_line(f"results saved to {state.save_path}")

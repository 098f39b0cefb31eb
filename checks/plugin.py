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
- The run ends with a table of every gated figure; ``--compress-budget-report=PATH``
  writes it as JSON; each figure is also a JUnit XML property. Works under xdist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from squeezelab.checks.budget import BUDGET_KEYS, Budget, BudgetError, load_budgets

__all__ = ["SKIP_REASON", "STATE"]

AUTO = "pyproject.toml"
SKIP_REASON = (
    "compress budget gates are off: run `pytest --compress-budget` (or --compress-budget=PATH) to enable them"
)
PROPERTY = "compress_budget"


@dataclass
class GateState:
    """Per-run plugin state, kept in ``config.stash``."""

    enabled: bool = False
    source: str | None = None
    budgets: dict[str, Budget] = field(default_factory=dict)
    report_path: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


STATE = pytest.StashKey[GateState]()


def _report_path(value: str) -> str:
    if not value or value.endswith(("/", "\\")):
        raise pytest.UsageError(f"--compress-budget-report={value!r} must name a file, e.g. budget.json")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compress-budget", "squeezelab compression budgets")
    group.addoption(
        "--compress-budget",
        action="store",
        nargs="?",
        const=AUTO,
        default=None,
        metavar="PATH",
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
        f"(named budget and/or limit overrides: {', '.join(BUDGET_KEYS)}).",
    )
    state = GateState(report_path=config.getoption("compress_budget_report"))
    value = config.getoption("compress_budget")
    if value is not None:
        path = Path(config.rootpath) / AUTO if value == AUTO else Path(config.invocation_params.dir) / value
        try:
            state.budgets = load_budgets(path)
        except BudgetError as exc:
            raise pytest.UsageError(f"--compress-budget: {exc}") from None
        state.enabled, state.source = True, str(path)
    config.stash[STATE] = state


def marker_settings(marker: pytest.Mark | None, where: str) -> tuple[str | None, dict[str, Any]]:
    """``(budget name, limit overrides)`` from a ``compress_budget`` marker, validated."""
    if marker is None:
        return None, {}
    if len(marker.args) > 1 or (marker.args and not isinstance(marker.args[0], str)):
        raise BudgetError(f"{where}: compress_budget mark takes one positional argument, the budget name.")
    kwargs = dict(marker.kwargs)
    name = kwargs.pop("name", marker.args[0] if marker.args else None)
    for key in kwargs:
        if key not in BUDGET_KEYS:
            raise BudgetError(
                f"{where}: compress_budget mark can't have {key!r} keyword argument; "
                f"valid: name, {', '.join(BUDGET_KEYS)}."
            )
    Budget().replace(f"{where}: compress_budget mark", **kwargs)  # types and ranges
    return name, kwargs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        marker = item.get_closest_marker("compress_budget")
        try:
            name, _ = marker_settings(marker, item.nodeid)
        except BudgetError as exc:
            raise pytest.UsageError(str(exc)) from None
        if state.enabled and name is not None and name not in state.budgets:
            raise pytest.UsageError(
                f"{item.nodeid}: no budget named {name!r} in {state.source}; "
                f"defined: {', '.join(sorted(state.budgets))}."
            )
        gated = marker is not None or PROPERTY in getattr(item, "fixturenames", ())
        if gated and not state.enabled:
            item.add_marker(skip)


@pytest.fixture
def compress_budget(request: pytest.FixtureRequest) -> Any:
    """Measure a baseline and a candidate together and fail the test when the budget is broken."""
    state = request.config.stash[STATE]
    if not state.enabled:
        pytest.skip(SKIP_REASON)
    from squeezelab.checks.fixture import BudgetGate  # imports the engine (torch) only now

    name, overrides = marker_settings(request.node.get_closest_marker("compress_budget"), request.node.nodeid)

    def record(verdict: Any) -> None:
        entry = {"test": request.node.nodeid, **verdict.to_dict()}
        request.node.user_properties.append((PROPERTY, json.dumps(entry, sort_keys=True)))
        for figure in verdict.figures:
            request.node.user_properties.append((f"{PROPERTY}.{verdict.budget_name}.{figure.name}", figure.value))

    return BudgetGate(state.budgets, name=name, overrides=overrides, record=record)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Collected from reports, not from items, so results from xdist workers arrive too.
    if report.when != "call":
        return
    config = _CONFIGS[-1] if _CONFIGS else None
    if config is None or _is_xdist_worker(config):
        return
    state = config.stash.get(STATE, None)
    if state is None or not state.enabled:
        return
    for key, value in report.user_properties:
        if key == PROPERTY:
            state.results.append(json.loads(value))


# pytest_runtest_logreport gets no config argument; remember the active one.
_CONFIGS: list[pytest.Config] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIGS.append(session.config)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is not None and state.enabled and state.report_path and not _is_xdist_worker(config):
        path = Path(config.invocation_params.dir) / state.report_path
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"budget_source": state.source, "checks": sorted(state.results, key=lambda r: r["test"])}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _CONFIGS:
        _CONFIGS.remove(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.enabled or _is_xdist_worker(config):
        return
    tr = terminalreporter
    tr.section("compress budget")
    tr.write_line(f"budget: {state.source}")
    tr.write_line("judged = the value each gate compared: for accuracy, a one-sided confidence bound on the paired drop")
    if not state.results:
        tr.write_line("no gated checks ran")
        return
    header = (
        f"{'test':50s} {'budget':10s} {'figure':24s} {'value':>11s} {'judged':>11s} "
        f"{'limit':>13s} {'headroom':>11s}  result"
    )
    tr.write_line(header)
    failed = 0
    for result in sorted(state.results, key=lambda r: r["test"]):
        for fig in result["figures"]:
            op = fig["op"]
            ok = "pass" if fig["passed"] else "FAIL"
            failed += not fig["passed"]
            test = result["test"] if len(result["test"]) <= 50 else "..." + result["test"][-47:]
            tr.write_line(
                f"{test:50s} {result['budget_name']:10s} {fig['name']:24s} {fig['value']:11.4f} "
                f"{fig['judged']:11.4f} {op} {fig['limit']:10.4f} {fig['headroom']:11.4f}  {ok}",
                red=not fig["passed"],
                green=fig["passed"],
            )
        kind = "executable" if result["executable"] else "SIMULATED"
        tr.write_line(f"{'':50s} candidate {result['candidate']} ({kind}), n={result['n_samples']}")
    total = sum(len(r["figures"]) for r in state.results)
    tr.write_line(f"{len(state.results)} gated check(s), {total} figure(s): {total - failed} within budget, {failed} over")

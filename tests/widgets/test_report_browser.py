"""A saved report in a real browser: it renders offline, fetches nothing, and its sliders work without a kernel.

Headless Debian chromium through Playwright for Python (no browser download). Skipped only
when /usr/bin/chromium is absent and SQUEEZELAB_REQUIRE_BROWSER is not "1" (CI sets it).
"""

from __future__ import annotations

import time

import pytest

from squeezelab.engine.explore.sensitivity import layer_sensitivity
from squeezelab.engine.explore.sweep import sweep
from squeezelab.widgets.grid_figure import DODGE
from squeezelab.widgets.html_report import report
from tests.widgets._browser import CHROMIUM, CHROMIUM_ARGS, require_browser

# Records Content-Security-Policy violations: the page's CSP would stop a fetch before any route sees it.
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""
STATE = """(id) => {
  const gd = document.getElementById(id);
  const on = t => t.visible !== false;
  const role = r => gd.data.filter(t => t.meta && t.meta.role === r && on(t));
  return {
    active: gd.layout.sliders.map(s => s.active),
    bits: role('selected_line').map(t => t.meta.bits),
    points: role('selected_point').map(t => [t.meta.panel, t.x[0], t.y[0]]),
    // the highlighted line as drawn: the 4 px wide path in the SVG
    drawn: Array.from(gd.querySelectorAll('.scatterlayer path.js-line'))
      .filter(p => p.style.strokeWidth === '4px').map(p => p.getAttribute('d')),
  };
}"""
RENDERED = """(expected) => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return plots.length === expected && plots.every(gd =>
    gd.querySelector('svg.main-svg') !== null &&
    gd.querySelectorAll('path.point').length + gd.querySelectorAll('g.hm image').length > 0);
}"""


@pytest.fixture(scope="module")
def saved_report(digits_cnn, tmp_path_factory):
    require_browser()
    model, split = digits_cnn
    folder = tmp_path_factory.mktemp("report")
    result = sweep(model, split.test, bits=(8, 4), sparsity=(0.0, 0.5), cache=folder / "cache", progress=False)
    sens = layer_sensitivity(model, split.test, bits=(4,), sparsity=(0.5,), cache=folder / "cache", progress=False)
    path = report(result, folder / "report.html", title="digits CNN <b>&</b>", sensitivity=sens)
    return result, path


def _click_step(page, slider: int, step: int) -> None:
    """Press the mouse on a slider's rail at one step's label, as a reader would."""
    group = page.locator("#squeezelab-explore g.slider-group").nth(slider)
    rail = group.locator("rect.slider-rail-touch-rect")
    rail.scroll_into_view_if_needed()
    label = group.locator("g.slider-label-group").nth(step).bounding_box()
    box = rail.bounding_box()
    page.mouse.click(label["x"] + label["width"] / 2, box["y"] + box["height"] / 2)


def test_report_renders_offline_and_its_sliders_move_the_highlight(saved_report, capsys):
    from playwright.sync_api import sync_playwright

    result, path = saved_report
    table = result.table
    url = path.as_uri()
    expected_plots = 4  # trade-off, grid explorer, sensitivity heatmaps for bits and sparsity
    blocked: list[str] = []
    requested: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url == url:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    start = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", route)
            context.add_init_script(CSP_PROBE)
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            assert page.get_attribute('meta[name="squeezelab-figures"]', "content") == str(expected_plots)
            page.wait_for_function(RENDERED, arg=expected_plots)

            before = page.evaluate(STATE, "squeezelab-explore")
            assert before["active"] == [0, 0] and before["bits"] == [8] and len(before["drawn"]) == 1

            # The slider marks its step active first and runs the step's restyle on the next animation
            # frame: wait for the data and the drawing, not for the slider.
            _click_step(page, slider=0, step=1)  # bits 8 -> 4
            page.wait_for_function(
                f"(before) => {{ const s = ({STATE})('squeezelab-explore'); "
                "return s.bits.length === 1 && s.bits[0] === 4 && s.drawn.length === 1 && s.drawn[0] !== before; }",
                arg=before["drawn"][0],
            )
            after_bits = page.evaluate(STATE, "squeezelab-explore")
            assert after_bits["active"] == [1, 0]
            assert after_bits["bits"] == [4]
            assert len(after_bits["drawn"]) == 1 and after_bits["drawn"] != before["drawn"]

            _click_step(page, slider=1, step=1)  # sparsity 0% -> 50%
            page.wait_for_function(
                f"() => ({STATE})('squeezelab-explore').points.every(p => p[0] !== 'sparsity' || Math.abs(p[1] - 0.5) < 0.05)"
            )
            moved = page.evaluate(STATE, "squeezelab-explore")
            assert moved["active"] == [1, 1]
            row = table[(table["bits"] == 4) & (table["sparsity"] == 0.5) & ~table["is_baseline"]].iloc[0]
            (_, size_x, size_y), (_, sparsity_x, sparsity_y) = sorted(moved["points"])  # "size" < "sparsity"
            assert (size_x, size_y, sparsity_y) == (float(row["size_bytes"]), row["accuracy"], row["accuracy"])
            assert 0 < abs(sparsity_x - 0.5) <= DODGE * 0.5  # each width's marker is set a little to the side
            violations = page.evaluate("() => window.__cspViolations")
        finally:
            browser.close()
    wall = time.perf_counter() - start

    assert blocked == []
    assert [u for u in requested if u != url] == []
    assert violations == []
    assert errors == []
    with capsys.disabled():
        print(f"\n[report browser] {path.stat().st_size:,} bytes; render + slider check {wall:.2f} s")

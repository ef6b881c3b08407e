"""Charts on a 390 px phone screen, in headless Chromium: a chart that is wider than the screen
scrolls, says so, and nothing of it is cut off (scrolled to its end, its last bar and label show
whole); on a wide screen the hint is hidden and nothing scrolls. Screenshots go to the tmp dir.
Skips like test_browser.py when chromium, chromedriver or selenium are missing.
"""

from __future__ import annotations

import base64
import json
import os

import pytest

import tests
from gpudiag.views import compare, render
from tests.views.test_browser import CHROMEDRIVER, CHROMIUM, FLAGS, webdriver

pytestmark = pytest.mark.browser
HERE = os.path.join(tests.TESTS, "recorded_views")

# Per figure: does it scroll, is the hint shown, does every drawn element lie inside the SVG's box
# (so the scrolling box reaches all of it), and after scrolling to the end is the SVG's right edge
# inside the scrolling box.
MEASURE = """
return Array.from(document.querySelectorAll('figure.chart-fig')).filter(function (f) {
  return f.querySelector('svg.chart'); }).map(function (f) {
  var box = f.querySelector('.chart-scroll'), svg = box.querySelector('svg.chart');
  var hint = f.querySelector('.scroll-hint');
  var s = svg.getBoundingClientRect(), outside = [];
  svg.querySelectorAll('text, rect, line, polyline, circle, path').forEach(function (el) {
    var b = el.getBoundingClientRect();
    if (b.width === 0 && b.height === 0) return;
    if (b.left < s.left - 1 || b.right > s.right + 1 || b.top < s.top - 1 || b.bottom > s.bottom + 1)
      outside.push(el.tagName + ':' + (el.textContent || '').slice(0, 40));
  });
  box.scrollLeft = box.scrollWidth;
  var end = svg.getBoundingClientRect().right <= box.getBoundingClientRect().right + 1;
  box.scrollLeft = 0;
  return {id: f.id, scrolls: box.scrollWidth > box.clientWidth + 1,
          hint: hint ? getComputedStyle(hint).display !== 'none' : false,
          outside: outside, end_reachable: end, svg_w: s.width};
});
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def _page(tmp_path, name):
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        rep = json.load(fh)
    page = tmp_path / (name[:-5] + ".html")
    page.write_text(render.render_html(rep), encoding="utf-8")
    return page


def _measure(drv, page, width, shot):
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500})
    drv.get(page.as_uri())
    figures = drv.execute_script(MEASURE)
    height = drv.execute_script("return document.documentElement.scrollHeight")
    png = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}})
    shot.write_bytes(base64.b64decode(png["data"]))
    return figures


@pytest.mark.parametrize("name", ["cpu-only-real.json", "gpu-ubuntu.json", "gpu-windows-wddm.json"])
def test_charts_at_390px_scroll_with_a_hint_and_nothing_cut_off(browser, tmp_path, name):
    page = _page(tmp_path, name)
    figures = _measure(browser, page, 390, tmp_path / f"{page.stem}-390.png")
    assert figures
    for f in figures:
        assert f["scrolls"] and f["hint"], f  # 390 px is narrower than a chart's legible width
        assert f["outside"] == [], f
        assert f["end_reachable"], f
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 391  # only charts scroll


@pytest.mark.parametrize("name", ["cpu-only-real.json", "gpu-ubuntu.json"])
def test_charts_on_a_wide_screen_do_not_scroll_and_hide_the_hint(browser, tmp_path, name):
    page = _page(tmp_path, name)
    for f in _measure(browser, page, 1100, tmp_path / f"{page.stem}-1100.png"):
        assert not f["scrolls"] and not f["hint"] and f["outside"] == [], f


def test_the_comparison_chart_at_390px(browser, tmp_path):
    reps = []
    for name in ("gpu-ubuntu.json", "gpu-windows-wddm.json"):
        with open(os.path.join(HERE, name), encoding="utf-8") as fh:
            reps.append(json.load(fh))
    page = tmp_path / "compare.html"
    page.write_text(compare.render_compare(reps, ["ubuntu", "windows"], "html"), encoding="utf-8")
    figures = _measure(browser, page, 390, tmp_path / "compare-390.png")
    assert figures
    for f in figures:
        assert f["hint"] == f["scrolls"] and f["outside"] == [] and f["end_reachable"], f

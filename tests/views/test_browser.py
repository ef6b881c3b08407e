"""The HTML report and the comparison in a real headless Chromium (selenium + chromedriver).

Checks: no console errors, no network request other than the file itself, every chart <svg> drawn
(elements with non-zero boxes), in the light and dark schemes and on a 390 px wide screen; writes
screenshots to the test's tmp dir. Skips when chromium, chromedriver or selenium are missing.
CI needs: apt `chromium chromium-driver`, pip `selenium` (in the `test` extra).
"""

from __future__ import annotations

import base64
import json
import os
import shutil

import pytest

import tests
from gpudiag.views import compare, render

pytestmark = pytest.mark.browser
HERE = os.path.join(tests.TESTS, "recorded_views")
CHROMIUM = next((p for p in (os.environ.get("GPUDIAG_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
CHROMEDRIVER = os.environ.get("GPUDIAG_CHROMEDRIVER") or shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)", allow_module_level=True)

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio")


def fixture(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    opts.add_argument("--window-size=1100,900")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


# A page opened from file:// cannot load the browser's own pages' resources: requests for these are the
# new-tab page's, logged late on a busy machine; data: URLs are inline, not requests to anywhere.
BROWSER_OWN = ("chrome:", "chrome-untrusted:", "devtools:", "data:")


def _requests(drv):
    """URLs the page asked the network (or the file system) for, from the DevTools performance log.
    Requests of the browser's own pages (chrome://new-tab-page, which newer Chromium still loads while the
    report opens) are not the report's."""
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.requestWillBeSent":
            continue
        url = msg["params"]["request"]["url"]
        if not str(msg["params"].get("documentURL", "")).startswith(BROWSER_OWN) and not url.startswith(BROWSER_OWN):
            urls.append(url)
    return urls


def _console_errors(drv):
    return [e for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def _screenshot(drv, path, width):
    """Full-page PNG at the given CSS width (DevTools capture beyond the viewport)."""
    height = drv.execute_script("return document.documentElement.scrollHeight")
    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000


CHART_CHECK = """
return Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {
  var box = svg.getBoundingClientRect();
  var drawn = Array.from(svg.querySelectorAll('rect, circle, polyline, line, path')).filter(function (el) {
    var b = el.getBBox(); return b.width > 0 || b.height > 0; }).length;
  var texts = svg.querySelectorAll('text').length;
  var fill = getComputedStyle(svg.querySelector('rect, circle') || svg).fill;
  return {id: svg.closest('figure') ? svg.closest('figure').id : '', w: box.width, h: box.height,
          drawn: drawn, texts: texts, fill: fill};
});
"""


def _open_and_check(drv, page, tmp_path, stem, expected_charts):
    url = page.as_uri()
    drv.execute_cdp_cmd("Network.enable", {})
    for scheme in ("light", "dark"):
        for width in (1100, 390):
            drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500})
            drv.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            drv.get_log("performance")  # drop what the browser did before this page (most of its new-tab page)
            drv.get_log("browser")
            drv.get(url)
            assert drv.execute_script("return document.readyState") == "complete"
            assert drv.execute_script(
                "return matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
            charts = drv.execute_script(CHART_CHECK)
            assert sorted(c["id"] for c in charts) == sorted(expected_charts)
            for c in charts:
                assert c["w"] > 100 and c["h"] > 50, c
                assert c["drawn"] >= 3 and c["texts"] >= 3, c
                assert c["fill"] not in ("none", "rgb(0, 0, 0)", ""), c  # colours come from the stylesheet
            # nothing wider than the screen except inside the scrolling wrappers
            assert drv.execute_script("return document.documentElement.scrollWidth") <= width + 1
            _screenshot(drv, tmp_path / f"{stem}-{scheme}-{width}.png", width)
            reqs = [u for u in _requests(drv) if u != url]
            assert reqs == [], f"network requests from the page: {reqs}"
            assert _console_errors(drv) == []
    bg = drv.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(13, 17, 23)"  # the dark scheme applied on the last pass


def test_report_in_chromium(browser, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render.render_html(fixture("gpu-ubuntu.json")), encoding="utf-8")
    _open_and_check(browser, page, tmp_path, "report",
                    ["chart-gil", "chart-pcie", "chart-tournament", "chart-idle", "chart-gaps", "chart-util"])
    # print: black on white whatever the screen scheme, collapsed numbers printed open
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print", "features": [
        {"name": "prefers-color-scheme", "value": "dark"}]})
    assert browser.execute_script("return getComputedStyle(document.body).color") == "rgb(0, 0, 0)"
    assert browser.execute_script(
        "return document.querySelector('#chart-pcie details table').getBoundingClientRect().height") > 100
    print(f"screenshots in {tmp_path}")


def test_cpu_report_in_chromium(browser, tmp_path):
    page = tmp_path / "cpu.html"
    page.write_text(render.render_html(fixture("cpu-linux.json")), encoding="utf-8")
    _open_and_check(browser, page, tmp_path, "cpu", ["chart-gil", "chart-tournament"])


def test_comparison_in_chromium(browser, tmp_path):
    names = ["gpu-ubuntu", "gpu-windows-wddm", "cpu-linux"]
    reports = [fixture(n + ".json") for n in names]
    page = tmp_path / "compare.html"
    page.write_text(compare.render_compare(reports, names, "html"), encoding="utf-8")
    _open_and_check(browser, page, tmp_path, "compare", ["chart-compare"])


def test_the_checks_catch_a_request_and_a_console_error(browser, tmp_path):
    """The harness itself: an external image and a script error must be seen (so a pass means something)."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                    '<script>undefinedFunction()</script></body></html>', encoding="utf-8")
    browser.get_log("performance")
    browser.get(page.as_uri())
    assert "http://127.0.0.1:9/x.png" in _requests(browser)
    assert any("undefinedFunction" in e["message"] for e in _console_errors(browser))


LEAD = """
var el = document.getElementById(arguments[0]), first = document.querySelector('body > section');
return {top: el.getBoundingClientRect().top, inFirst: first.contains(el), firstId: first.id,
        text: el.textContent};
"""


@pytest.mark.parametrize("name, lead_id, expected_charts", [
    ("fleet-real.json", "fleet-verdict", ["chart-fleet-relative", "chart-fleet-intra_node"]),
    ("watch-real.json", "recommendation-headline", ["chart-watch-gil", "chart-watch-memory"]),
])
def test_fleet_and_watch_reports_lead_with_their_own_verdict_in_chromium(browser, tmp_path, name, lead_id,
                                                                          expected_charts):
    rep = fixture(name)
    page = tmp_path / name.replace(".json", ".html")
    page.write_text(render.render_html(rep), encoding="utf-8")
    _open_and_check(browser, page, tmp_path, name.split("-")[0], expected_charts)
    answer = (rep["probes"]["fleet"]["data"]["verdict"] if "fleet" in rep["probes"]
              else rep["recommendation"]["headline"])
    for width in (1100, 390):
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500})
        browser.get(page.as_uri())
        lead = browser.execute_script(LEAD, lead_id)
        assert lead["firstId"] == "summary" and lead["inFirst"], lead
        assert lead["text"].strip() == answer
        assert 0 < lead["top"] < 900, lead  # on the first screen, at desktop and phone widths
        if "watch" in rep["probes"]:  # the job comes first: its command is above the recommendation
            job = browser.execute_script("return document.querySelector('.job code').getBoundingClientRect().top")
            assert job < lead["top"]


def test_a_report_in_a_notebook_cell_shows_in_its_own_frame(browser, tmp_path):
    """What Jupyter shows for a Report (_repr_html_): the report in a sandboxed frame that makes no
    request, raises no error, and does not restyle the notebook around it."""
    from gpudiag.api import Report

    rep = Report(fixture("watch-real.json"))
    page = tmp_path / "notebook.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="background: rgb(1, 2, 3)">'
                    f'<h1 id="nb">a notebook</h1>{rep._repr_html_()}</body></html>', encoding="utf-8")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1100, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    browser.get_log("performance")
    browser.get_log("browser")
    browser.get(page.as_uri())
    assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") == "rgb(1, 2, 3)"
    assert browser.execute_script("return document.querySelector('iframe').getBoundingClientRect().height") > 500
    browser.switch_to.frame(browser.find_element("css selector", "iframe"))
    assert browser.execute_script("return document.getElementById('recommendation-headline').textContent").strip() \
        == rep["recommendation"]["headline"]
    assert len(browser.execute_script("return document.querySelectorAll('svg.chart')")) == 2
    browser.switch_to.default_content()
    _screenshot(browser, tmp_path / "notebook.png", 1100)
    assert [u for u in _requests(browser) if u != page.as_uri()] == []
    assert _console_errors(browser) == []


PAGES = """
var pages = Array.from(document.querySelectorAll('details.page'));
return {count: pages.length, open: pages.filter(function (d) { return d.open; }).length,
        height: pages.length ? pages[0].getBoundingClientRect().height : -1,
        lookAt: Array.from(document.querySelectorAll('caption')).some(function (c) {
          return c.textContent === 'Ranks to look at'; })};
"""


def test_a_fleet_of_twelve_hundred_ranks_in_chromium(browser, tmp_path):
    """Issue 28: a large fleet's page leads with its verdict on the first screen, draws the nodes' heat map,
    and shows its rank table as collapsed pages (no row drawn until one is opened)."""
    from tests.views.test_fleet_scale_views import large_fleet

    rep = large_fleet()
    page = tmp_path / "fleet-large.html"
    page.write_text(render.render_html(rep), encoding="utf-8")
    print(f"\n{page.stat().st_size:,} bytes of HTML for {rep['probes']['fleet']['data']['world_size']} ranks")
    _open_and_check(browser, page, tmp_path, "fleet-large", ["chart-fleet-heatmap"])
    for width in (1100, 390):
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500})
        browser.get(page.as_uri())
        lead = browser.execute_script(LEAD, "fleet-verdict")
        assert lead["firstId"] == "summary" and 0 < lead["top"] < 900, lead
        assert lead["text"].strip() == rep["probes"]["fleet"]["data"]["verdict"]
        pages = browser.execute_script(PAGES)
        # Closed: a page is its one-line summary; its 500 rows take no room until it is opened.
        assert (pages["count"], pages["open"], pages["lookAt"]) == (3, 0, True) and pages["height"] < 60, pages
    browser.execute_script("document.querySelector('details.page').open = true")
    assert browser.execute_script(PAGES)["height"] > 2000  # opened, the page's 500 rows are there

"""The leaderboard in a real headless browser (Debian's ``chromium``), driven through the Chrome
DevTools Protocol over ``--remote-debugging-pipe``: standard library only, no port, no websocket.

Renders the site from a small real matrix, opens a dataset page from disk and checks: no console
error, clicking a column header reorders the ranking table, a reconstruction image is visible, the
plot <select> switches plots; saves screenshots (also copied to /tmp/leaderboard-screenshot.png).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_leaderboard import small_matrix_store

from leaderboard import render_site

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]
SCREENSHOT_COPY = Path("/tmp/leaderboard-screenshot.png")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(apt-get install chromium); .ci/run installs it")


class Browser:
    """A headless chromium and one page, spoken to with CDP messages over two pipes (fds 3 and 4)."""

    def __init__(self, user_data_dir: Path, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.events: list[dict] = []
        self.replies: queue.Queue = queue.Queue()
        self.next_id = 0
        to_browser, self.out = self._pipe()
        self.inp, from_browser = self._pipe()

        def to_fds_3_and_4() -> None:  # runs in the child: chromium reads fd 3 and writes fd 4
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            preexec_fn=to_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    @staticmethod
    def _pipe() -> tuple[int, int]:
        read, write = os.pipe()
        return read, write

    def _read(self) -> None:
        """Split chromium's output on NUL bytes; replies go to the queue, events to the list."""
        buffer = b""
        with os.fdopen(self.inp, "rb", buffering=0) as stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    (self.replies.put if "id" in message else self.events.append)(message)

    def call(self, method: str, **params):
        """Send one command (to the page's session once attached) and return its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self.replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply["id"] == self.next_id:
                break
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaiting a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (images included)."""
        seen = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for(lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events[seen:]))

    def wait_for(self, condition, what: str = "the page") -> None:
        deadline = time.monotonic() + self.timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads the page reported."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(str(params["exceptionDetails"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return errors

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params = {"format": "png"}
        if full_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height,
                                                            "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return path

    def close(self) -> None:
        try:
            self.session = None
            self.call("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.out)


@pytest.fixture(scope="module")
def site(registry, shared_cache, tmp_path_factory) -> Path:
    """The leaderboard of test_leaderboard's small real matrix (built once for both modules)."""
    store = small_matrix_store(registry, shared_cache, tmp_path_factory)
    return render_site(store, tmp_path_factory.mktemp("leaderboard-browser") / "site").parent


@pytest.fixture
def browser(tmp_path):
    chromium = Browser(tmp_path / "user-data")
    chromium.call("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1, mobile=False)
    yield chromium
    chromium.close()


def dataset_page(site: Path) -> Path:
    return site / "digits-limit-500-target_epochs-5.html"


def ranking_order(browser: Browser, column: str) -> list:
    return browser.evaluate(f"[...document.querySelectorAll('#ranking-table tbody tr')]"
                            f".map(r => r.querySelector('[data-col=\"{column}\"]').dataset.value)")


def test_index_loads_and_links_the_dataset_page(site, browser):
    browser.open(site.joinpath("index.html").as_uri())
    assert browser.evaluate("document.querySelector('table.board tbody a').getAttribute('href')") == \
        dataset_page(site).name
    browser.click("table.board tbody a")
    browser.wait_for(lambda: browser.evaluate("location.href") == dataset_page(site).as_uri(), "the link")
    assert browser.console_errors() == []


def test_dataset_page_in_a_real_browser(site, browser, tmp_path):
    browser.open(dataset_page(site).as_uri())
    gallery_loaded = "[...document.querySelectorAll('#reconstructions img')].every(i => i.complete)"
    browser.wait_for(lambda: browser.evaluate(gallery_loaded), "the reconstruction images")
    shot = browser.screenshot(tmp_path / "leaderboard.png")
    shutil.copyfile(shot, SCREENSHOT_COPY)
    browser.screenshot(tmp_path / "leaderboard-full.png", full_page=True)
    assert shot.stat().st_size > 10_000

    assert browser.evaluate("document.querySelectorAll('#ranking-table tbody tr').length") == 3
    before = ranking_order(browser, "defense")
    browser.click("#ranking-table th[data-col='defense']")
    after = ranking_order(browser, "defense")
    assert after == sorted(before) and after != before
    browser.click("#ranking-table th[data-col='defense']")
    assert ranking_order(browser, "defense") == sorted(before, reverse=True)
    browser.click("#ranking-table th[data-col='accuracy']")
    accuracies = [float(v) for v in ranking_order(browser, "accuracy")]
    assert accuracies == sorted(accuracies, reverse=True)

    visible = browser.evaluate(
        "[...document.querySelectorAll('#reconstructions img')].map(i => [i.naturalWidth, "
        "i.getBoundingClientRect().width, getComputedStyle(i).visibility])")
    assert visible and all(natural > 0 and width > 0 and shown == "visible" for natural, width, shown in visible)

    shown = "[...document.querySelectorAll('[data-plot]')].filter(f => !f.hidden).map(f => f.dataset.plot)"
    assert browser.evaluate(shown) == ["p0"]
    browser.evaluate("(s => { s.value = s.options[1].value; s.dispatchEvent(new Event('change')); })"
                     "(document.getElementById('plot-choice'))")
    assert browser.evaluate(shown) == ["p1"]
    assert browser.console_errors() == []


def test_ranking_states_its_utility_budget_and_marks_the_defenses_over_it(site, browser):
    """The page says the rule it ranks by, and every defense over the budget is marked and below
    every one within it."""
    browser.open(dataset_page(site).as_uri())
    budget = browser.evaluate("(e => [e.textContent, e.getBoundingClientRect().width, "
                              "getComputedStyle(e).visibility])(document.getElementById('utility-budget'))")
    assert budget[0] == "0.05" and budget[1] > 0 and budget[2] == "visible"
    rows = browser.evaluate("[...document.querySelectorAll('#ranking-table tbody tr')].map(r => "
                            "[r.classList.contains('over-budget'), !!r.querySelector('.over-budget-mark')])")
    marked = [over for over, _ in rows]
    assert all(over == has_mark for over, has_mark in rows)
    assert marked == sorted(marked), rows  # within the budget first, then those over it
    assert browser.console_errors() == []


def test_plot_labels_do_not_overlap(browser, tmp_path):
    """The privacy-utility plot's point labels, as the browser lays them out, do not intersect, even
    for seven defenses crowded at utility 0.96-0.99 (the default matrix's cluster)."""
    from test_leaderboard import _scored, _store
    crowd = [("identity", 0.99, 0.0), ("split:layer=relu2", 0.985, 0.2), ("noise:scale=0.05", 0.98, 0.25),
             ("privacy-finetune", 0.975, 0.3), ("dapter:lam=0.5", 0.97, 0.22), ("box-blur", 0.965, 0.35),
             ("disguised-nets:noise=25", 0.96, 0.28)]
    store = _store(tmp_path, [cell for name, accuracy, score in crowd
                              for cell in _scored(name, "inv", (score, score), accuracy=accuracy)])
    page = render_site(store, tmp_path / "site", claims={}).with_name("digits.html")
    browser.open(page.as_uri())
    boxes = browser.evaluate(
        "[...document.querySelectorAll('[data-plot]:not([hidden]) svg text.label')].map(t => {"
        " const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, t.textContent]; })")
    assert len(boxes) == len(crowd), boxes
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_x = min(a[2], b[2]) - max(a[0], b[0])
            overlap_y = min(a[3], b[3]) - max(a[1], b[1])
            assert overlap_x <= 0.5 or overlap_y <= 0.5, (a, b)

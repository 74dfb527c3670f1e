"""The live page in a real headless Chromium: submit a job from the form, watch its output
and progress live, see markup shown as text, download, cancel (fixtures: tests/web/browser.py).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from outspool import Outspool
from outspool.codec import decode
from tests.helpers import wait_until
from tests.web.browser import chromium, open_page, page
from tests.web.conftest import Served

if TYPE_CHECKING:
    from playwright.sync_api import APIResponse, Page, Route

__all__ = ["chromium", "open_page", "page"]  # fixtures

MARKS = 10  # lines whose commit-to-screen latency is measured

pytestmark = pytest.mark.browser

#: Waits for the file GATE.i before step i; prints colours, stderr, \r redraws, markup, marks.
PROGRAM = r"""
import os, sys, time
GATE = {gate!r}
def wait(i):
    while not os.path.exists(f"{{GATE}}.{{i}}"):
        time.sleep(0.002)
print("downloading\r\x1b[2K\x1b[1;32mstarting\x1b[0m the build \x1b[38;5;208m(256 colours)\x1b[0m")
print("<script>alert(1)</script> <img src=x onerror=alert(2)>")
print("warning: this line is on stderr", file=sys.stderr)
sys.stdout.write("fetch 10%\rfetch 60%\rfetch 100%\n")
print("step 1/4 25%")
wait(0)
print("step 2/4 50%")
for k in range({marks}):
    wait(k + 1)
    print(f"MARK {{k}} {{time.time():.6f}}")
print("step 3/4 75%")
wait({marks} + 1)
print("step 4/4 100%")
"""

#: Records when each MARK line first shows in the log (Date.now(), ms since the epoch).
OBSERVE = """() => {
  window.__marks = {};
  const seen = () => {
    const log = document.getElementById("log");
    if (!log) return;
    for (const m of log.textContent.matchAll(/MARK (\\d+) /g)) {
      if (!(m[1] in window.__marks)) window.__marks[m[1]] = Date.now();
    }
  };
  new MutationObserver(seen).observe(document.body,
    { subtree: true, childList: true, characterData: true });
}"""


SpawnWorker = Callable[[], "subprocess.Popen[bytes]"]


@pytest.fixture
def worker(db_path: Path, spawn_cli: Callable[..., subprocess.Popen[bytes]]) -> SpawnWorker:
    return lambda: spawn_cli("worker", "--burst", "--db", str(db_path))


def submit_from_form(page: Page, code: str) -> str:
    page.goto("/")
    page.select_option("select[name=language]", "python")
    page.fill("textarea[name=code]", code)
    page.fill("input[name=name]", "browser test")
    page.click("button[type=submit]")
    page.wait_for_url("**/x/*")
    return page.url.rsplit("/", 1)[1]


def bar_value(page: Page) -> float:
    return float(page.eval_on_selector("progress.bar", "bar => bar.value"))


def wait_for_bar(page: Page, value: int) -> None:
    page.wait_for_function(f"() => document.querySelector('progress.bar')?.value === {value}")


def test_live_page(
    page: Page,
    served: Served,
    spool: Outspool,
    worker: SpawnWorker,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    execution_id = submit_from_form(page, PROGRAM.format(gate=str(gate), marks=MARKS))
    page.evaluate(OBSERVE)
    worker()
    log = page.locator("#log")

    page.locator("#log").get_by_text("step 1/4 25%").wait_for()
    wait_for_bar(page, 25)
    assert page.locator("#log script, #log img").count() == 0
    markup = log.locator(".line .tx", has_text="<script>alert(1)</script>")
    assert markup.count() == 1
    assert markup.text_content() == "<script>alert(1)</script> <img src=x onerror=alert(2)>"
    stderr = log.locator(".line.stderr .tx")
    assert stderr.text_content() == "warning: this line is on stderr"
    assert log.locator("span.fg-2.b").text_content() == "starting"
    first = log.locator(".line[data-line='1'] .tx").text_content()
    assert first == "starting the build (256 colours)"  # erased by ESC[2K after \r
    assert log.locator(".line .tx", has_text="fetch").text_content() == "fetch 100%"
    assert "\x1b" not in (log.text_content() or "")
    assert_stderr_is_not_an_error(page)

    (tmp_path / "gate.0").touch()
    wait_for_bar(page, 50)
    for k in range(MARKS):
        (tmp_path / f"gate.{k + 1}").touch()
        page.wait_for_function(f"() => '{k}' in window.__marks")
    page.locator("#log").get_by_text("step 3/4 75%").wait_for()
    wait_for_bar(page, 75)
    page.screenshot(path=str(tmp_path / "monitor.png"))
    report_latency(page, spool, execution_id, tmp_path)

    (tmp_path / f"gate.{MARKS + 1}").touch()
    page.locator(".head [data-status=succeeded]").wait_for()
    wait_for_bar(page, 100)
    assert page.locator("#cancel").is_disabled()
    with page.expect_download() as download:
        page.click("a.raw-all")
    assert Path(download.value.path()).read_bytes() == spool.read(execution_id)

    page.click("text=all executions")
    page.wait_for_url(lambda url: url.rstrip("/") == served.url.rstrip("/"))
    row = page.locator(f"tr[data-id='{execution_id}']")
    row.locator("[data-status=succeeded]").wait_for()
    assert bar_value(page) == 100
    page.screenshot(path=str(tmp_path / "list.png"))


def report_latency(page: Page, spool: Outspool, execution_id: str, where: Path) -> None:
    """Commit (the chunk's timestamp) to shown in the page, per MARK line; printed, not judged."""
    shown: dict[str, int] = page.evaluate("() => window.__marks")
    committed: dict[str, float] = {}
    for record in spool.store.chunks_after(execution_id, -1, 10_000):
        text = decode(record).stdout.decode()
        for line in text.splitlines():
            if line.startswith("MARK "):
                committed[line.split()[1]] = record.timestamp
    printed = {k: float(v.split()[2]) for k, v in _mark_lines(spool, execution_id).items()}
    commit_ms = [shown[k] - committed[k] * 1000 for k in shown]
    write_ms = [shown[k] - printed[k] * 1000 for k in shown]
    result = {
        "commit_to_browser_ms_median": statistics.median(commit_ms),
        "commit_to_browser_ms_max": max(commit_ms),
        "print_to_browser_ms_median": statistics.median(write_ms),
        "print_to_browser_ms_max": max(write_ms),
        "samples": len(commit_ms),
    }
    (where / "latency.json").write_text(json.dumps(result, indent=2))
    print(f"\nfollow latency: {json.dumps(result)}", file=sys.stderr)


def _mark_lines(spool: Outspool, execution_id: str) -> dict[str, str]:
    text = spool.read(execution_id).decode()
    return {line.split()[1]: line for line in text.splitlines() if line.startswith("MARK ")}


def cancel_from_the_page(page: Page, worker: SpawnWorker, tmp_path: Path) -> str:
    """Submit a program that never ends, run it, press Cancel, wait for the page to show
    ``cancelled``; the execution's ID."""
    code = PROGRAM.format(gate=str(tmp_path / "never"), marks=1)
    execution_id = submit_from_form(page, code)
    worker()
    page.locator("#log").get_by_text("step 1/4 25%").wait_for()
    page.click("#cancel")
    page.locator(".head [data-status=cancelled]").wait_for(timeout=60_000)
    return execution_id


def test_cancel_button(
    page: Page, served: Served, spool: Outspool, worker: SpawnWorker, tmp_path: Path
) -> None:
    execution_id = cancel_from_the_page(page, worker, tmp_path)
    assert page.locator("#cancel").is_disabled()
    wait_until(lambda: spool.get(execution_id).status.finished, message="cancelled")


def test_a_late_answer_to_cancel_never_hides_the_end(
    page: Page, served: Served, spool: Outspool, worker: SpawnWorker, tmp_path: Path
) -> None:
    """The answer to Cancel (the record as it was: running, cancel requested) can arrive
    after the live stream's final status; the page keeps showing the end."""
    held: list[tuple[Route, APIResponse]] = []
    page.route("**/cancel", lambda route: held.append((route, route.fetch())))
    execution_id = cancel_from_the_page(page, worker, tmp_path)
    assert spool.get(execution_id).status.value == "cancelled"
    page.evaluate(COUNT_RENDERS)
    (route, answer), *_ = held
    assert answer.json()["status"] == "running"
    route.fulfill(response=answer)
    page.wait_for_function("() => window.__renders > 0")
    assert page.locator(".head [data-status]").get_attribute("data-status") == "cancelled"
    assert page.locator("#cancel").is_disabled()


#: Counts the times the page redraws the execution's head from now on.
COUNT_RENDERS = """() => {
  window.__renders = 0;
  new MutationObserver(() => { window.__renders += 1; })
    .observe(document.querySelector(".head"), { childList: true });
}"""


def assert_stderr_is_not_an_error(page: Page) -> None:
    """stderr lines are marked in the margin only: same text colour, no background."""
    look = """sel => { const s = getComputedStyle(document.querySelector(sel));
        return [s.color, s.backgroundColor]; }"""
    out = page.evaluate(look, "#log .line.stdout .tx")
    err = page.evaluate(look, "#log .line.stderr .tx")
    assert err == out
    assert page.evaluate(look, "#log .line.stderr")[1] in ("rgba(0, 0, 0, 0)", "transparent")
    margin = page.evaluate(
        "() => getComputedStyle(document.querySelector('#log .line.stderr .ln')).borderRightColor"
    )
    assert margin != page.evaluate(
        "() => getComputedStyle(document.querySelector('#log .line.stdout .ln')).borderRightColor"
    )

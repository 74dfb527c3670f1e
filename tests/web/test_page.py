"""The execution page and the list in Chromium: a million lines, line links, search, the
terminal renderer, following, filters, themes, and the API reference with no internet."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from outspool import Outspool, Running
from tests.web.browser import OpenPage, chromium, open_page, page
from tests.web.conftest import Served

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

__all__ = ["chromium", "open_page", "page"]  # fixtures

pytestmark = pytest.mark.browser
MILLION = 1_000_000
LOG_STYLE = """sel => { const s = getComputedStyle(document.querySelector(sel));
  return {color: s.color, background: s.backgroundColor, lines: s.textDecorationLine}; }"""


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def text_of(page: Page, line: int) -> str | None:
    return page.locator(f"#log .line[data-line='{line}'] .tx").text_content()


#: Terminal features, one per line (see the checks in test_terminal_rendering).
ANSI = r"""
import sys
w = sys.stdout.write
w("\x1b[7minverse\x1b[27m plain\n")
w("\x1b[9mstruck\x1b[0m \x1b[4;9mboth\x1b[0m\n")
w("progress 10%\r\x1b[2Kdone\n")
w("abcdef\rXY\n")
w("keep\x1b[K\n")
w("\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ text \x1b]0;title\x07\x1b(Bend\n")
w("\x1b[38;2;255;0;0mrgb\x1b[0m \x1b[38:5:21mcolon\x1b[0m \x1b[48;5;21mbg\x1b[0m\n")
w("\x1b[31mred across\nlines\x1b[0m plain\n")
w("tab\x1b[5Gx\x08y\n")
"""


def test_terminal_rendering(page: Page, spool: Outspool) -> None:
    ex = spool.run(py(ANSI))
    page.goto(f"/x/{ex.id}")
    page.locator("#log .line[data-line='10']").wait_for()
    texts = [text_of(page, n) for n in range(1, 11)]
    assert texts == [
        "inverse plain",
        "struck both",
        "done",
        "XYcdef",
        "keep",
        "link text end",
        "rgb colon bg",
        "red across",
        "lines plain",
        "tab y",
    ]
    log = page.evaluate(LOG_STYLE, "#log")
    inverse = page.evaluate(LOG_STYLE, "#log .line[data-line='1'] .tx span")
    assert (inverse["color"], inverse["background"]) == (log["background"], log["color"])
    struck = page.locator("#log .line[data-line='2'] .tx span")
    assert page.evaluate(LOG_STYLE, "#log .line[data-line='2'] .tx span")["lines"] == "line-through"
    both = struck.nth(2).evaluate("s => getComputedStyle(s).textDecorationLine")
    assert both == "underline line-through"
    assert page.locator("#log .line[data-line='6'] .tx a").count() == 0
    colours = page.locator("#log .line[data-line='7'] .tx span")
    assert colours.nth(0).evaluate("s => getComputedStyle(s).color") == "rgb(255, 0, 0)"
    assert colours.nth(2).evaluate("s => getComputedStyle(s).color") == "rgb(0, 0, 255)"
    assert colours.nth(4).evaluate("s => getComputedStyle(s).backgroundColor") == "rgb(0, 0, 255)"
    red = page.locator("#log .line[data-line='8'] .tx span").first.get_attribute("class")
    carried = page.locator("#log .line[data-line='9'] .tx span").first.get_attribute("class")
    assert red == carried == "fg-1"


#: A million numbered lines, written in big blocks (fast to capture).
MILLION_LINES = r"""
import sys
n = int(sys.argv[1])
for start in range(0, n, 10000):
    sys.stdout.write("".join(f"{i:07d} the quick brown fox jumps over the lazy dog\n"
                             for i in range(start, min(n, start + 10000))))
"""


def line_text(n: int) -> str:
    """What line number ``n`` (1-based) of MILLION_LINES says."""
    return f"{n - 1:07d} the quick brown fox jumps over the lazy dog"


@pytest.mark.slow
def test_a_million_lines(page: Page, spool: Outspool) -> None:
    ex = spool.run(py(MILLION_LINES, str(MILLION)))
    start = time.monotonic()
    page.goto(f"/x/{ex.id}")
    last = page.locator(f"#log .line[data-line='{MILLION}']")
    last.wait_for()
    shown = time.monotonic() - start
    assert last.locator(".tx").text_content() == line_text(MILLION)
    page.locator("#log[data-complete]").wait_for(state="attached", timeout=120_000)
    loaded = time.monotonic() - start
    frame_ms = scroll_frames(page)
    print(
        f"\n1,000,000 lines ({ex.stdout_size / 1e6:.0f} MB): last screen visible after "
        f"{shown:.2f} s, all loaded after {loaded:.2f} s, scrolling {frame_ms:.1f} ms a frame",
        file=sys.stderr,
    )
    page.evaluate("() => { location.hash = '#L500000'; }")
    target = page.locator("#log .line.target[data-line='500000']")
    target.wait_for()
    assert target.locator(".tx").text_content() == line_text(500_000)
    assert page.locator("#follow").is_visible()  # reading elsewhere: following paused
    page.fill("#search", "0000041 THE")
    page.press("#search", "Enter")
    current = page.locator("#log mark.current")
    current.wait_for()
    assert current.text_content() == "0000041 the"
    assert page.locator("#log .line:has(mark.current)").get_attribute("data-line") == "42"
    assert page.locator("#search-count").text_content() == "1 / 1"


def scroll_frames(page: Page) -> float:
    """Milliseconds per frame while scrolling up the log 60 times (printed, not judged)."""
    return float(
        page.evaluate(
            """async () => {
              const log = document.getElementById("log");
              const frame = () => new Promise((done) => requestAnimationFrame(done));
              await frame();
              const start = performance.now();
              for (let i = 0; i < 60; i++) { log.scrollTop -= 400; await frame(); }
              return (performance.now() - start) / 60;
            }"""
        )
    )


#: Prints N lines, waits for GATE.0, prints N more, waits for GATE.1, prints "end".
TWO_BURSTS = r"""
import os, sys, time
gate, n = sys.argv[1], int(sys.argv[2])
def wait(i):
    while not os.path.exists(f"{gate}.{i}"):
        time.sleep(0.002)
for i in range(n):
    print(f"first {i}", flush=True)
wait(0)
for i in range(n):
    print(f"second {i}", flush=True)
wait(1)
print("end", flush=True)
"""


def test_following_pauses_when_scrolled_up_and_resumes(
    page: Page, spool: Outspool, handles: list[Running], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    handle = spool.start(py(TWO_BURSTS, str(gate), "200"))
    handles.append(handle)
    page.goto(f"/x/{handle.id}")
    page.locator("#log .line[data-line='200']").wait_for()
    assert page.locator("#follow").is_hidden()
    page.locator("#log").hover()
    page.mouse.wheel(0, -1500)
    page.locator("#follow").wait_for()
    top = page.eval_on_selector("#log", "log => log.scrollTop")
    (tmp_path / "gate.0").touch()
    page.wait_for_function("() => document.querySelector('.log-size').style.height === '7200px'")
    page.wait_for_timeout(100)  # a frame or more for the view to move, if it wrongly would
    assert page.eval_on_selector("#log", "log => log.scrollTop") == top
    assert page.locator("#log .line[data-line='400']").count() == 0
    page.click("#follow")
    page.locator("#log .line[data-line='400']").wait_for()
    assert page.locator("#follow").is_hidden()
    (tmp_path / "gate.1").touch()
    page.locator("#log .line[data-line='401']").get_by_text("end").wait_for()


def test_the_list_filters_and_shows_start_and_exit(page: Page, spool: Outspool) -> None:
    good = spool.run(py("print('fine')"), name="good")
    bad = spool.run(py("import sys; sys.exit(3)"), name="bad")
    killed = spool.run(["sh", "-c", "kill -TERM $$"], name="killed")
    page.goto("/?status=failed")
    page.locator(f"tr[data-id='{bad.id}']").wait_for()
    assert page.locator("select[name=status]").input_value() == "failed"
    page.locator(f"tr[data-id='{killed.id}']").wait_for()  # killed by a signal: failed too
    assert page.locator("tbody tr").count() == 2
    row = page.locator(f"tr[data-id='{bad.id}']")
    assert row.locator("td.exit").text_content() == "3"
    assert re.search(r"\d", row.locator("td.started").text_content() or "")
    page.select_option("select[name=status]", "")
    page.locator(f"tr[data-id='{good.id}']").wait_for()
    assert page.url.endswith("/")
    assert page.locator("tbody tr").count() == 3
    assert page.locator(f"tr[data-id='{killed.id}'] td.exit").text_content() == "143"
    page.fill("form.filters input[name=name]", "good")
    page.fill("form.filters input[name=label]", "team=web")
    page.click("form.filters button")
    page.wait_for_function("() => location.search === '?name=good&label=team%3Dweb'")


def test_a_linked_line_is_shown_and_marked(page: Page, spool: Outspool) -> None:
    ex = spool.run(py(MILLION_LINES, "3000"))
    page.goto(f"/x/{ex.id}#L120")
    target = page.locator("#log .line.target")
    target.wait_for()
    assert target.get_attribute("data-line") == "120"
    assert target.locator(".tx").text_content() == line_text(120)
    page.locator("#log .line[data-line='121'] a.ln").click()
    page.locator("#log .line.target[data-line='121']").wait_for()
    assert page.url.endswith("#L121")
    page.goto(f"/#/x/{ex.id}")  # the address of the page's earlier versions
    page.wait_for_url(f"**/x/{ex.id}")


def test_timestamps_only_when_the_server_has_them(
    page: Page, spool: Outspool, client: httpx.Client
) -> None:
    ex = spool.run(py("print('one'); print('two')"))
    page.goto(f"/x/{ex.id}")
    page.locator("#log .line[data-line='2']").wait_for()
    probe = client.get(f"/api/executions/{ex.id}/output?timestamps=true").json()
    toggle = page.locator("#timestamps-toggle")
    if "line_times" not in probe:
        page.wait_for_timeout(200)
        assert toggle.is_hidden()
        return
    toggle.locator("input").check()
    stamp = page.locator("#log .line[data-line='2'] .ts")
    page.wait_for_function(
        "() => /\\d\\d:\\d\\d:\\d\\d\\.\\d{3}/.test(document.querySelector("
        "\"#log .line[data-line='2'] .ts\")?.textContent || '')"
    )
    assert (stamp.get_attribute("title") or "")[:10] == ex.to_json()["started_at"][:10]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_themes_follow_the_system(
    open_page: OpenPage, spool: Outspool, scheme: str, tmp_path: Path
) -> None:
    ex = spool.run(py(ANSI))
    page = open_page(color_scheme=scheme)
    page.goto(f"/x/{ex.id}")
    page.locator("#log .line[data-line='10']").wait_for()
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == {"light": "rgb(255, 255, 255)", "dark": "rgb(15, 17, 21)"}[scheme]
    page.screenshot(path=str(tmp_path / f"page-{scheme}.png"))


def test_the_api_reference_needs_no_internet(page: Page, served: Served) -> None:
    requested: list[str] = []

    def only_this_server(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(served.url):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", only_this_server)
    page.goto("/api/docs")
    page.locator(".swagger-ui .opblock").first.wait_for()
    assert page.locator(".swagger-ui .opblock").count() >= 8
    assert page.locator(".swagger-ui .information-container").get_by_text("outspool").count()
    assert [url for url in requested if not url.startswith(served.url)] == []


def test_the_list_filters_by_name_and_label(page: Page, spool: Outspool) -> None:
    web = spool.run(py("print(1)"), name="build", labels={"team": "web", "env": "ci"})
    other = spool.run(py("print(2)"), name="build", labels={"team": "db"})
    unnamed = spool.run(py("print(3)"), labels={"team": "web"})
    rows = page.locator("tbody tr")

    def shown(address: str, *expected: str) -> None:
        page.goto(address)
        page.locator(f"tr[data-id='{expected[0]}']").wait_for()
        assert sorted(rows.evaluate_all("rows => rows.map((r) => r.dataset.id)")) == sorted(
            expected
        )

    shown("/?name=build", web.id, other.id)
    shown("/?label=team=web", web.id, unnamed.id)
    shown("/?name=build&label=team=web&label=env=ci", web.id)
    assert page.locator("form.filters input[name=label]").input_value() == "team=web env=ci"


def test_the_gap_of_an_output_limit_is_one_marker_line(page: Page, spool: Outspool) -> None:
    ex = spool.run(py("for i in range(1000): print(f'line {i:04d}')"), max_output=1024)
    page.goto(f"/x/{ex.id}#L53")  # 51 whole lines and "li" kept of the head, then the gap
    page.locator("#log .line.target[data-line='53']").wait_for()
    page.wait_for_function("() => document.querySelector('.log-size').style.height === '1890px'")
    texts = [text_of(page, n) for n in range(50, 57)]
    assert texts == [
        "line 0049",
        "line 0050",
        "li",
        "[outspool: 8,976 bytes dropped]",
        "8",
        "line 0949",
        "line 0950",
    ]  # and 105 lines in all (18 px each): the marker is the only line added

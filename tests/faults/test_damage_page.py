"""The page shows damaged output as an error, never as output (issue 14, defect 7), in a
real headless Chromium (fixtures: tests/web/browser.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from outspool import Outspool
from outspool.codec import Encoder
from outspool.models import Stream
from outspool.store import OutputUpdate, WriteBatch
from tests.faults.damage import CHUNKS, STDERR, STDOUT, flip, stored, tamper
from tests.web.browser import chromium, open_page, page

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["chromium", "open_page", "page"]  # fixtures

pytestmark = pytest.mark.browser


def shown_error(page: Page) -> str:
    box = page.locator(".error-box")
    box.wait_for(state="visible")
    return box.text_content() or ""


def test_a_finished_execution_s_page_shows_the_damage(spool: Outspool, page: Page) -> None:
    execution_id = stored(spool)
    tamper(spool, execution_id, 2, "stdout", flip(1))  # "hello" would show as "jello"
    page.goto(f"/x/{execution_id}")
    assert (
        shown_error(page) == f"chunk 2 of {execution_id} is damaged (its checksum does not match)"
    )
    assert "jello" not in (page.locator("#log").text_content() or "")


def test_damage_met_while_following_is_shown_and_the_stream_ends(
    spool: Outspool, page: Page
) -> None:
    execution_id = stored(spool, "live", finished=False)
    page.goto(f"/x/{execution_id}")
    page.wait_for_function("() => document.getElementById('log')?.textContent.includes('bye')")
    index = len(CHUNKS)
    record = Encoder().encode(
        execution_id, index, (len(STDOUT), len(STDERR)), [(Stream.STDOUT, b"MORE\n")], 5.0
    )
    assert record.checksum is not None
    damaged = replace(record, checksum=record.checksum ^ 1)  # damaged as it is stored
    update = OutputUpdate(execution_id, len(STDOUT) + 5, len(STDERR), index + 1, 5.0)
    spool.store.write(WriteBatch([damaged], [update]))
    assert shown_error(page) == (
        f"chunk {index} of {execution_id} is damaged (its checksum does not match)"
    )
    text = page.locator("#log").text_content() or ""
    assert "MORE" not in text and "hello" in text

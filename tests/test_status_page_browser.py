"""The collector's status page in a real browser (Debian chromium, headless,
driven by Selenium through Debian's chromedriver) against a live mesh:
a collector and agents A -> B -> C under ``opentelemetry-instrument``.

The page is a static shell that renders /v1/mesh with JavaScript, so only a
browser can show that it works: the hops appear, an open cascade is listed
with what holds it, a settled one under "recently settled", the page keeps
refreshing by itself, and a hop name with markup in it is shown as text.

The screenshot is saved in the test's directory; with
``A2A_QUIESCENCE_SCREENSHOT=docs/status-page.png`` it is also written there
(that is how the README's picture is made).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import ROOT, need_tool
from support import send_nonblocking

from a2a_quiescence.demo.harness import Mesh, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import wait_sync

pytestmark = [pytest.mark.external, pytest.mark.timeout(180)]

DEADLINE = 30.0
MARKUP_HOP = "<i>D</i>"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = need_tool("chromium", "chromium-browser")
    chromedriver = need_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def live_mesh(tmp_path: Path) -> Iterator[tuple[Mesh, str, str]]:
    """A -> B -> C; one settled cascade and one that hangs on C."""
    with Mesh(tmp_path, events=tmp_path / "events.jsonl") as mesh:
        mesh.start_collector()
        mesh.start_webhook()
        mesh.start_agent("C", wait=False)
        mesh.start_agent("B", ["C"], wait=False)
        mesh.start_agent("A", ["B"], wait=False)
        for proc in mesh.agents.values():
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=proc.popen)
        settled = new_trace_id()
        asyncio.run(send_plan(mesh.agents["A"].url, {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "push": True, "plan": {"work_ms": 20}}]}}]}, trace_id=settled))
        wait_sync(settled, endpoint=mesh.api, timeout=DEADLINE)
        hanging = new_trace_id()
        asyncio.run(send_nonblocking(mesh.agents["A"].url, {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "blocking": False, "plan": {"outcome": "hang"}}]}}]}, hanging))
        yield mesh, settled, hanging


def test_status_page_shows_hops_open_and_settled_cascades(browser: Any, live_mesh: tuple[Mesh, str, str],
                                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mesh, settled, hanging = live_mesh
    browser.get(f"{mesh.api}/")
    wait = WebDriverWait(browser, DEADLINE, poll_frequency=0.1)

    def rows(section: str) -> dict[str, str]:
        out = {}
        for row in browser.find_elements(By.CSS_SELECTOR, f"#{section} tbody tr"):
            key = row.get_attribute("data-agent") or row.get_attribute("data-trace-id")
            if key:
                out[key] = row.text
        return out

    hops = wait.until(lambda _d: (r := rows("agents")) and {"A", "B", "C"} <= set(r) and r,
                      message="the hops in the table")
    assert all(" up " in f" {hops[n]} " for n in ("A", "B", "C"))
    # the hanging cascade: open, held by C (which still works on it)
    open_rows = wait.until(lambda _d: (r := rows("open-cascades")) and hanging in r and r,
                           message="the open cascade")
    assert "open" in open_rows[hanging] and "hop C still working" in open_rows[hanging], open_rows[hanging]
    assert settled not in open_rows
    settled_rows = wait.until(lambda _d: (r := rows("settled-cascades")) and settled in r and r,
                              message="the settled cascade")
    assert settled_rows[settled].endswith("ms"), settled_rows[settled]  # its detection latency
    assert browser.find_element(By.ID, "mesh-state").text == "busy"
    # the mesh graph: every hop a node, and the edges A->B, B->C drawn
    nodes = {n.get_attribute("data-hop") for n in browser.find_elements(By.CSS_SELECTOR, "#graph-svg g.node")}
    assert {"A", "B", "C"} <= nodes
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph-svg line.edge")) >= 2
    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("A2A_QUIESCENCE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, ROOT / target)

    # it refreshes by itself: a new hop (named with markup) and a new settled cascade show up without a reload
    lone = mesh.start_agent("D", env={"OTEL_SERVICE_NAME": MARKUP_HOP})
    later = new_trace_id()
    asyncio.run(send_plan(lone.url, {"work_ms": 1}, trace_id=later))
    wait_sync(later, endpoint=mesh.api, timeout=DEADLINE)
    wait.until(lambda _d: later in rows("settled-cascades") and MARKUP_HOP in rows("agents"),
               message="the new hop and cascade without a reload")
    # markup in data is text, never elements
    assert browser.find_elements(By.CSS_SELECTOR, "#agents tbody i, #graph-svg i") == []

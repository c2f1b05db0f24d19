"""The collector's status page in a real browser (Debian chromium, headless,
driven by Selenium through Debian's chromedriver) against a live mesh:
a collector and agents A -> B -> C under ``opentelemetry-instrument``.

The page is a static shell that renders /v1/mesh with JavaScript, so only a
browser can show that it works: the hops appear, an open cascade is listed
with what holds it, a settled one under "recently settled", a hop that shut
down with a producer in flight is marked leaked and its leak listed, the page
keeps refreshing by itself, and a hop name with markup in it is shown as text.

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

import httpx
import pytest
from conftest import ROOT, need_tool
from support import send_nonblocking, wait_until

from a2a_quiescence.demo.harness import Mesh, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import wait_sync

pytestmark = [pytest.mark.external, pytest.mark.timeout(180)]

DEADLINE = 30.0
MARKUP_HOP = "<i>E</i>"


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
    """A -> B -> C and a lone D; one settled cascade, one that hangs on C, and D shut down
    without draining while it works (a leaked producer)."""
    with Mesh(tmp_path, events=tmp_path / "events.jsonl") as mesh:
        mesh.start_collector()
        mesh.start_webhook()
        mesh.start_agent("C", wait=False)
        mesh.start_agent("B", ["C"], wait=False)
        mesh.start_agent("A", ["B"], wait=False)
        mesh.start_agent("D", wait=False, no_aclose=True)
        for proc in mesh.agents.values():
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=proc.popen)
        settled = new_trace_id()
        asyncio.run(send_plan(mesh.agents["A"].url, {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "push": True, "plan": {"work_ms": 20}}]}}]}, trace_id=settled))
        wait_sync(settled, endpoint=mesh.api, timeout=DEADLINE)
        hanging = new_trace_id()
        asyncio.run(send_nonblocking(mesh.agents["A"].url, {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "blocking": False, "plan": {"outcome": "hang"}}]}}]}, hanging))
        asyncio.run(send_nonblocking(mesh.agents["D"].url, {"outcome": "hang"}, new_trace_id()))
        wait_until(lambda: any(a["agent"] == "D" and a["producers_in_flight"] for a in mesh_agents(mesh)),
                   "D's producer in flight", timeout=DEADLINE, every=0.05)
        mesh.agents["D"].stop()
        wait_until(lambda: any(a["agent"] == "D" and a["shutdown_leaked_producers"] for a in mesh_agents(mesh)),
                   "D's shutdown record", timeout=DEADLINE, every=0.05)
        yield mesh, settled, hanging


def mesh_agents(mesh: Mesh) -> list[dict[str, Any]]:
    return httpx.get(f"{mesh.api}/v1/mesh", timeout=5).json()["agents"]


def test_status_page_shows_hops_open_and_settled_cascades(browser: Any, live_mesh: tuple[Mesh, str, str],
                                                          tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    mesh, settled, hanging = live_mesh
    browser.get(f"{mesh.api}/")
    wait = WebDriverWait(browser, DEADLINE, poll_frequency=0.1)

    # The page replaces its rows every second: read them in one script, never through element handles
    # that a refresh can make stale.
    def rows(section: str) -> dict[str, str]:
        pairs = browser.execute_script(
            "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
            ".map(r => [r.dataset.agent || r.dataset.traceId || '', r.innerText])", section)
        return {key: " ".join(text.split()) for key, text in pairs if key}

    def texts(selector: str) -> list[str]:
        found = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText ?? e.textContent)", selector)
        return [" ".join(t.split()) for t in found]

    def nodes() -> dict[str, str]:
        return dict(browser.execute_script(
            "return [...document.querySelectorAll('#graph-svg g.node')].map(g => [g.dataset.hop, g.getAttribute('class')])"))

    hops = wait.until(lambda _d: (r := rows("agents")) and {"A", "B", "C", "D"} <= set(r) and r,
                      message="the hops in the table")
    assert all(" up " in f" {hops[n]} " for n in ("A", "B", "C"))
    assert "shut down" in hops["D"], hops["D"]
    # D's leak is listed, with where its producer was parked
    def leak_of_d() -> bool:
        return any(" D " in f" {t} " and "leaked at shutdown" in t and "_run_producer" in t
                   for t in texts("#incidents tr.incident"))

    wait.until(lambda _d: leak_of_d(), message="D's leak among the recent leaks")
    # the hanging cascade: open, held by C (which still works on it)
    open_rows = wait.until(lambda _d: (r := rows("open-cascades")) and hanging in r and r,
                           message="the open cascade")
    assert "open" in open_rows[hanging] and "hop C still working" in open_rows[hanging], open_rows[hanging]
    assert settled not in open_rows
    settled_rows = wait.until(lambda _d: (r := rows("settled-cascades")) and settled in r and r,
                              message="the settled cascade")
    assert settled_rows[settled].endswith("ms"), settled_rows[settled]  # its detection latency
    assert texts("#mesh-state") == ["busy"]
    # the mesh graph: every hop a node (D marked as leaked), and the edges A->B, B->C drawn
    graph = nodes()
    assert {"A", "B", "C", "D"} <= set(graph) and "leaked" in graph["D"], graph
    assert len(texts("#graph-svg line.edge")) >= 2
    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("A2A_QUIESCENCE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, ROOT / target)

    # it refreshes by itself: a new hop (named with markup) and a new settled cascade show up without a reload
    lone = mesh.start_agent("E", env={"OTEL_SERVICE_NAME": MARKUP_HOP})
    later = new_trace_id()
    asyncio.run(send_plan(lone.url, {"work_ms": 1}, trace_id=later))
    wait_sync(later, endpoint=mesh.api, timeout=DEADLINE)
    wait.until(lambda _d: later in rows("settled-cascades") and MARKUP_HOP in rows("agents"),
               message="the new hop and cascade without a reload")
    # markup in data is text, never elements
    assert texts("#agents tbody i, #graph-svg i") == []

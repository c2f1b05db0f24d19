"""The collector's status page in a real browser (Debian chromium, headless,
driven by Selenium through Debian's chromedriver) against a live mesh:
a collector and agents A -> B -> {C, F} and a lone D under ``opentelemetry-instrument``.

The page is a static shell that renders /v1/mesh with JavaScript, so only a
browser can show that it works: the hops appear, an open cascade is listed
with what holds it, a settled one under "recently settled" with its outcome
(completed, or lost when F was drained by ``aclose()`` while it worked), a
cascade held by a task waiting for its user under "awaiting input" (not
stuck), a hop that shut down with a producer in flight is marked leaked and
its leak listed, clicking a cascade opens its detail (verdict, hops, edges,
failures and losses), the page keeps refreshing by itself, a hop name with
markup in it is shown as text, and all of it works behind a bearer token.

The screenshot is saved in the test's directory; with
``A2A_QUIESCENCE_SCREENSHOT=docs/status-page.png`` it is also written there
(that is how the README's picture is made).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from conftest import ROOT, need_tool
from support import send_nonblocking, wait_until

from a2a_quiescence import names
from a2a_quiescence.demo.harness import Mesh, wait_http
from a2a_quiescence.demo.mesh import new_trace_id, send_plan
from a2a_quiescence.wait import wait_sync

pytestmark = [pytest.mark.external, pytest.mark.timeout(180)]

DEADLINE = 30.0
# far beyond the test's length: the hanging cascade stays "open" however slow the machine is
STUCK_AFTER = 600.0
MARKUP_HOP = "<i>E</i>"
TOKEN = "status-page-secret"


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


@dataclass
class LiveMesh:
    mesh: Mesh
    settled: str  # completed
    hanging: str  # open, C still works on it
    lost: str  # settled lost: F drained (aclose) while it worked
    awaiting: str  # held only by C's task waiting for its user
    awaiting_task: str  # that task's id


def relay(*hops: str, last: dict[str, Any], blocking: bool = True) -> dict[str, Any]:
    """The plan for A's request that relays through ``hops`` (the last call ``blocking`` or not), ending with ``last``."""
    plan = last
    for i, hop in enumerate(reversed(hops)):
        plan = {"calls": [{"to": hop, "blocking": blocking or i > 0, "plan": plan}]}
    return plan


@pytest.fixture
def live_mesh(tmp_path: Path) -> Iterator[LiveMesh]:
    """A -> B -> {C, F} and a lone D: one cascade settled completed; one lost, F shut down (drained with
    aclose) while it worked; one waiting for input on C; one that hangs on C; and D shut down without
    draining while it works (a leaked producer)."""
    with Mesh(tmp_path, events=tmp_path / "events.jsonl") as mesh:
        mesh.start_collector(stuck_after=STUCK_AFTER)
        mesh.start_webhook()
        mesh.start_agent("C", wait=False)
        mesh.start_agent("F", wait=False)
        mesh.start_agent("B", ["C", "F"], wait=False)
        mesh.start_agent("A", ["B"], wait=False)
        mesh.start_agent("D", wait=False, no_aclose=True)
        for proc in mesh.agents.values():
            wait_http(f"{proc.url}/.well-known/agent-card.json", proc=proc.popen)
        a_url = mesh.agents["A"].url
        settled = new_trace_id()
        asyncio.run(send_plan(a_url, {"calls": [{"to": "B", "plan": {"calls": [
            {"to": "C", "push": True, "plan": {"work_ms": 20}}]}}]}, trace_id=settled))
        state = wait_sync(settled, endpoint=mesh.api, timeout=DEADLINE)
        assert state["outcome"] == names.VERDICT_COMPLETED, state
        # F works for a minute on a non-blocking delegation; its SIGTERM drains it (aclose) meanwhile
        lost = new_trace_id()
        asyncio.run(send_nonblocking(a_url, relay("B", "F", last={"work_ms": 60_000}, blocking=False), lost))
        wait_until(lambda: any(h["hop"] == "F" and h["active"] for h in cascade(mesh, lost)["hops"]),
                   "F working on the cascade", timeout=DEADLINE, every=0.05)
        mesh.agents["F"].stop()
        state = wait_sync(lost, endpoint=mesh.api, timeout=DEADLINE)
        assert state["outcome"] == names.VERDICT_LOST, state
        # C parks its task until its user answers
        awaiting = new_trace_id()
        asyncio.run(send_plan(a_url, relay("B", "C", last={"outcome": "input"}), trace_id=awaiting))
        waiting = wait_until(lambda: (c := cascade(mesh, awaiting))["status"] == names.STATUS_AWAITING_INPUT and c,
                             "the cascade awaiting input", timeout=DEADLINE, every=0.05)
        [task] = waiting["awaiting"]
        assert task["hop"] == "C", task
        hanging = new_trace_id()
        asyncio.run(send_nonblocking(a_url, relay("B", "C", last={"outcome": "hang"}, blocking=False), hanging))
        asyncio.run(send_nonblocking(mesh.agents["D"].url, {"outcome": "hang"}, new_trace_id()))
        wait_until(lambda: any(a["agent"] == "D" and a["producers_in_flight"] for a in mesh_agents(mesh)),
                   "D's producer in flight", timeout=DEADLINE, every=0.05)
        mesh.agents["D"].stop()
        wait_until(lambda: any(a["agent"] == "D" and a["shutdown_leaked_producers"] for a in mesh_agents(mesh)),
                   "D's shutdown record", timeout=DEADLINE, every=0.05)
        yield LiveMesh(mesh, settled=settled, hanging=hanging, lost=lost, awaiting=awaiting, awaiting_task=task["task_id"])


def mesh_agents(mesh: Mesh) -> list[dict[str, Any]]:
    return httpx.get(f"{mesh.api}/v1/mesh", timeout=5).json()["agents"]


def cascade(mesh: Mesh, trace_id: str) -> dict[str, Any]:
    return httpx.get(f"{mesh.api}/v1/cascades/{trace_id}", timeout=5).json()


class Page:
    """Reads of the status page. The page replaces its rows every second: each read is one script,
    never through element handles that a refresh can make stale."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(driver, DEADLINE, poll_frequency=0.1)

    def until(self, check: Any, message: str) -> Any:
        return self.wait.until(lambda _d: check(), message=message)

    def rows(self, section: str) -> dict[str, str]:
        pairs = self.driver.execute_script(
            "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
            ".map(r => [r.dataset.agent || r.dataset.traceId || '', r.innerText])", section)
        return {key: " ".join(text.split()) for key, text in pairs if key}

    def texts(self, selector: str) -> list[str]:
        found = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText ?? e.textContent)", selector)
        return [" ".join(t.split()) for t in found]

    def nodes(self) -> dict[str, str]:
        return dict(self.driver.execute_script(
            "return [...document.querySelectorAll('#graph-svg g.node')].map(g => [g.dataset.hop, g.getAttribute('class')])"))

    def click(self, selector: str) -> bool:
        """Click the element ``selector`` names if it is there now (True), in one script."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;", selector)

    def detail(self) -> dict[str, Any]:
        """The cascade detail view as shown: its id, status and outcome, verdict badges and sentence,
        and the rows of its tables (data attributes and text)."""
        found = self.driver.execute_script("""
            const s = document.getElementById('cascade-detail');
            const rows = id => [...s.querySelectorAll(`#${id} tbody tr`)].map(r => ({...r.dataset, text: r.innerText}));
            return {shown: !s.hidden, trace_id: s.dataset.traceId || null, status: s.dataset.status || null,
                    outcome: s.dataset.outcome || null, badges: [...s.querySelectorAll('.verdict .badge')].map(b => b.innerText),
                    verdict: (s.querySelector('#detail-verdict') || {}).innerText || '',
                    hops: rows('detail-hops'), edges: rows('detail-edges'), endings: rows('detail-endings'),
                    awaiting: rows('detail-awaiting')};""")
        for table in ("hops", "edges", "endings", "awaiting"):
            for row in found[table]:
                row["text"] = " ".join(row["text"].split())
        return found

    def open_detail(self, selector: str, trace_id: str) -> dict[str, Any]:
        """Click ``selector`` (once it is on the page), then wait for the detail of ``trace_id`` to be rendered."""
        self.until(lambda: self.click(selector), f"{selector} to click")
        return self.until(lambda: (d := self.detail())["shown"] and d["trace_id"] == trace_id
                          and d["status"] not in ("loading", "error", None) and d,
                          f"the detail of {trace_id}")


def test_status_page_shows_hops_open_and_settled_cascades(browser: Any, live_mesh: LiveMesh, tmp_path: Path) -> None:
    live = live_mesh
    mesh = live.mesh
    browser.get(f"{mesh.api}/")
    page = Page(browser)

    hops = page.until(lambda: (r := page.rows("agents")) and {"A", "B", "C", "D", "F"} <= set(r) and r,
                      message="the hops in the table")
    assert all(" up " in f" {hops[n]} " for n in ("A", "B", "C"))
    assert "shut down" in hops["D"], hops["D"]
    assert "shut down" in hops["F"], hops["F"]

    # D's leak is listed, with where its producer was parked; F's drained work as cancelled at shutdown
    def incident(agent: str, *words: str) -> bool:
        return any(f" {agent} " in f" {t} " and all(w in t for w in words) for t in page.texts("#incidents tr.incident"))

    page.until(lambda: incident("D", "leaked at shutdown", "_run_producer"), "D's leak among the recent leaks")
    page.until(lambda: incident("F", "work cancelled at shutdown"), "F's cancelled work among the incidents")
    # the hanging cascade: open, held by C (which still works on it)
    open_rows = page.until(lambda: (r := page.rows("open-cascades")) and live.hanging in r and r, "the open cascade")
    assert "open" in open_rows[live.hanging] and "hop C still working" in open_rows[live.hanging], open_rows[live.hanging]
    assert live.settled not in open_rows and live.lost not in open_rows
    # the cascade waiting for its user: listed under awaiting input with its task, not as open or stuck
    awaiting_rows = page.until(lambda: (r := page.rows("awaiting-input")) and live.awaiting in r and r,
                               "the cascade awaiting input")
    assert live.awaiting_task in awaiting_rows[live.awaiting] and "input required" in awaiting_rows[live.awaiting]
    assert " C " in f" {awaiting_rows[live.awaiting]} ", awaiting_rows[live.awaiting]
    assert live.awaiting not in open_rows
    assert page.texts("#count-awaiting") == ["1"] and page.texts("#count-stuck") == ["0"]
    # settled cascades with their outcome badge: completed, and lost
    settled_rows = page.until(lambda: (r := page.rows("settled-cascades")) and {live.settled, live.lost} <= set(r) and r,
                              "the settled cascades")
    assert settled_rows[live.settled].endswith("ms"), settled_rows[live.settled]  # its detection latency
    outcomes = dict(browser.execute_script(
        "return [...document.querySelectorAll('#settled-cascades tbody tr')]"
        ".map(r => [r.dataset.traceId, [...r.querySelectorAll('.badge')].map(b => [b.innerText, b.className])])"))
    assert outcomes[live.settled] == [["completed", "badge b-completed"]], outcomes
    assert outcomes[live.lost] == [["lost", "badge b-lost"]], outcomes
    assert page.texts("#mesh-state") == ["busy"]
    # the mesh graph: every hop a node (D marked as leaked), and the edges A->B, B->C, B->F drawn
    graph = page.nodes()
    assert {"A", "B", "C", "D", "F"} <= set(graph) and "leaked" in graph["D"], graph
    assert len(page.texts("#graph-svg line.edge")) >= 3

    # the lost cascade's detail: the verdict, F's loss with its kind, task and where it was parked
    lost = page.open_detail(f'#settled-cascades tr[data-trace-id="{live.lost}"] a.cascade', live.lost)
    assert lost["outcome"] == names.VERDICT_LOST and lost["badges"] == ["settled", "lost"], lost
    assert "never got to finish" in lost["verdict"], lost["verdict"]
    [drained] = [e for e in lost["endings"] if e["hop"] == "F"]
    assert drained["kind"] == names.END_CANCELLED_BY_SHUTDOWN and drained["ended"] == "lost", drained
    assert "cancelled_by_shutdown" in drained["text"] and "executing" in drained["text"], drained
    assert "mesh.py:" in drained["text"], drained  # parked at: the plan's wait in the demo agent
    [task_id] = [x["task_id"] for x in cascade(mesh, live.lost)["losses"] if x["hop"] == "F"]
    assert f" {task_id} " in f" {drained['text']} ", drained  # the task F was working on
    assert [h["hop"] for h in lost["hops"]] == ["A", "B", "F"], lost["hops"]
    assert {(e["from"], e["to"]) for e in lost["edges"]} >= {("A", "B"), ("B", "F")}, lost["edges"]
    assert browser.current_url.endswith(f"#cascade={live.lost}")
    # the picture: the whole page (the window made as tall as it), with the lost cascade's detail open
    chrome = browser.execute_script("return window.outerHeight - window.innerHeight")
    browser.set_window_size(1400, browser.execute_script("return document.documentElement.scrollHeight") + chrome)
    page.until(lambda: browser.execute_script(
        "window.scrollTo(0, 0); return window.innerHeight >= document.documentElement.scrollHeight"), "the whole page in view")
    shot = tmp_path / "status-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("A2A_QUIESCENCE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, ROOT / target)
    browser.set_window_size(1400, 1000)

    # the awaiting cascade's detail, opened by a click on its row (not the link): awaiting input, naming C's task
    waiting = page.open_detail(f'#awaiting-input tr[data-trace-id="{live.awaiting}"] td:nth-child(2)', live.awaiting)
    assert waiting["status"] == names.STATUS_AWAITING_INPUT and waiting["outcome"] is None, waiting
    assert waiting["badges"] == ["awaiting input", "no verdict yet"], waiting
    assert [(t["hop"], t["taskId"]) for t in waiting["awaiting"]] == [("C", live.awaiting_task)], waiting["awaiting"]
    # C's work: every active unit held by the waiting task (columns: hop, active units, awaiting units, ...)
    [c_work] = [h["text"].split()[1:3] for h in waiting["hops"] if h["hop"] == "C"]
    assert c_work[0] == c_work[1] != "0", waiting["hops"]
    # the completed one
    done = page.open_detail(f'#settled-cascades tr[data-trace-id="{live.settled}"] a.cascade', live.settled)
    assert done["badges"] == ["settled", "completed"] and done["endings"][0]["text"].startswith("none"), done
    # closing it
    page.until(lambda: page.click("#detail-close"), "the close link")
    page.until(lambda: not page.detail()["shown"], "the detail view to close")

    # it refreshes by itself: a new hop (named with markup) and a new settled cascade show up without a reload
    lone = mesh.start_agent("E", env={"OTEL_SERVICE_NAME": MARKUP_HOP})
    later = new_trace_id()
    asyncio.run(send_plan(lone.url, {"work_ms": 1}, trace_id=later))
    wait_sync(later, endpoint=mesh.api, timeout=DEADLINE)
    page.until(lambda: later in page.rows("settled-cascades") and MARKUP_HOP in page.rows("agents"),
               "the new hop and cascade without a reload")
    # markup in data is text, never elements
    page.open_detail(f'#settled-cascades tr[data-trace-id="{later}"] a.cascade', later)
    assert page.texts("#agents tbody i, #graph-svg i, #cascade-detail i") == []
    assert [h["hop"] for h in page.detail()["hops"]] == [MARKUP_HOP]


def test_status_page_with_a_bearer_token(browser: Any, tmp_path: Path) -> None:
    """Behind a token, the page asks for it, then shows the mesh and a cascade's detail with it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with Mesh(tmp_path) as mesh:
        mesh.start_collector("--token", TOKEN)
        agent = mesh.start_agent("A", env={"A2A_QUIESCENCE_TOKEN": TOKEN,
                                           "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{TOKEN}"})
        trace_id = new_trace_id()
        asyncio.run(send_plan(agent.url, {"work_ms": 1}, trace_id=trace_id))
        wait_sync(trace_id, endpoint=mesh.api, timeout=DEADLINE, token=TOKEN)
        browser.get(f"{mesh.api}/#cascade={trace_id}")
        page = Page(browser)
        page.until(lambda: browser.execute_script(
            "return getComputedStyle(document.getElementById('token')).display !== 'none'"), "the token form")
        page.until(lambda: page.detail()["status"] == "error", "the detail refused without the token")
        browser.find_element(By.ID, "token-input").send_keys(TOKEN + Keys.ENTER)  # a static form: never re-rendered
        page.until(lambda: trace_id in page.rows("settled-cascades"), "the settled cascade with the token")
        detail = page.until(lambda: (d := page.detail())["status"] == names.STATUS_SETTLED and d, "its detail with the token")
        assert detail["trace_id"] == trace_id and detail["outcome"] == names.VERDICT_COMPLETED, detail
        assert [h["hop"] for h in detail["hops"]] == ["A"], detail

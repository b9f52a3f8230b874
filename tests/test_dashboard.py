"""The dashboard: its HTTP face (always) and the page in a real headless Chromium (where one is)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    EmbeddedServer,
    Identity,
    Ledger,
    Task,
    TaskBoard,
    TaskContext,
    TaskRecord,
    TaskStatus,
)
from ants_nats.access import server_config
from ants_nats.dashboard import Dashboard, SwarmState
from ants_nats.dashboard.hub import Hub
from ants_nats.dashboard.state import task_summary
from ants_nats.dashboard.tasks import TaskIndex, open_unroutable

from .conftest import ContainerServer, fresh_board

Delta = dict[str, Any]
LIVE_TIMEOUT_S = 20.0


class Gate:
    """A handler that finishes tasks at once, except ``held`` ones, which wait for ``release``."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.release = asyncio.Event()
        self.started: dict[str, asyncio.Event] = {task_id: asyncio.Event() for task_id in held}

    async def handle(self, task: Task, ctx: TaskContext) -> JsonValue:
        if task.id in self.held:
            self.started[task.id].set()
            await self.release.wait()
        return {"task": task.id, "by": ctx.lease.agent_id}


@asynccontextmanager
async def agents(board: TaskBoard, gate: Gate, names: list[str]) -> AsyncIterator[list[Agent]]:
    async with AsyncExitStack() as stack:
        started = []
        for name in names:
            agent = Agent(board, name=name, capabilities=["work"], capacity=2)
            agent.handler("work")(gate.handle)
            started.append(await stack.enter_async_context(agent))
        yield started


@asynccontextmanager
async def ledger_service(board: TaskBoard) -> AsyncIterator[None]:
    """The ledger projection (reputation comes from it), running beside the test."""
    task = asyncio.create_task(Ledger(board.nc).project(board.trail))
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[Delta]:
    """The JSON deltas of a server-sent event stream."""
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


async def until_all(deltas: AsyncIterator[Delta], *conditions: Callable[[Delta], bool]) -> None:
    """Read deltas until each condition has held for one of them (in any order)."""
    left = list(conditions)
    async with asyncio.timeout(LIVE_TIMEOUT_S):
        async for delta in deltas:
            left = [seen for seen in left if not seen(delta)]
            if not left:
                return
    raise AssertionError("the stream ended")


def is_task(task_id: str, status: str) -> Callable[[Delta], bool]:
    return lambda d: d["type"] == "task" and d["task"]["id"] == task_id and d["task"]["status"] == status


# ---------------------------------------------------------------------- HTTP, no browser


async def test_serves_the_page_and_its_assets_on_loopback(board: TaskBoard) -> None:
    async with Dashboard(board, port=0) as dashboard, aiohttp.ClientSession() as http:
        assert dashboard.url.startswith("http://127.0.0.1:")
        async with http.get(dashboard.url) as page:
            assert page.status == 200
            assert "/static/app.js" in await page.text()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for asset in ("app.js", "style.css", "index.html"):
            async with http.get(f"{dashboard.url}static/{asset}") as response:
                assert response.status == 200, asset
                assert len(await response.read()) > 500, asset
        async with http.get(f"{dashboard.url}static/../app.py") as response:
            assert response.status in (403, 404)  # nothing but the static folder is served
    with pytest.raises(RuntimeError):
        _ = dashboard.url  # stopped: nothing is bound any more


async def test_streams_a_snapshot_then_live_changes(board: TaskBoard) -> None:
    gate = Gate()
    async with (
        Dashboard(board, port=0) as dashboard,
        agents(board, gate, ["ant0", "ant1"]) as ants,
        aiohttp.ClientSession() as http,
    ):
        await board.submit(Task(id="first", kind="work", requires=("work",)))
        await board.submit(Task(id="orphan", kind="render", requires=("gpu",)))
        await board.wait(["first"], timeout=LIVE_TIMEOUT_S)

        async with http.get(f"{dashboard.url}api/events") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            deltas = sse(stream)
            snapshot = await anext(deltas)
            assert snapshot["type"] == "snapshot"
            # The feeds may still be catching up: what the snapshot lacks must come as deltas.
            agents_seen = {a["id"] for a in snapshot["agents"]}
            tasks_seen = {t["id"]: t["status"] for t in snapshot["tasks"]}
            routes_seen = set(snapshot["routes"])
            wanted = {a.id for a in ants}

            def caught_up(delta: Delta) -> bool:
                if delta["type"] == "card" and delta["card"] is not None:
                    agents_seen.add(delta["id"])
                if delta["type"] == "task":
                    tasks_seen[delta["task"]["id"]] = delta["task"]["status"]
                if delta["type"] == "route":
                    routes_seen.add(delta["route"])
                return (
                    wanted <= agents_seen
                    and tasks_seen.get("first") == "done"
                    and "orphan" in tasks_seen
                    and {"work", "gpu"} <= routes_seen
                )

            if not caught_up(snapshot):
                await until_all(deltas, caught_up)

            # A change made now reaches the open stream, as a record and as trail events.
            await board.submit(Task(id="second", kind="work", requires=("work",), depends_on=("first",)))
            # (records and trail events come through separate feeds: in either order)
            await until_all(
                deltas,
                lambda d: is_task("second", "done")(d) and d["task"]["result_preview"] is not None,
                lambda d: (
                    d["type"] == "trail"
                    and d["event"]["kind"] == "task.completed"
                    and d["event"]["ref"] == "second"
                ),
            )

            # Agents appear and leave as they do.
            async with agents(board, gate, ["visitor"]) as (visitor,):
                await until_all(
                    deltas, lambda d: d["type"] == "card" and d["kind"] == "joined" and d["id"] == visitor.id
                )
            await until_all(
                deltas, lambda d: d["type"] == "card" and d["kind"] == "left" and d["id"] == visitor.id
            )

        async with http.get(f"{dashboard.url}api/snapshot") as response:
            snap = await response.json()
        assert visitor.id not in {a["id"] for a in snap["agents"]}
        by_id = {t["id"]: t for t in snap["tasks"]}
        assert by_id["second"]["depends_on"] == ["first"]
        assert by_id["orphan"]["unroutable"] == ["gpu"]
        assert by_id["orphan"]["unroutable_reason"] == "no live agent has [gpu]"
        assert {a.id for a in ants} <= {a["id"] for a in snap["agents"]}
        assert "work" in snap["routes"] and "work" in snap["queues"]
        assert sum(b["done"] for b in snap["metrics"]["buckets"]) >= 2
        assert {"task.submitted", "task.completed"} <= {e["kind"] for e in snap["trail"]}


async def test_a_task_s_record_and_history(board: TaskBoard) -> None:
    gate = Gate()
    async with (
        Dashboard(board, port=0) as dashboard,
        agents(board, gate, ["ant0"]),
        aiohttp.ClientSession() as http,
    ):
        await board.submit(Task(id="one", kind="work", requires=("work",), payload={"n": 1}))
        await board.wait(["one"], timeout=LIVE_TIMEOUT_S)
        async with http.get(f"{dashboard.url}api/task/one") as response:
            detail = await response.json()
        assert detail["record"]["status"] == "done"
        assert detail["record"]["task"]["payload"] == {"n": 1}
        assert detail["record"]["result"]["task"] == "one"
        kinds = [e["kind"] for e in detail["history"]]
        assert kinds[0] == "task.submitted" and "task.completed" in kinds
        assert detail["waiting"] is None  # finished
        await board.submit(Task(id="orphan", kind="render", requires=("gpu",)))
        async with http.get(f"{dashboard.url}api/task/orphan") as response:
            waiting = (await response.json())["waiting"]
        assert (waiting["reason"], waiting["text"]) == ("unroutable", "unroutable: no live agent has [gpu]")
        async with http.get(f"{dashboard.url}api/task/missing") as response:
            assert response.status == 404
        async with http.get(f"{dashboard.url}api/task/no%20such") as response:
            assert response.status == 400
        # The trail view's filters query the whole trail, not only what reached the page.
        async with http.get(f"{dashboard.url}api/trail", params={"task": "one"}) as response:
            events = (await response.json())["events"]
        assert events[0]["kind"] == "task.submitted" and {e["ref"] for e in events} == {"one"}
        query = {"kind": "task.completed", "agent": "ant0"}
        async with http.get(f"{dashboard.url}api/trail", params=query) as response:
            assert [e["ref"] for e in (await response.json())["events"]] == ["one"]
        async with http.get(f"{dashboard.url}api/trail", params={"kind": "no such"}) as response:
            assert response.status == 400


async def test_a_tab_that_lags_is_dropped_and_the_others_keep_going() -> None:
    hub = Hub(SwarmState(), queue_frames=3)
    lagging, keeping_up = hub.subscribe(), hub.subscribe()
    assert b'"type":"snapshot"' in (await keeping_up.next() or b"")
    for i in range(5):
        hub.publish({"type": "test", "n": i})
        assert f'"n":{i}'.encode() in (await keeping_up.next() or b"")
    assert lagging.dropped and not keeping_up.dropped
    assert await lagging.next() is None  # its stream ends: the browser reconnects to a snapshot
    assert hub.tabs == 1


OBSERVER = Identity.generate()
AGENT = Identity.generate()


async def test_works_with_observer_credentials(tmp_path: Path) -> None:
    config = tmp_path / "auth.conf"
    config.write_text(server_config({"ant-a": AGENT.public_key}, {"watcher": OBSERVER.public_key}))
    gate = Gate()
    async with (
        EmbeddedServer(extra_args=["-c", str(config)]) as server,
        TaskBoard.connect(server.url, seed=AGENT.seed) as board,
        TaskBoard.connect(server.url, seed=OBSERVER.seed) as observer,
        Dashboard(observer) as dashboard,
        aiohttp.ClientSession() as http,
    ):
        agent = Agent(board, name="a", agent_id="ant-a", identity=AGENT, capabilities=["work"])
        agent.handler("work")(gate.handle)
        async with agent, http.get(f"{dashboard.url}api/events") as stream:
            deltas = sse(stream)
            assert (await anext(deltas))["type"] == "snapshot"
            await board.submit(Task(id="watched", kind="work", requires=("work",)))
            await until_all(
                deltas,
                is_task("watched", "done"),
                lambda d: d["type"] == "card" and d["id"] == "ant-a",
                lambda d: d["type"] == "trail" and d["event"]["kind"] == "task.completed",
            )


def _summary(task_id: str, status: TaskStatus, at: int, *, kind: str = "work", **fields: Any) -> Delta:
    record = TaskRecord(
        task=Task(id=task_id, kind=kind, requires=(kind,)),
        status=status,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=at),
        **fields,
    )
    return task_summary(record)


def test_the_task_index_counts_exactly_from_its_deltas_and_searches() -> None:
    index = TaskIndex()
    index.put(_summary("first", TaskStatus.PENDING, 0))
    tab = json.loads(json.dumps(index.counts_json()))  # what a tab starts from
    deltas = [
        index.put(_summary(f"t{i:03d}", TaskStatus.PENDING, i, kind="a" if i % 2 else "b"))
        for i in range(1, 300)
    ]
    deltas.append(index.put(_summary("stuck", TaskStatus.PENDING, 400, unroutable=("gpu",))))
    deltas.append(index.put(_summary("held", TaskStatus.CLAIMED, 401, holder="ant")))
    deltas.append(index.put(_summary("first", TaskStatus.CLAIMED, 402, holder="ant")))
    deltas.append(index.put(_summary("stuck", TaskStatus.CANCELLED, 403, unroutable=("gpu",))))
    deltas.append(index.put(_summary("held", TaskStatus.DONE, 404, holder="ant")))
    assert index.put(_summary("held", TaskStatus.DONE, 404, holder="ant")) is None  # nothing new
    for delta in deltas:  # the counting app.js does, from the deltas alone
        assert delta is not None
        task, was = delta["task"], delta["was"]
        routes = tab["routes"]
        if was is not None:
            routes[was["route"]][was["status"]] -= 1
            tab["unroutable"] -= was["unroutable"]
        else:
            tab["kinds"][task["kind"]] = tab["kinds"].get(task["kind"], 0) + 1
        routes.setdefault(task["route"], {})
        routes[task["route"]][task["status"]] = routes[task["route"]].get(task["status"], 0) + 1
        tab["unroutable"] += open_unroutable(task)
    tab["routes"] = {r: {st: n for st, n in c.items() if n} for r, c in tab["routes"].items()}
    assert tab == index.counts_json()
    routes = index.counts_json()["routes"]
    assert routes["b"] == {"pending": 149} and routes["work"] == {"claimed": 1, "done": 1, "cancelled": 1}
    assert index.unroutable == 0  # cancelled: no longer waiting for anyone

    found, matched = index.search(prefix="t00")
    assert [t["id"] for t in found] == [f"t00{i}" for i in range(9, 0, -1)] and matched == 9  # newest first
    found, matched = index.search(kind="a", status="pending", limit=5)
    assert [t["id"] for t in found] == ["t299", "t297", "t295", "t293", "t291"] and matched == 150
    assert [t["id"] for t in index.search(status="claimed")[0]] == ["first"]
    assert index.search(prefix="nothing") == ([], 0)
    # A tab receives the newest, and every held one however old.
    index.put(_summary("old-claim", TaskStatus.CLAIMED, -1, holder="ant"))
    shown = {t["id"] for t in index.shown(limit=10)}
    assert len(shown) == 11 and {"old-claim", "held", "t293"} <= shown and "t292" not in shown


async def _indexed(dashboard: Dashboard, http: aiohttp.ClientSession, tasks: int) -> None:
    """Until the dashboard's index knows ``tasks`` tasks (read off its own stream)."""
    async with http.get(f"{dashboard.url}api/events") as stream:
        deltas = sse(stream)
        snapshot = await anext(deltas)
        known = sum(snapshot["counts"]["kinds"].values())
        if known < tasks:

            def counted(delta: Delta) -> bool:
                nonlocal known
                known += delta["type"] == "task" and delta["was"] is None
                return known >= tasks

            await until_all(deltas, counted)


async def _bulk(board: TaskBoard) -> int:
    """A board with more tasks than a tab receives: the oldest is ``needle``."""
    await board.submit(Task(id="needle", kind="rare", requires=("rare",)))
    await board.submit_many([Task(id=f"bulk-{i:03d}", kind="bulk", requires=("bulk",)) for i in range(260)])
    return 261


async def test_a_large_board_is_searched_on_the_server_not_shipped_to_each_tab(board: TaskBoard) -> None:
    total = await _bulk(board)
    async with Dashboard(board) as dashboard, aiohttp.ClientSession() as http:
        await _indexed(dashboard, http, total)
        async with http.get(f"{dashboard.url}api/snapshot") as response:
            snap = await response.json()
        assert len(snap["tasks"]) == 200  # the newest (here also the newest unroutable)
        assert "needle" not in {t["id"] for t in snap["tasks"]}
        assert sum(snap["counts"]["routes"]["bulk"].values()) == 260 and snap["counts"]["kinds"]["rare"] == 1

        async def search(**query: str) -> Delta:
            async with http.get(f"{dashboard.url}api/tasks", params=query) as response:
                body: Delta = await response.json()
                body["status_code"] = response.status
                return body

        found = await search(prefix="nee")
        assert [t["id"] for t in found["tasks"]] == ["needle"] and found["matched"] == 1
        found = await search(status="pending", kind="bulk")
        assert len(found["tasks"]) == 200 and found["matched"] == 260
        found = await search(prefix="bulk-00", kind="bulk")
        assert {t["id"] for t in found["tasks"]} == {f"bulk-00{i}" for i in range(10)}
        assert (await search(status="done"))["matched"] == 0
        for bad in ({"status": "finished"}, {"prefix": "-x"}, {"kind": "Not A Kind"}):
            assert (await search(**bad)) == {"error": "invalid search", "status_code": 400}, bad


# ---------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser_missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401, PLC0415  # optional: only this test drives a browser
    except ImportError:
        return "needs selenium (pip install selenium)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium driven by Debian's chromedriver (never a downloaded one)."""
    from selenium import webdriver  # noqa: PLC0415  # optional dependency, see _browser_missing
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    for chatty in ("selenium", "urllib3"):  # their debug lines would carry whole screenshots
        logging.getLogger(chatty).setLevel(logging.WARNING)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, css: str, timeout: float = LIVE_TIMEOUT_S) -> Any:
    """The element ``css`` selects, once the page shows it (WebDriverWait polls the DOM)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


ATTEMPTS_OF_HELD = "return document.querySelector('[data-task=\"held\"] [data-attempts]').textContent"
"""A finished task shows the attempts it took (not "0/3" for one done at the first)."""


@pytest.fixture
async def patient_board(nats_server: EmbeddedServer | ContainerServer) -> AsyncIterator[TaskBoard]:
    """A board whose leases outlast a stall of the test process while a browser starts on a busy
    machine (the page is under test, not leases: a lapsed lease would make a second attempt)."""
    async with fresh_board(nats_server.url, lease_ttl=10.0) as board:
        yield board


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
async def test_the_page_shows_the_live_run_in_chromium(patient_board: TaskBoard, tmp_path: Path) -> None:
    gate = Gate("held")
    async with (
        ledger_service(patient_board),
        agents(patient_board, gate, ["ant0", "ant1"]) as ants,
        Dashboard(patient_board) as dashboard,
    ):
        await patient_board.submit_many(
            [
                Task(id="warmup", kind="work", requires=("work",)),
                Task(id="held", kind="work", requires=("work",)),
                Task(id="after", kind="work", requires=("work",), depends_on=("held",)),
                Task(id="needs-gpu", kind="render", requires=("gpu",)),
            ]
        )
        await patient_board.trail.mark(
            "artifact.written", key="early", intensity=2.0
        )  # before the page loads
        await gate.started["held"].wait()
        with chromium() as driver:

            def before() -> None:
                driver.get(dashboard.url)
                wait_for(driver, '#connection[data-state="live"]')
                wait_for(driver, '[data-task="held"][data-status="claimed"]')
                wait_for(driver, '[data-task="warmup"][data-status="done"]')
                wait_for(driver, '[data-task="after"][data-status="pending"]')
                wait_for(driver, '[data-unroutable="needs-gpu"]')
                reason = driver.execute_script(
                    "return document.querySelector("
                    "'[data-unroutable=\"needs-gpu\"] [data-unroutable-reason]').textContent"
                )
                assert reason == "no live agent has [gpu]", reason
                driver.execute_script("location.hash = '#agents'")
                for ant in ants:
                    wait_for(driver, f'[data-agent="{ant.id}"]')
                wait_for(driver, '[data-agent] [data-held="1"] [data-task-link="held"]')  # one holds it
                wait_for(driver, '[data-agent] [data-capability="work"]')  # reputation, from the ledger
                driver.save_screenshot(str(tmp_path / "agents.png"))
                driver.execute_script("window.__sameDocument = true; location.hash = '#swarm'")

            await asyncio.to_thread(before)
            gate.release.set()  # the held task completes now, while the page is open
            await patient_board.trail.mark("artifact.written", key="late", agent=ants[0].id)

            def after() -> None:
                wait_for(driver, '[data-task="held"][data-status="done"]')
                wait_for(driver, '[data-task="after"][data-status="done"]')
                assert driver.execute_script(ATTEMPTS_OF_HELD) == "1"  # read in one go: rows are redrawn
                assert driver.execute_script("return window.__sameDocument === true"), "the page reloaded"
                driver.save_screenshot(str(tmp_path / "swarm.png"))
                driver.execute_script("location.hash = '#task/held'")
                wait_for(driver, '[data-task-detail="held"][data-status="done"]')
                wait_for(driver, '[data-history="held"] [data-kind="task.completed"]')
                wait_for(driver, '#graph [data-node="after"][data-status="done"]')
                driver.save_screenshot(str(tmp_path / "task.png"))
                driver.execute_script("location.hash = '#task/needs-gpu'")
                wait_for(driver, '[data-task-detail="needs-gpu"] [data-waiting="unroutable"]')
                driver.execute_script("location.hash = '#trail'")
                wait_for(driver, '#trail-list [data-kind="task.completed"]')
                wait_for(driver, '[data-mark="ants.trail.mark.artifact.written.early"]')
                wait_for(driver, '[data-mark="ants.trail.mark.artifact.written.late"]')
                # Read in one script: the live table may be redrawn between two driver calls.
                marks = driver.execute_script(
                    "return [...document.querySelectorAll('#marks-table [data-mark]')]"
                    ".map(e => e.dataset.mark)"
                )
                assert marks[0].endswith(".early"), marks  # strongest first
                driver.save_screenshot(str(tmp_path / "trail.png"))
                severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not severe, severe  # no script error, no blocked (off-site) resource

            await asyncio.to_thread(after)
        final = await patient_board.wait(["held", "after"], timeout=LIVE_TIMEOUT_S)
        assert all(r.status is TaskStatus.DONE for r in final.values())
    for shot in ("agents.png", "swarm.png", "task.png", "trail.png"):
        assert (tmp_path / shot).stat().st_size > 10_000, shot


async def test_the_demo_serves_the_dashboard_and_stays_up_until_interrupted(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    command = ("-m", "ants_nats.cli", "demo", "--documents", "1", "--dashboard", "--server", nats_server.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None

    async def line_with(text: str) -> str:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode():
            if text in line:
                return line
        raise AssertionError(f"the demo ended before saying {text!r}: {(await proc.stderr.read())!r}")

    try:
        async with asyncio.timeout(90):
            url = (await line_with("dashboard at ")).split("dashboard at ")[1].strip()
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as page:
                    assert page.status == 200 and "text/html" in page.content_type
                await line_with("the dashboard stays up")
                async with http.get(f"{url}api/snapshot") as response:
                    snapshot = await response.json()
            statuses = {task["id"]: task["status"] for task in snapshot["tasks"]}
            assert len(statuses) == 4 and set(statuses.values()) == {"done"}, statuses
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


PHONE_WIDTH = 420

HEADER_FITS = """
const header = document.querySelector("header").getBoundingClientRect();
const badge = document.getElementById("connection");
const box = badge.getBoundingClientRect();
const width = window.innerWidth;
return {inside: box.left >= 0 && box.right <= width, whole: badge.scrollWidth <= badge.clientWidth,
        oneRow: header.height < 3 * box.height, wide: document.documentElement.scrollWidth <= width};
"""


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
async def test_the_page_searches_a_large_board_and_fits_a_phone(board: TaskBoard) -> None:
    total = await _bulk(board)
    async with Dashboard(board) as dashboard, aiohttp.ClientSession() as http:
        await _indexed(dashboard, http, total)
        with chromium() as driver:

            def check() -> None:
                from selenium.webdriver.support.ui import Select  # noqa: PLC0415

                driver.set_window_size(PHONE_WIDTH, 900)  # (a --window-size flag stops at 500)
                driver.get(dashboard.url)
                assert driver.execute_script("return window.innerWidth") == PHONE_WIDTH
                wait_for(driver, '#connection[data-state="live"]')
                wait_for(driver, '[data-count="total"] b')
                assert driver.execute_script(HEADER_FITS) == dict.fromkeys(
                    ("inside", "whole", "oneRow", "wide"), True
                )
                assert driver.execute_script("return document.querySelectorAll('[data-task]').length") == 200
                assert driver.find_element("css selector", '[data-count="total"] b').text == str(total)
                driver.find_element("id", "task-prefix").send_keys("nee")  # older than any row shown
                wait_for(driver, '[data-task="needle"]')
                wait_for(driver, '#tasks-more[data-matched="1"]')
                driver.find_element("id", "task-prefix").clear()
                driver.execute_script(
                    "document.getElementById('task-prefix').dispatchEvent(new Event('input'))"
                )
                Select(driver.find_element("id", "task-kind")).select_by_value("bulk")
                Select(driver.find_element("id", "task-status")).select_by_value("pending")
                wait_for(driver, '#tasks-more[data-matched="260"]')
                Select(driver.find_element("id", "task-status")).select_by_value("done")
                wait_for(driver, '#tasks-more[data-matched="0"]')
                assert driver.execute_script("return document.querySelectorAll('[data-task]').length") == 0
                severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not severe, severe

            await asyncio.to_thread(check)

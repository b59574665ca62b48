"""The dashboard at ``/ui``: in a real browser against a real server.

Selenium drives Debian's ``chromium`` through ``chromedriver``, headless
and with background networking off (the test machine has no network);
``make test`` installs both when missing. The server is ``python -m
bulkhead serve tests.test_ui:registry`` with a token, so every page goes
through the login. The snapshot's own tests run in-process.

``python -m tests.test_ui 1000000`` measures the snapshot's cost over a
journal of that many rows (the figure in docs/service-dashboard.rst).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bulkhead.service import JobRegistry, Service, ServiceConfig
from bulkhead.service._config import PoolSpec
from bulkhead.service._http._ui import Board

from . import _service_server
from ._service_server import ServerProcess, server_args, serving

registry = JobRegistry()
TOKEN = "dashboard-token-for-tests"
VIEWER = "viewer-token-reads-only"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = _service_server.ROOT / "docs" / "_static" / "dashboard.png"


@registry.job(priority="high")
async def add(x: int, y: int = 0) -> int:
    """Add two integers."""
    await trio.lowlevel.checkpoint()
    return x + y


@registry.job(priority="normal")
async def flaky(marker: str) -> str:
    """Fail until the file ``marker`` exists: a job that a requeue fixes."""
    await trio.lowlevel.checkpoint()
    if not await trio.Path(marker).exists():
        raise RuntimeError(f"{marker} is missing")
    return "fixed"


# ------------------------------------------------------------- in-process


def _service(journal: str = ":memory:") -> Service:
    config = ServiceConfig(
        pools=(PoolSpec(3, 2, 2), PoolSpec(2, 2, 2)), journal=journal
    )
    return Service(config, registry)


async def test_one_snapshot_per_interval_is_shared_by_every_viewer() -> None:
    service = _service()
    board = Board(service, interval=0.05)
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        nursery.start_soon(board.run)

        async def watch(name: str) -> None:
            async with contextlib.aclosing(board.updates()) as updates:
                async for event in updates:
                    seen[name].append(event)
                    if len(seen[name]) == 3:
                        return

        async with trio.open_nursery() as viewers:
            viewers.start_soon(watch, "a")
            viewers.start_soon(watch, "b")
        assert board.viewers == 0
        built = board.built
        service.stop()
    # Both viewers got the very same encoded snapshots: built once, sent twice.
    assert set(seen["a"]) & set(seen["b"])
    assert built <= 4
    first = json.loads(seen["a"][0].split(b"data: ", 1)[1])
    assert [p["name"] for p in first["pools"]] == ["high", "normal"]
    assert first["auth"] is False
    assert first["writable"] is True


async def test_the_board_builds_nothing_while_nobody_watches() -> None:
    service = _service()
    board = Board(service, interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        nursery.start_soon(board.run)
        await trio.sleep(0.1)
        assert board.built == 0
        service.stop()


class _NoScans(Exception):
    pass


async def test_a_snapshot_reads_counters_not_rows(tmp_path: Path) -> None:
    service = _service(str(tmp_path / "journal.sqlite3"))

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _NoScans

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await service.submit([_submission("flaky", marker="/nonexistent")])
        # The journal writes from a thread and counts an end once that
        # write commits: poll.
        failed = {2: {"failed": 1}}
        while await service.journal.counts() != failed:  # noqa: ASYNC110
            await trio.sleep(0.01)
        service.journal.list = refuse  # type: ignore[method-assign]
        service.journal.get = refuse  # type: ignore[method-assign]
        snapshot = await Board(service).snapshot()
        service.stop()
    normal = next(p for p in snapshot["pools"] if p["name"] == "normal")
    assert normal["failed"] == 1
    assert sum(normal["minutes"]["failed"]) == 1
    assert len(normal["minutes"]["succeeded"]) == 60
    [failure] = snapshot["failures"]
    assert failure["type"] == "flaky"
    assert failure["pool"] == "normal"
    assert failure["error"] == "RuntimeError: /nonexistent is missing"


def _submission(type: str, **args: Any) -> Any:
    from bulkhead.service import Submission

    return Submission(type=type, args=args)


def test_activity_forgets_minutes_older_than_an_hour() -> None:
    from bulkhead.service._activity import Activity
    from bulkhead.service._journal import Claimed

    activity = Activity()
    job = Claimed(1, "add", 3, "{}", 1, 0.0, 0.0, 1)
    activity.ended(job, "succeeded", None, 60.0 * 10)
    activity.ended(job, "cancelled", "cancelled", 60.0 * 10 + 1)
    activity.ended(job, "succeeded", None, 60.0 * 70)  # same slot, an hour on
    minutes = activity.minutes(3, 60.0 * 70 + 5)
    assert minutes.succeeded[-1] == 1
    assert sum(minutes.succeeded) == 1
    assert sum(minutes.cancelled) == 0
    assert sum(activity.minutes(4, 0).succeeded) == 0
    assert activity.failures() == []


# ------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's registry, with a token."""
    base = tmp_path_factory.mktemp("ui")
    args = server_args(
        "high=2,normal=2",
        *("--grace-period", "1", "--token", TOKEN),
        *("--tokens", f"viewer:read:{VIEWER}"),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_service_server, "REGISTRY", "tests.test_ui:registry")
        with serving(base, *args) as process:
            yield process


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client with the bearer token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


def _origin(server: ServerProcess) -> str:
    return server.url.rstrip("/")


def _url(server: ServerProcess, path: str) -> str:
    return _origin(server) + path


def test_cookie_mutations_need_this_origin(server: ServerProcess) -> None:
    cookies = {"bulkhead_token": TOKEN}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=10) as browser:
        id = browser.post(
            "/jobs",
            json={"type": "add", "args": {"x": 1}, "delay": 3600},
            headers={"Origin": _origin(server)},
        ).json()["id"]
        refused = browser.delete(f"/jobs/{id}", headers={"Origin": "http://evil"})
        assert refused.status_code == 403
        assert "cross-origin request refused" in refused.json()["error"]
        assert browser.delete(f"/jobs/{id}").status_code == 403  # no Origin
        assert browser.get(f"/jobs/{id}").json()["state"] == "scheduled"
        cancelled = browser.delete(f"/jobs/{id}", headers={"Referer": server.url})
        assert cancelled.status_code == 202


def test_login_and_logout_over_http(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        page = browser.get("/ui")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login"
        assert browser.get("/ui/events").status_code == 401
        origin = {"Origin": _origin(server)}
        form = {"Content-Type": "application/x-www-form-urlencoded", **origin}
        empty = browser.post("/ui/login", content="token=", headers=form)
        assert empty.status_code == 400
        assert "Enter the" in empty.text
        wrong = browser.post("/ui/login", content="token=nope", headers=form)
        assert wrong.status_code == 401
        assert "Wrong token" in wrong.text
        assert "bulkhead_token" not in browser.cookies
        forged = browser.post(
            "/ui/login", content=f"token={TOKEN}", headers={"Origin": "http://evil"}
        )
        assert forged.status_code == 403
        good = browser.post("/ui/login", content=f"token={TOKEN}", headers=form)
        assert good.status_code == 303
        assert good.headers["location"] == "/ui"
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "secure" not in cookie  # plain http here
        assert browser.get("/ui").status_code == 200
        out = browser.post("/ui/logout", headers=origin)
        assert out.status_code == 303
        assert "bulkhead_token" not in browser.cookies
        assert browser.get("/ui").status_code == 303


def test_a_read_token_sees_the_dashboard_but_cannot_operate(
    server: ServerProcess,
) -> None:
    origin = {"Origin": _origin(server)}
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        login = browser.post("/ui/login", content=f"token={VIEWER}", headers=origin)
        assert login.status_code == 303
        assert browser.get("/ui").status_code == 200
        assert browser.get("/jobs").status_code == 200
        refused = browser.post(
            "/operations",
            json={"action": "requeue", "filter": {"state": "failed"}, "reason": "x"},
            headers=origin,
        )
        assert refused.status_code == 403
        assert "needs role operate" in refused.json()["error"]


def test_the_dashboard_is_open_without_a_token(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_service_server, "REGISTRY", "tests.test_ui:registry")
        with (
            serving(tmp_path, *server_args("high=1,normal=1")) as server,
            httpx.Client(base_url=server.url, timeout=10) as browser,
        ):
            assert browser.get("/ui").status_code == 200
            login = browser.post(
                "/ui/login", content="token=anything", headers={"Origin": server.url}
            )
            assert login.status_code == 303
            assert "set-cookie" not in login.headers
            with browser.stream("GET", "/ui/events") as events:
                line = next(events.iter_lines())
            assert line == "event: snapshot"


# ---------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium, a fresh profile, no network of its own."""
    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        pytest.fail("needs chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(tmp_path_factory.getbasetemp() / "chromium0", True)


def _wait(driver: Any, timeout: float = 2.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def _by_id(driver: Any, id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, id)


def _log_in(driver: Any, server: ServerProcess, token: str = TOKEN) -> None:
    driver.get(_url(server, "/ui/login"))
    field = _by_id(driver, "token")
    field.clear()
    field.send_keys(token)
    field.submit()


@pytest.fixture
def dashboard(driver: Any, server: ServerProcess) -> Any:
    """The browser on a live dashboard, logged in."""
    driver.get(_url(server, "/ui"))
    if driver.current_url.endswith("/ui/login"):
        _log_in(driver, server)
    _wait(driver, 5).until(lambda d: "Live" in _by_id(d, "status").text)
    driver.get_log("browser")  # start each test with an empty console
    return driver


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_a_wrong_token_is_refused(driver: Any, server: ServerProcess) -> None:
    driver.delete_all_cookies()
    driver.get(_url(server, "/ui"))
    assert driver.current_url == _url(server, "/ui/login")
    _log_in(driver, server, "not-the-token")
    message = _by_id(driver, "message")
    assert message.text == "Wrong token: access refused."
    assert message.get_attribute("role") == "alert"
    assert driver.get_cookie("bulkhead_token") is None
    _log_in(driver, server)
    assert driver.current_url == _url(server, "/ui")
    # HttpOnly: the page's scripts cannot read the token.
    assert driver.execute_script("return document.cookie") == ""


def test_the_page_loads_without_console_errors(dashboard: Any) -> None:
    dashboard.refresh()
    _wait(dashboard, 5).until(lambda d: "Live" in _by_id(d, "status").text)
    pools = _by_id(dashboard, "pools").text
    assert "high" in pools
    assert "normal" in pools
    # One script: the charts are redrawn with every snapshot.
    labels = dashboard.execute_script(
        "return Array.from(document.querySelectorAll('#charts svg'), "
        "svg => svg.getAttribute('aria-label'))"
    )
    assert len(labels) == 2
    assert labels[0].startswith("Pool high: ")
    assert "succeeded" in labels[0]
    assert _console_errors(dashboard) == []


def _cell(driver: Any, pool: str, column: int) -> int:
    # Read in one script: the row is redrawn with every snapshot, so an
    # element found first may be stale by the time its text is asked for.
    script = (
        "return document.getElementById(arguments[0]).cells[arguments[1]].innerText"
    )
    return int(driver.execute_script(script, f"pool-{pool}", column + 1))


def test_a_submitted_job_appears_within_2s(
    dashboard: Any, api: httpx.Client, tmp_path: Path
) -> None:
    before = _cell(dashboard, "high", 3)  # succeeded in the last hour
    api.post("/jobs", json={"type": "add", "args": {"x": 1}}).raise_for_status()
    _wait(dashboard, 2).until(lambda d: _cell(d, "high", 3) == before + 1)
    marker = str(tmp_path / "never")
    id = api.post("/jobs", json={"type": "flaky", "args": {"marker": marker}})
    id.raise_for_status()
    failures = _by_id(dashboard, "failures")
    _wait(dashboard, 2).until(lambda d: f"#{id.json()['id']}" in failures.text)
    assert f"RuntimeError: {marker} is missing" in failures.text
    assert _console_errors(dashboard) == []


def _tab_until(driver: Any, target: str, limit: int = 60) -> list[str]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    path = []
    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        active = driver.switch_to.active_element
        path.append(active.get_attribute("id") or active.tag_name)
        if path[-1] == target:
            return path
    raise AssertionError(f"Tab never reached #{target}: {path}")


def test_keyboard_only_navigation_reaches_search_and_actions(
    dashboard: Any, api: httpx.Client
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    id = api.post("/jobs", json={"type": "add", "args": {"x": 2, "y": 3}}).json()["id"]
    keys = ActionChains(dashboard)
    dashboard.refresh()
    _wait(dashboard, 5).until(lambda d: "Live" in _by_id(d, "status").text)
    # The first Tab reaches the skip link, which jumps to the search.
    keys.send_keys(Keys.TAB).perform()
    assert dashboard.switch_to.active_element.text == "Skip to job search"
    keys.send_keys(Keys.ENTER).perform()
    heading = _by_id(dashboard, "search-heading")
    _wait(dashboard).until(lambda d: d.switch_to.active_element == heading)
    assert _tab_until(dashboard, "search-id") == ["search-id"]
    ActionChains(dashboard).send_keys(str(id), Keys.ENTER).perform()
    results = _by_id(dashboard, "results")
    _wait(dashboard).until(lambda d: results.is_displayed())
    # Into the result and open it, with the keyboard only.
    _tab_until(dashboard, "search-button")
    ActionChains(dashboard).send_keys(Keys.TAB).perform()
    active = dashboard.switch_to.active_element
    assert active.text == f"#{id}"
    ActionChains(dashboard).send_keys(Keys.ENTER).perform()
    heading = _by_id(dashboard, "detail-heading")
    _wait(dashboard).until(lambda d: d.switch_to.active_element == heading)
    assert heading.text == f"Job {id}: add, succeeded"
    # On to the bulk form: the reason is required, the dialog confirms.
    path = _tab_until(dashboard, "bulk-reason")
    assert (
        path.index("bulk-action") < path.index("bulk-state") < path.index("bulk-type")
    )
    ActionChains(dashboard).send_keys("keyboard test", Keys.TAB).perform()
    assert dashboard.switch_to.active_element.get_attribute("id") == "bulk-button"
    ActionChains(dashboard).send_keys(Keys.ENTER).perform()
    dialog = _by_id(dashboard, "confirm")
    _wait(dashboard).until(lambda d: dialog.get_attribute("open") is not None)
    assert dashboard.switch_to.active_element.get_attribute("id") == "confirm-no"
    assert "Requeue every job in state failed" in _by_id(dashboard, "confirm-text").text
    ActionChains(dashboard).send_keys(Keys.ESCAPE).perform()
    _wait(dashboard).until(lambda d: dialog.get_attribute("open") is None)
    assert dashboard.switch_to.active_element.get_attribute("id") == "bulk-button"
    assert _console_errors(dashboard) == []
    if os.environ.get("UPDATE_SCREENSHOT"):  # refresh the picture in the docs
        dashboard.execute_script("window.scrollTo(0, 0)")
        dashboard.save_screenshot(str(SCREENSHOT))


def test_a_failed_job_is_requeued_from_the_ui_and_then_succeeds(
    dashboard: Any, api: httpx.Client, tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    answer = api.post("/jobs", json={"type": "flaky", "args": {"marker": str(marker)}})
    id = answer.json()["id"]
    _wait(dashboard, 5).until(
        lambda d: api.get(f"/jobs/{id}").json()["state"] == "failed"
    )
    marker.touch()
    from selenium.webdriver.support.ui import Select

    Select(_by_id(dashboard, "bulk-action")).select_by_value("requeue")
    Select(_by_id(dashboard, "bulk-state")).select_by_visible_text("failed")
    _by_id(dashboard, "bulk-type").send_keys("flaky")
    _by_id(dashboard, "bulk-reason").send_keys("the marker file is there now")
    _by_id(dashboard, "bulk-button").click()
    _by_id(dashboard, "confirm-yes").click()
    _wait(dashboard, 5).until(
        lambda d: api.get(f"/jobs/{id}").json()["state"] == "succeeded"
    )
    message = _by_id(dashboard, "bulk-message")
    _wait(dashboard, 5).until(lambda d: "done" in message.text)
    assert message.text.startswith("Operation ")
    assert _console_errors(dashboard) == []
    audit = api.get("/operations").json()
    assert "the marker file is there now" in json.dumps(audit)


def test_logout_returns_to_the_login(dashboard: Any, server: ServerProcess) -> None:
    _by_id(dashboard, "logout").find_element("tag name", "button").click()
    _wait(dashboard).until(lambda d: d.current_url.endswith("/ui/login"))
    dashboard.get(_url(server, "/ui"))
    assert dashboard.current_url.endswith("/ui/login")


# ------------------------------------------------------------ measurement


def _fill(path: str, rows: int) -> None:
    """A journal of ``rows`` jobs: mostly finished, 5% scheduled for later."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT "
        "NULL, priority INTEGER NOT NULL, args TEXT NOT NULL, idempotency_key "
        "TEXT UNIQUE, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "runs INTEGER NOT NULL DEFAULT 0, lease INTEGER NOT NULL DEFAULT 0, "
        "accepted_at REAL NOT NULL, run_at REAL NOT NULL, started_at REAL, "
        "finished_at REAL, result TEXT, error TEXT)"
    )
    now = time.time()
    states = ["succeeded"] * 15 + ["failed", "cancelled"] + ["queued"] * 3

    def row(i: int) -> tuple[Any, ...]:
        state = states[i % len(states)]
        later = now + 86400 if state == "queued" else now
        return ("add", 3 - i % 2, "{}", state, now, later)

    db.executemany(
        "INSERT INTO jobs (type, priority, args, state, accepted_at, run_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (row(i) for i in range(rows)),
    )
    db.commit()
    db.close()


async def _measure(path: str, repeat: int) -> float:
    service = _service(path)
    board = Board(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        start = time.perf_counter()
        for _ in range(repeat):
            json.dumps(await board.snapshot())
        took = (time.perf_counter() - start) / repeat
        service.stop()
    return took


def measure(rows: int, repeat: int = 1000) -> None:
    """Print the cost of one snapshot (built and encoded) over ``rows``."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/journal.sqlite3"
        _fill(path, rows)
        took = trio.run(_measure, path, repeat)
    print(f"{rows:,} rows: {took * 1e6:.0f} µs per snapshot (mean of {repeat})")


if __name__ == "__main__":
    for n in sys.argv[1:] or ["1000000"]:
        measure(int(n))

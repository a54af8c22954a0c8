"""The dashboard in a real headless browser (Debian's chromium through its chromedriver) against
`knfn dev` of the default project: every Service and revision listed, charts that draw and grow
under load, the event inspector with attempts and a dead letter, replay, and a screenshot."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.manifests.manifest_pipeline import FUNCTIONS
from tests.support import BROKER_INGRESS_HOST, DevRun, assert_json_error, knfn_dev, request

pytestmark = pytest.mark.slow

CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float = 60) -> T:
    """check()'s first truthy value, polled, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    with knfn_dev(tmp_path_factory.mktemp("dashboard")) as run:
        yield run


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless chromium; a missing browser fails (.ci/run installs it), it is not skipped."""
    assert shutil.which("chromium") and Path(CHROMEDRIVER).exists(), (
        "chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
    )
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1440,2200", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def click(browser: WebDriver, selector: str, what: str) -> None:
    """Click the element once it is there; the page re-renders its tables as data arrives, so
    an element found may be replaced before the click lands: then find it again."""

    def clicked() -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    wait_until(what, clicked)


def admin(dev: DevRun, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{dev.admin_port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def chart_points(browser: WebDriver, chart: str, revision: str) -> list[float]:
    """The y values drawn for revision's first trace in chart: plotly's calcdata, what its
    last draw computed the SVG from (not the page's own arrays)."""
    found: list[float] = browser.execute_script(
        "const gd = document.getElementById(arguments[0]);"
        "const i = (gd.data || []).findIndex(t => (t.meta || '').endsWith('/' + arguments[1]));"
        "return i < 0 || !gd.calcdata ? [] : gd.calcdata[i].map(p => p.y);",
        chart,
        revision,
    )
    return found


async def load(port: int, requests: int, clients: int) -> list[int]:
    """requests GETs of hello (20 ms each), clients at a time; their statuses."""
    statuses: list[int] = []
    todo = iter(range(requests))
    url = f"http://127.0.0.1:{port}/?sleep=20"
    headers = {"Host": "hello.default.localhost"}
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for _ in todo:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    statuses.append(resp.status)

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def post_event(dev: DevRun, type_: str, data: dict[str, Any]) -> str:
    event_id = f"dash-{uuid.uuid4().hex[:12]}"
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/tests/dashboard",
        "ce-type": type_,
        "Content-Type": "application/json",
    }
    status, _, body = request(
        dev.port, "POST", "/default/default", headers, json.dumps(data).encode(),
        host=BROKER_INGRESS_HOST,
    )  # fmt: skip
    assert status == 202, body
    return event_id


def event_number(dev: DevRun, event_id: str) -> int:
    rows = admin(dev, "/events?limit=1000")["events"]
    return int(next(r["event"] for r in rows if r["event_id"] == event_id))


def test_dashboard_lists_services_charts_grow_and_inspector_replays(
    dev: DevRun, browser: WebDriver, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The page lists every Service and revision of /status, its charts draw and their data
    grows as hello takes load, the inspector shows a failing event's attempts and its dead
    letter, Replay delivers an event again, and a screenshot is written."""
    browser.get(f"http://127.0.0.1:{dev.admin_port}/")

    # 1. Every Service and revision of /status has its row.
    status = admin(dev, "/status")
    wanted = {(s["name"], r["name"]) for s in status["services"] for r in s["revisions"]}
    assert set(FUNCTIONS) <= {svc for svc, _ in wanted}, wanted

    def listed() -> set[tuple[str, str]]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#services-body tr")
        return {(r.get_attribute("data-service") or "", r.get_attribute("data-revision") or "")
                for r in rows}  # fmt: skip

    wait_until("every revision listed", lambda: wanted <= listed())
    brokers = browser.find_element(By.ID, "brokers-body").text
    assert "default/default" in brokers and "event-display-all" in brokers

    # 2. The charts draw: an SVG with hello's trace, and its data grows; load shows up in it.
    for chart in ("chart-replicas", "chart-rate", "chart-inflight"):
        wait_until(
            f"{chart} drawn",
            lambda c=chart: browser.find_elements(  # type: ignore[misc]
                By.CSS_SELECTOR, f"#{c} svg.main-svg .scatterlayer .trace path.js-line"
            ),
        )
    hello = next(r for s, r in wanted if s == "hello")
    before = len(chart_points(browser, "chart-rate", hello))
    assert before >= 1
    statuses = asyncio.run(load(dev.port, 1500, 20))
    assert statuses.count(200) == len(statuses) == 1500
    rates = wait_until("hello's rate charted", lambda: [
        p for p in chart_points(browser, "chart-rate", hello) if p > 0])  # fmt: skip
    after = len(chart_points(browser, "chart-rate", hello))
    print(f"hello's request-rate chart: {before} points before the load, {after} after;"
          f" peak {max(rates):.0f} req/s")  # fmt: skip
    assert after > before and max(rates) > 5
    assert max(chart_points(browser, "chart-replicas", hello)) >= 1

    # 3. A failing event: thumbnail cannot read the object, retries, and it is dead-lettered.
    missing = {"bucket": "no-such-bucket", "key": "a.png", "content_type": "image/png", "size": 1}
    failing = post_event(dev, "dev.knfn.object.stored", missing)
    detail = wait_until("the dead letter delivered", lambda: dead_lettered(dev, failing), 90)
    number = detail["event"]
    thumb = delivery(detail, THUMBNAIL, "subscriber")
    codes = [a["status"] for a in thumb["attempt_log"]]
    print(f"thumbnail's delivery of event {number}: {thumb['state']} after {thumb['attempts']}"
          f" attempts, statuses {codes}")  # fmt: skip
    assert thumb["state"] == "dead" and len(codes) == thumb["attempts"] > 1

    click(browser, f'#events-body tr[data-event="{number}"]', "the failing event listed")
    attempts = f'#event-detail tr.attempt[data-delivery="{thumb["delivery"]}"]'
    shown = wait_until(
        "its attempts shown", lambda: browser.find_elements(By.CSS_SELECTOR, attempts)
    )
    assert len(shown) == thumb["attempts"]
    dead = '#event-detail tr.delivery[data-kind="dead-letter"]'
    assert browser.find_elements(By.CSS_SELECTOR, dead)
    assert f"dead letter of {THUMBNAIL}" in browser.find_element(By.ID, "event-detail").text

    # 4. Replay: event-display (whose Trigger takes every event) gets the event a second time.
    good = post_event(dev, "dev.knfn.dashboard.replayed", {"hello": "again"})
    good_number = wait_until("the event stored", lambda: _number_or_none(dev, good))
    click(browser, f'#events-body tr[data-event="{good_number}"]', "the event listed")
    heading = f'#event-detail h3[data-event="{good_number}"]'
    wait_until("its detail shown", lambda: browser.find_elements(By.CSS_SELECTOR, heading))
    click(browser, "#replay-all", "the replay button")

    def replayed() -> bool:
        detail = admin(dev, f"/events/{good_number}")
        return delivery(detail, DISPLAY, "subscriber", replay=1).get("state") == "delivered"

    wait_until("the replay delivered", replayed)
    wait_until("event-display logging it twice", lambda: _seen(dev, good) >= 2)
    assert _seen(dev, good) == 2
    inspector = browser.find_element(By.ID, "inspector")
    wait_until("the replay shown", lambda: "(replay 1)" in inspector.text)

    # 5. The screenshot, with the dead-lettered event open in the inspector.
    click(browser, f'#events-body tr[data-event="{number}"]', "the failing event listed")
    wait_until("its attempts shown again", lambda: browser.find_elements(
        By.CSS_SELECTOR, '#event-detail tr.delivery[data-kind="dead-letter"]'))  # fmt: skip
    shot = tmp_path_factory.mktemp("artifacts") / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"dashboard screenshot: {shot}")


THUMBNAIL = "thumbnail-object-stored"
DISPLAY = "event-display-all"


def delivery(detail: dict[str, Any], trigger: str, kind: str, replay: int = 0) -> dict[str, Any]:
    """The event's delivery to trigger of that kind and replay ({} when there is none yet)."""
    found = [
        d for d in detail["deliveries"]
        if (d["trigger"], d["kind"], d["replay"]) == (trigger, kind, replay)
    ]  # fmt: skip
    return found[0] if found else {}


def dead_lettered(dev: DevRun, event_id: str) -> dict[str, Any]:
    """The event's detail once thumbnail's dead letter of it has been delivered, else {}."""
    number = _number_or_none(dev, event_id)
    if number is None:
        return {}
    detail: dict[str, Any] = admin(dev, f"/events/{number}")
    dead = delivery(detail, THUMBNAIL, "dead-letter")
    return detail if dead.get("state") == "delivered" else {}


def _number_or_none(dev: DevRun, event_id: str) -> int | None:
    try:
        return event_number(dev, event_id)
    except StopIteration:
        return None


def _seen(dev: DevRun, event_id: str) -> int:
    """How many times event-display logged receiving the event (its lines in knfn dev's log)."""
    return sum(
        1 for line in dev.log.read_text().splitlines()
        if line.startswith("event-display") and "cloudevent received" in line and event_id in line
    )  # fmt: skip


def test_replay_from_another_origin_is_refused(dev: DevRun) -> None:
    """POST /events/<n>/replay from another Origin, cross-site, or not as JSON: 403 JSON, and
    nothing is replayed; from the admin API's own origin it is accepted (202)."""
    event_id = post_event(dev, "dev.knfn.dashboard.origin", {})
    number = wait_until("the event stored", lambda: _number_or_none(dev, event_id))
    own = f"127.0.0.1:{dev.admin_port}"
    path = f"/events/{number}/replay"
    refused = (
        {"Origin": "http://evil.example", "Content-Type": "application/json"},
        {"Origin": f"http://localhost:{dev.admin_port}", "Content-Type": "application/json"},
        {"Origin": "null", "Content-Type": "application/json"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
        {"Origin": f"http://{own}", "Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    for headers in refused:
        status, kind, body = request(dev.admin_port, "POST", path, headers, b"{}", host=own)
        assert status == 403, (headers, body)
        assert_json_error(status, kind, body)
    deliveries = admin(dev, f"/events/{number}")["deliveries"]
    assert {d["replay"] for d in deliveries} == {0}
    status, _, body = request(dev.admin_port, "POST", path,
                              {"Origin": f"http://{own}", "Content-Type": "application/json"},
                              b'{"trigger": "event-display-all"}', host=own)  # fmt: skip
    assert status == 202, body
    assert json.loads(body)["deliveries"] == [
        {"trigger": "event-display-all",
         "destination": admin(dev, f"/events/{number}")["deliveries"][0]["destination"]}
    ]  # fmt: skip

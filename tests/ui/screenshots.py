"""Screenshots of the dashboard for the README: ``make screenshots`` (or
``python -m tests.ui.screenshots [DIR]``, DIR defaulting to docs/).

A codeq serve of its own on a fresh redis-server gets scripted work: tasks
created, claimed, completed, failed and dead-lettered over about half a
minute, so the charts show real traffic, and some left ready, delayed and in
flight; then the headless Chromium of the tests takes the overview and one
queue's page, whole.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import ROOT, CodeqServer, StoreServer
from tests.ui.browser import Api, chromium

COMMANDS = ("email.send", "invoice.render", "image.resize", "report.build")
WORK_SECONDS = 30
WIDTH = 1280


def work(api: Api, seconds: float) -> None:
    """Create tasks at a varying rate and work most of them off as they come."""
    rng = random.Random(7)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        rate = 12 + 10 * math.sin(elapsed / 5)
        for _ in range(int(rate / 4)):
            api.create(rng.choice(COMMANDS[:3]), {"to": f"user{rng.randrange(900)}@example.com"},
                       priority=rng.choice((0, 0, 0, 5, 9)))
        for command in COMMANDS[:3]:
            for _ in range(int(rate / 5)):
                task = api.claim(command)
                if task is None:
                    break
                if rng.random() < 0.12:
                    api.http.post(f"/tasks/{task['id']}/result", json={
                        "status": "FAILED", "error": "mailbox full", "leaseId": task["leaseId"]})
                else:
                    api.complete(task, {"ok": True})
        time.sleep(0.25)


def backlog(api: Api) -> None:
    """What the pages show besides the traffic: a backlog, delayed tasks, leases
    held, dead letters."""
    for n in range(6):
        api.create("report.build", {"report": f"weekly-{n}"}, priority=n % 3 * 3)
    for n in range(3):
        api.create("report.build", {"report": f"monthly-{n}"}, delaySeconds=3600)
    for reason in ("upstream timed out", "template not found", "upstream timed out"):
        api.dead_letter("report.build", reason)
    for seconds in (90, 240, 600):
        api.create("report.build", {"report": "quarterly"}, priority=9)
        api.claim("report.build", leaseSeconds=seconds)
    for _ in range(2):
        api.dead_letter("image.resize", "image too large")


def shoot(driver, url: str, ready: tuple[str, ...], path: Path) -> None:
    """Load ``url``, wait until it shows ``ready`` (CSS selectors) and save the whole page."""
    driver.get(url)
    WebDriverWait(driver, 20, 0.1).until(
        lambda d: all(d.find_elements(By.CSS_SELECTOR, r) for r in ready), f"{ready} on {url}")
    time.sleep(0.5)  # the charts' canvases paint after their data arrives
    # The viewport as tall as the page (a headless window is capped by its screen).
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store = StoreServer("redis").start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning")
    driver = None
    try:
        server.start()
        api = Api(server.base, worker="worker-7")
        work(api, WORK_SECONDS)
        backlog(api)
        time.sleep(2.5)  # the series' last seconds settle (pages.SETTLING)
        driver = chromium(WIDTH, 900)
        shoot(driver, f"{server.base}/ui/", ("#overview table", "#chart-failed canvas"),
              out / "dashboard-overview.png")
        shoot(driver, f"{server.base}/ui/queue?command=report.build",
              ("#depths table", "#dlq table", "#inflight table"), out / "dashboard-queue.png")
        api.close()
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        store.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")

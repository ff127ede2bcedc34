"""A headless Chromium from the system's packages (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium; and the scripted tasks the dashboard
tests and ``make screenshots`` show. Nothing is downloaded: Selenium gets the
driver's and the browser's paths, so its manager never runs."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = None if CHROMIUM and CHROMEDRIVER else (
    "no headless browser: install Debian's chromium and chromium-driver "
    "(make system-deps does)")
V1 = "/v1/codeq"


def chromium(width: int = 1280, height: int = 900) -> WebDriver:
    """Start a headless Chromium with a fresh profile; the caller quits it."""
    assert CHROMIUM and CHROMEDRIVER, MISSING
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", f"--window-size={width},{height}",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def script_errors(driver: WebDriver) -> list[str]:
    """The browser's console errors that are bugs: script exceptions and
    Content-Security-Policy refusals (not the HTTP errors a test provokes)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and (e["source"] == "javascript"
                                           or "Content Security Policy" in e["message"])]


class Api:
    """An HTTP client of a codeq serve: what producers and workers do, in short."""

    def __init__(self, base: str, token: str | None = None, worker: str = "w-ui") -> None:
        headers = {"X-Worker-Id": worker}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base + V1, headers=headers, timeout=20)

    def close(self) -> None:
        self.http.close()

    def _ok(self, reply: httpx.Response) -> Any:
        assert reply.status_code in (200, 202), reply.text
        return reply.json()

    def create(self, command: str, payload: Any = None, **extra: Any) -> dict[str, Any]:
        return self._ok(self.http.post("/tasks", json={
            "command": command, "payload": {} if payload is None else payload, **extra}))

    def claim(self, command: str, **extra: Any) -> dict[str, Any] | None:
        reply = self.http.post("/tasks/claim", json={"commands": [command], **extra})
        return None if reply.status_code == 204 else self._ok(reply)

    def complete(self, task: dict[str, Any], result: Any = None) -> dict[str, Any]:
        return self._ok(self.http.post(f"/tasks/{task['id']}/result", json={
            "status": "COMPLETED", "result": result, "leaseId": task["leaseId"]}))

    def dead_letter(self, command: str, reason: str = "upstream timed out") -> str:
        """Create a task of one attempt, claim it (it must come first: priority 9)
        and nack it into the DLQ; return its id."""
        created = self.create(command, {"job": "one attempt"}, priority=9, maxAttempts=1)
        task = self.claim(command)
        assert task is not None and task["id"] == created["id"]
        assert self._ok(self.http.post(f"/tasks/{task['id']}/nack", json={
            "leaseId": task["leaseId"], "reason": reason})) == {"status": "dlq"}
        return task["id"]

    def mix(self, command: str) -> dict[str, int]:
        """Tasks in every state: 3 ready, 2 delayed, 1 in progress, 1 dead-lettered,
        1 completed; return the depths the admin API should show."""
        for n in range(3):
            self.create(command, {"n": n})
        for n in range(2):
            self.create(command, {"later": n}, delaySeconds=3600)
        self.dead_letter(command)
        self.create(command, {"done": True}, priority=9)
        done = self.claim(command)
        assert done is not None
        self.complete(done, {"ok": True})
        self.create(command, {"busy": True}, priority=9)
        assert self.claim(command, leaseSeconds=600) is not None
        return {"ready": 3, "delayed": 2, "in_progress": 1, "dlq": 1}

"""The dashboard in a real headless Chromium against a real codeq serve: the
overview's counts and their live refresh, a DLQ requeue and purge from the
queue page, a task page, and signing in with auth on."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import STORE_KIND
from tests.ui.browser import Api, script_errors
from tests.ui.conftest import token

pytestmark = pytest.mark.skipif(
    STORE_KIND != "redis", reason="the dashboard is tested in a browser once, on the redis "
    "leg (its reads are tested on every store in test_reads.py)")

DEPTHS = ("ready", "delayed", "in_progress", "dlq")
# The cells of one overview row, read in one go: the table is replaced at every poll.
ROW = """const row = document.querySelector(`#overview tr[data-command="${arguments[0]}"]`);
return row && Object.fromEntries([...row.querySelectorAll("td[data-col]")].map(
    (td) => [td.dataset.col, td.textContent.trim()]));"""


def until(driver: WebDriver, predicate, what: str, timeout: float = 10) -> Any:
    """Poll ``predicate`` (of nothing) until truthy, or fail at the deadline."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException)).until(
        lambda _: predicate(), f"timed out waiting for {what}")


def css(driver: WebDriver, selector: str):
    return driver.find_element(By.CSS_SELECTOR, selector)


def text(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


@pytest.fixture
def api(codeq_server):
    client = Api(codeq_server.base)
    yield client
    client.close()


def test_the_overview_lists_each_queue_with_its_depths_and_sorts(browser, codeq_server, api,
                                                               command):
    expected = api.mix(command)
    api.mix(command + ".b")
    api.dead_letter(command + ".b")
    browser.get(codeq_server.base + "/ui/")
    row = until(browser, lambda: browser.execute_script(ROW, command), "the queue's row")
    assert {k: row[k] for k in DEPTHS} == {k: str(v) for k, v in expected.items()}
    assert row["oldest_ready_age"].endswith(" s")  # three tasks are ready
    # Sorted by the DLQ, from the keyboard: most dead letters first.
    css(browser, "#sort-dlq").send_keys(Keys.ENTER)
    until(browser, lambda: css(browser, "th:has(#sort-dlq)").get_attribute("aria-sort")
          == "descending", "the DLQ sort")
    dlqs = browser.execute_script(
        "return [...document.querySelectorAll('#overview tbody td[data-col=dlq]')]"
        ".map((td) => Number(td.textContent))")
    assert dlqs == sorted(dlqs, reverse=True) and max(dlqs) >= 2
    assert browser.execute_script("return document.activeElement.id") == "sort-dlq"
    assert script_errors(browser) == []


def test_the_numbers_follow_new_tasks_without_a_reload(browser, codeq_server, api, command):
    api.create(command)
    browser.get(codeq_server.base + "/ui/")
    until(browser, lambda: (browser.execute_script(ROW, command) or {}).get("ready") == "1",
          "one ready task")
    browser.execute_script("window.notReloaded = true")
    for _ in range(4):
        api.create(command)
    until(browser, lambda: browser.execute_script(ROW, command)["ready"] == "5",
          "five ready tasks")
    assert browser.execute_script("return window.notReloaded") is True
    # The charts are drawn, and the series counts what was just created.
    until(browser, lambda: browser.execute_script(
        "return ['created', 'completed', 'failed'].every("
        "(name) => document.querySelector(`#chart-${name} canvas`))"), "three charts")
    until(browser, lambda: float(text(browser, "[data-rate=created]") or 0) > 0,
          "tasks created per second")
    assert script_errors(browser) == []


def test_a_dlq_requeue_from_the_queue_page_makes_the_task_claimable(browser, codeq_server, api,
                                                                   command):
    first, second = api.dead_letter(command), api.dead_letter(command)
    browser.get(f"{codeq_server.base}/ui/queue?command={command}")
    until(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#dlq tbody tr")) == 2,
          "two dead letters")
    css(browser, f"#pick-{first}").click()
    css(browser, "button[data-action=requeue][data-scope=selected]").click()
    until(browser, lambda: text(browser, "#status") == "Requeued 1 task.", "the requeue")
    until(browser, lambda: [r.get_attribute("data-task") for r in browser.find_elements(
        By.CSS_SELECTOR, "#dlq tbody tr")] == [second], "the DLQ without it")
    claimed = api.claim(command)
    assert claimed is not None and (claimed["id"], claimed["attempts"]) == (first, 1)

    # Purging asks first: cancelled, nothing goes; confirmed, the task is gone.
    purge = "button[data-action=purge][data-scope=all]"
    css(browser, purge).click()
    dialog = until(browser, lambda: css(browser, "#confirm[open]"), "the confirmation")
    assert "cannot be undone" in dialog.text
    css(browser, "#confirm button[value=cancel]").click()
    assert text(browser, "#status") == "Requeued 1 task."
    assert api.http.get(f"/admin/queues/{command}").json()["dlq"] == 1
    css(browser, purge).click()
    until(browser, lambda: css(browser, "#confirm[open]"), "the confirmation")
    css(browser, "#confirm-ok").click()
    until(browser, lambda: text(browser, "#status") == "Purged 1 task.", "the purge")
    until(browser, lambda: "is empty" in text(browser, "#dlq"), "an empty DLQ")
    assert api.http.get(f"/tasks/{second}").status_code == 404
    assert script_errors(browser) == []


def test_a_task_page_found_by_its_id_shows_the_result(browser, codeq_server, api, command):
    api.create(command, {"invoice": 42})
    task = api.claim(command)
    api.complete(task, {"pdf": "s3://bucket/42.pdf", "pages": 3})
    browser.get(codeq_server.base + "/ui/")
    search = css(browser, "#search-id")
    search.send_keys(task["id"], Keys.ENTER)
    until(browser, lambda: text(browser, "[data-field=status]") == "COMPLETED", "the task")
    assert '"pages": 3' in text(browser, "pre[data-field=result]")
    assert '"invoice": 42' in text(browser, "pre[data-field=payload]")
    assert "None: the task names no webhook." in text(browser, "#task")
    assert css(browser, "h1").text == f"Task {task['id']}"
    assert script_errors(browser) == []


def test_with_auth_on_only_a_token_with_codeq_admin_signs_in(browser, auth_server):
    browser.get(auth_server.base + "/ui/")
    login = until(browser, lambda: css(browser, "#login"), "the login form")
    assert login.is_displayed() and not css(browser, "#main").is_displayed()

    def sign_in(value: str) -> None:
        field = css(browser, "#token")
        field.clear()
        field.send_keys(value, Keys.ENTER)

    sign_in("not-a-token-at-all")
    until(browser, lambda: "unknown token" in text(browser, "#login-message"), "a refusal")
    assert css(browser, "#login").is_displayed()
    sign_in(token("producer"))
    until(browser, lambda: "lacks the scope codeq:admin" in text(browser, "#login-message"),
          "a refusal for the scope")
    assert browser.execute_script("return sessionStorage.getItem('codeq.token')") is None

    sign_in(token("admin"))
    until(browser, lambda: css(browser, "#main").is_displayed(), "the dashboard")
    until(browser, lambda: "acme" in text(browser, "#whoami"), "the tenant")
    assert browser.execute_script("return sessionStorage.getItem('codeq.token')") == token(
        "admin")
    assert browser.get_cookies() == []  # in the tab's session storage only

    # A token the server no longer takes sends the user back to the form, saying why.
    browser.execute_script("sessionStorage.setItem('codeq.token', 'revoked-token-0123456789')")
    browser.refresh()
    until(browser, lambda: "unknown token" in text(browser, "#login-message"),
          "the login form again")
    assert css(browser, "#login").is_displayed() and not css(browser, "#main").is_displayed()
    assert script_errors(browser) == []

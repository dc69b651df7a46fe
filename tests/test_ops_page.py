"""The ops page: `GET /` in a browser. Accept negotiation, the page's headers, and the page itself in a
headless Chromium (the distribution's chromium + chromedriver) against the demo base."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait
from starlette.requests import Request

from py_server.config import Settings
from py_server.demo.loopback import LOOPBACK, LoopbackServer
from py_server.demo.onec_emulator import EmulatorState, OneCEmulator
from py_server.ops_page import CONTENT_SECURITY_POLICY, wants_html

from . import conftest
from .conftest import TEST_PASSWORD, http_proxy, proxy_settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7"
)
FIREFOX_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
TOKEN = "ops-page-test-token"
WAIT = 20  # seconds for the page to reach a state; a wait ends as soon as it does
# Resolved now, before the tests change the working directory.
ARTIFACTS = Path(os.environ["TEST_ARTIFACTS"]).resolve() if os.environ.get("TEST_ARTIFACTS") else None
# get_metadata's answer from the demo base, in Russian.
METADATA_FRAGMENT = "Справочник.Номенклатура"


def request_with(accept: str | None) -> Request:
    headers = [] if accept is None else [(b"accept", accept.encode("latin-1"))]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (CHROME_ACCEPT, True),
        (FIREFOX_ACCEPT, True),
        ("text/html", True),
        ("text/html;q=0.9, application/json;q=0.8", True),
        ("*/*", False),
        (None, False),
        ("", False),
        ("application/json", False),
        ("application/json, text/event-stream", False),
        ("text/html;q=0.1, application/json", False),
        ("text/html, application/json", False),
        ("text/html;q=0.5, */*", False),
        ("text/*", False),
        ("text/html;q=0", False),
        ("text/html;q=abc", False),
    ],
)
def test_wants_html_only_when_the_client_names_html_and_prefers_it_to_json(accept: str | None, expected: bool) -> None:
    assert wants_html(request_with(accept)) is expected


# --- the route ------------------------------------------------------------------------------------


def inline(html: str, tag: str) -> str:
    [content] = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return content


def sha256_source(content: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content.encode("utf-8")).digest()).decode() + "'"


def test_a_browser_gets_the_page_with_a_policy_that_allows_only_its_own_inline_code(emulator: OneCEmulator) -> None:
    with http_proxy(proxy_settings(emulator)) as server:
        response = httpx.get(f"{server.url}/", headers={"Accept": CHROME_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy == {
        "default-src": "'none'",
        "script-src": sha256_source(inline(response.text, "script")),
        "style-src": sha256_source(inline(response.text, "style")),
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.text.count("<script") == 1
    assert "innerHTML" not in response.text and "outerHTML" not in response.text


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_clients_that_do_not_prefer_html_still_get_the_json_index(emulator: OneCEmulator, accept: str | None) -> None:
    with http_proxy(proxy_settings(emulator)) as server, httpx.Client() as client:
        del client.headers["Accept"]
        response = client.get(f"{server.url}/", headers={"Accept": accept} if accept else None)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert {"name", "version", "endpoints"} <= response.json().keys()


# --- the page in Chromium -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"Chromium/chromedriver not installed: {', '.join(missing)} not found")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as exc:
        pytest.skip(f"Chromium/chromedriver not installed: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port that `http_proxy` listens on, for the settings' MCP_PORT too: the page's POSTs carry
    its Origin, and the guard takes http://127.0.0.1:<MCP_PORT> as the proxy's own, as in production."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        free = probe.getsockname()[1]
    monkeypatch.setattr(conftest, "LoopbackServer", functools.partial(LoopbackServer, port=free))
    return free


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $TEST_ARTIFACTS when set (kept by CI), else the test's own tmp_path."""
    directory = ARTIFACTS or tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def text_is(element_id: str, expected: str) -> Callable[[Any], bool]:
    """An expected condition: the element's whole text is `expected` ("healthy" is inside "unhealthy")."""
    return lambda driver: driver.find_element(By.ID, element_id).text == expected


def open_page(driver: webdriver.Chrome, url: str, *, width: int = 1200) -> WebDriverWait[webdriver.Chrome]:
    driver.set_window_size(width, 1000)
    driver.get(f"{url}/")
    return WebDriverWait(driver, WAIT)


def test_the_page_shows_the_status_and_the_catalog_and_calls_a_tool(
    emulator: OneCEmulator, browser: webdriver.Chrome, port: int, artifacts: Path
) -> None:
    with http_proxy(proxy_settings(emulator, port=port)) as server:
        wait = open_page(browser, server.url)
        wait.until(text_is("status", "healthy"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "tools"), "query_sales"))
        assert "get_metadata" in browser.find_element(By.ID, "tools").text
        assert "1C round trip" in browser.find_element(By.ID, "health-detail").text
        assert not browser.find_element(By.ID, "token-section").is_displayed()

        Select(browser.find_element(By.ID, "call-tool")).select_by_value("get_metadata")
        arguments = browser.find_element(By.ID, "call-args")
        arguments.clear()
        arguments.send_keys("{}", Keys.TAB)  # the keyboard's way to the Call button
        assert browser.switch_to.active_element.get_attribute("id") == "call-button"
        browser.switch_to.active_element.send_keys(Keys.ENTER)
        wait.until(EC.text_to_be_present_in_element((By.ID, "call-result"), METADATA_FRAGMENT))
        assert "get_metadata: done" in browser.find_element(By.ID, "call-status").text
        wait.until(EC.text_to_be_present_in_element((By.ID, "metrics"), "MCP requests"))  # /metrics, read again

        screenshot = artifacts / "ops-page.png"
        assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_with_a_token_the_page_shows_the_public_status_and_asks_for_the_token(
    emulator: OneCEmulator, browser: webdriver.Chrome, port: int
) -> None:
    with http_proxy(proxy_settings(emulator, port=port, auth_token=TOKEN)) as server:
        wait = open_page(browser, server.url)
        wait.until(text_is("status", "healthy"))
        token_input = wait.until(EC.visibility_of_element_located((By.ID, "token")))
        assert browser.find_element(By.ID, "tools").text == ""
        assert "needs the token" in browser.find_element(By.ID, "extras").text
        wait.until(EC.text_to_be_present_in_element((By.ID, "metrics-status"), "metrics unavailable (HTTP 401)"))

        token_input.send_keys("wrong-token", Keys.ENTER)
        wait.until(EC.text_to_be_present_in_element((By.ID, "token-error"), "refused this token"))

        browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
        wait.until(EC.text_to_be_present_in_element((By.ID, "tools"), "get_metadata"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "health-detail"), "1C round trip"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "metrics"), "Catalog items"))
        assert not browser.find_element(By.ID, "token-section").is_displayed()
        # The token lives in the page's memory only.
        assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
        assert browser.get_cookies() == []


def test_a_narrow_screen_needs_no_horizontal_scrolling(
    emulator: OneCEmulator, browser: webdriver.Chrome, port: int, artifacts: Path
) -> None:
    with http_proxy(proxy_settings(emulator, port=port)) as server:
        wait = open_page(browser, server.url, width=375)
        wait.until(EC.text_to_be_present_in_element((By.ID, "tools"), "query_sales"))
        browser.execute_script("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        inner_width = browser.execute_script("return window.innerWidth")
        assert inner_width <= 400
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner_width
        assert browser.save_screenshot(str(artifacts / "ops-page-narrow.png"))


def test_with_several_bases_the_page_lists_each_endpoint_and_its_catalog(
    browser: webdriver.Chrome, port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OneCEmulator(EmulatorState(password=TEST_PASSWORD)) as erp, OneCEmulator(EmulatorState()) as zup:
        bases = tmp_path / "bases.toml"
        tables = []
        for name, emulator in (("erp", erp), ("zup", zup)):
            monkeypatch.setenv(f"{name.upper()}_1C_PASSWORD", emulator.password)
            tables.append(
                f'[bases.{name}]\nurl = "{emulator.url}"\nusername = "{emulator.username}"\n'
                f'password_env = "{name.upper()}_1C_PASSWORD"\n'
            )
        bases.write_text("\n".join(tables), encoding="utf-8")
        settings = Settings(_env_file=None, bases_file=bases, rag_backend="off", port=port)  # type: ignore[call-arg]
        with http_proxy(settings) as server:
            wait = open_page(browser, server.url)
            wait.until(EC.text_to_be_present_in_element((By.ID, "tools"), "erp__get_metadata"))
            assert "zup__query_sales" in browser.find_element(By.ID, "tools").text
            assert "Base zup" in browser.find_element(By.ID, "health-detail").text

            Select(browser.find_element(By.ID, "endpoint")).select_by_value("bases/zup/mcp")
            wait.until(lambda driver: "erp__" not in driver.find_element(By.ID, "tools").text)
            wait.until(EC.text_to_be_present_in_element((By.ID, "tools"), "get_metadata"))

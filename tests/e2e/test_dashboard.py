"""The dashboard and the API docs in a real browser (Debian's Chromium driven by Playwright), against the service
behind uvicorn with SIZER_API_KEY set: the page asks for the key once, then fills with what a few signals and a
few bars did, and keeps up as the clock moves; no console error, and no request leaves the service.
SIZER_SCREENSHOTS=DIR keeps the screenshots there (the README's come from `SIZER_SCREENSHOTS=docs`)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from backend.api.app import create_api
from tests.conftest import make_settings, service_missing, uvicorn_serving
from tests.fakes import experienced_cells

KEY = "k3y-for-tests-0123456789"


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[dev]')")
    if not os.path.exists(chromium):
        service_missing("no Chromium to drive: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def service(sqlite_url):
    """A keyed service whose clock is paused, an agent with experience, and a market moved by a few signals:
    trades placed, closed (an outcome learned) and open."""
    app = create_api(make_settings(database_url=sqlite_url, sizer_api_key=KEY), run_clock=False)
    with uvicorn_serving(app) as base_url:
        service = app.state.service
        service.store.q_table.import_q_table(experienced_cells(service.settings.risk.exposure_menu()), replace=True)
        with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}) as client:
            for n, symbol in enumerate(("SP500", "NASDAQ", "SP500", "NASDAQ")):
                r = client.post("/v1/signals", json={"signal_id": f"ui-{n}", "symbol": symbol, "side": "buy",
                                                     "confidence": 0.8, "time_limit_hours": 24 * 4})
                assert r.status_code in (200, 201), r.text
                assert client.post("/v1/clock", json={"step": 3}).status_code == 200
            assert client.get("/v1/outcomes").json()["total"] >= 1
            assert client.get("/v1/trades", params={"status": "open"}).json()["total"] >= 1
            client.base_url_text = base_url
            yield client


def screenshot_dir(tmp_path) -> Path:
    return Path(os.environ.get("SIZER_SCREENSHOTS") or tmp_path)


def watch(page, base_url: str) -> list[str]:
    """Every console error and uncaught exception, and every request that would leave the service (aborted)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def local_only(route):
        if route.request.url.startswith(base_url):
            return route.continue_()
        problems.append(f"external request: {route.request.url}")
        return route.abort()

    page.route("**/*", local_only)
    return problems


def test_the_dashboard_asks_for_the_key_then_shows_the_market_and_the_learning(browser, service, tmp_path):
    base_url = service.base_url_text
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = watch(page, base_url)
    page.goto(base_url + "/")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.locator("#trades tbody tr").count() == 0
    page.fill("#key", KEY)
    page.click("#key-form button")
    page.wait_for_selector("body[data-loaded=true]")
    assert page.locator("#key-form").is_hidden()
    assert page.evaluate("localStorage.getItem('sizer.apiKey')") == KEY

    clock = service.get("/v1/clock").json()
    assert f"market {clock['now'][:10]}" in page.text_content("#clock") and "paused" in page.text_content("#clock")
    assert page.text_content("#state") == "ACTIVE"
    equity = service.get("/v1/positions").json()["account"]["equity"]
    assert f"${equity:,.2f}" in page.text_content("#account")
    samples = len(service.get("/v1/equity").json()["samples"])
    for chart in ("#equity-chart", "#exposure-chart"):
        assert len(page.get_attribute(f"{chart} polyline", "points").split()) == samples == 13  # start + 12 bars
    trades = service.get("/v1/trades").json()["items"]
    rows = page.locator("#trades tbody tr")
    assert rows.count() == len(trades) == 4
    assert rows.first.locator("td").nth(5).text_content() == "qlearning"
    assert rows.first.locator("td.reasoning").text_content() == trades[0]["reasoning"] != ""
    open_symbols = {p["symbol"] for p in service.get("/v1/positions").json()["positions"]}
    assert {page.locator("#positions tbody tr td").nth(6 * i).text_content()
            for i in range(len(open_symbols))} == open_symbols
    assert "clean" in page.text_content("#reconciliation")
    page.screenshot(path=str(screenshot_dir(tmp_path) / "dashboard-trading.png"), full_page=True)

    # live: the next bar shows without a reload
    moved = service.post("/v1/clock", json={"step": 1}).json()["now"][:10]
    page.wait_for_function(f"document.querySelector('#clock').textContent.includes('market {moved}')", timeout=10_000)

    page.click("nav a[data-tab=learning]")
    page.wait_for_selector("#qtable tbody td.state")
    agent = service.get("/v1/agent").json()
    assert "qlearning" in page.text_content("#agent") and str(agent["total_updates"]) in page.text_content("#agent")
    heat_rows = page.locator("#qtable tbody tr")
    visited = {c["state_key"] for c in service.get("/v1/qtable", params={"limit": 500}).json()["items"]
               if c["visits"] > 0}
    assert heat_rows.count() == len(visited) and page.locator("#qtable thead th").count() == len(agent["menu"]) + 2
    assert page.locator("#qtable tbody td[title]").count() >= len(visited)
    outcomes = service.get("/v1/outcomes").json()["total"]
    rewards = page.locator("#reward-chart polyline")
    assert rewards.count() == 2 and len(rewards.first.get_attribute("points").split()) == outcomes
    ab = service.get("/v1/ab").json()
    assert page.text_content("#ab-verdict") == ab["verdict"] and "off (AB_ENABLED)" in page.text_content("#ab")
    assert page.locator("#ab-arms tbody tr").count() == 9
    assert page.locator("#ab-arms tbody tr").first.locator("td").nth(0).text_content() == str(ab["arms"]["rl"]["signals"])
    page.screenshot(path=str(screenshot_dir(tmp_path) / "dashboard-learning.png"), full_page=True)

    assert problems == [], problems
    page.close()


# ReDoc's footer ("API docs by Redocly") always asks for its logo from Redocly's CDN, and hides it when that fails;
# nothing else is fetched, and the docs are whole without it
REDOC_LOGO = ["external request: https://cdn.redoc.ly/redoc/logo-mini.svg",
              "console error: Failed to load resource: net::ERR_FAILED"]


@pytest.mark.parametrize("path, rendered, allowed", [("/docs", ".opblock", []),
                                                     ("/redoc", "li[data-item-id]", REDOC_LOGO)])
def test_the_api_docs_render_offline(browser, service, path, rendered, allowed):
    page = browser.new_page()
    problems = watch(page, service.base_url_text)
    page.goto(service.base_url_text + path)
    page.wait_for_selector(rendered, timeout=20_000)
    page.wait_for_load_state("networkidle")
    assert "/v1/clock" in page.content() and page.locator(rendered).count() > 10
    assert [p for p in problems if p not in allowed] == [], problems
    page.close()


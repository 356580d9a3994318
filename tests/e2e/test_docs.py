"""The pages the service serves: /docs and /redoc work offline (every asset their pages load is served by the
service itself), every operation is documented with a summary and a description, and the dashboard's page knows
whether its reads need the key (tests/e2e/test_dashboard.py drives it in a browser)."""
from __future__ import annotations

import re

import httpx
import pytest

from backend.api.app import create_api
from tests.conftest import make_settings

KEY = "k3y-for-tests-0123456789"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
async def client(sqlite_url):
    app = create_api(make_settings(database_url=sqlite_url), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            yield client


@pytest.mark.parametrize("page, assets", [("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
                                          ("/redoc", {"redoc.standalone.js", "favicon.png"})])
async def test_the_docs_load_only_local_assets(client, page, assets):
    html = (await client.get(page)).text
    urls = set(re.findall(r'(?:src|href)="([^"]+)"', html)) | set(re.findall(r"url: '([^']+)'", html))
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert {url.rsplit("/", 1)[1] for url in urls if "." in url.rsplit("/", 1)[1]} >= assets
    assert "fonts.googleapis" not in html
    for url in urls:
        r = await client.get(url)
        assert r.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[1] if "." in url.rsplit("/", 1)[1] else ""
        expected = CONTENT_TYPES.get(suffix, "application/json")
        assert r.headers["content-type"].startswith(expected), (url, r.headers["content-type"])
        assert len(r.content) > 1000, url


async def test_every_operation_has_a_summary_and_a_description(client):
    spec = (await client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            # FastAPI's default summary is the function's name, which the operation id begins with
            function = operation["operationId"].removesuffix(re.sub(r"\W", "_", path) + "_" + method)
            assert operation.get("summary", "") not in ("", function.replace("_", " ").title()), (method, path)
            assert len(operation.get("description", "")) > 40, (method, path)


@pytest.mark.parametrize("overrides, needs_key", [({}, "false"), ({"sizer_api_key": KEY}, "true"),
                                                  ({"sizer_api_key": KEY, "sizer_open_reads": True}, "false")])
async def test_the_page_knows_whether_its_reads_need_the_key(sqlite_url, overrides, needs_key):
    app = create_api(make_settings(database_url=sqlite_url, **overrides), run_clock=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sizer") as client:
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert f'data-needs-key="{needs_key}"' in page.text
            for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
                r = await client.get(f"/dashboard/{asset}")
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind)

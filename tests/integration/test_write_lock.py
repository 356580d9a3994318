"""No database wait on the event loop: while another process holds SQLite's write lock for 10 s and writers
queue behind it, /healthz and /openapi.json still answer at once (the bound is generous: a busy machine)."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx

from backend.api.app import create_api
from tests.conftest import make_settings

LOCK_S = 10.0


async def test_health_and_docs_answer_while_sqlite_is_write_locked(tmp_path):
    path = tmp_path / "sizer.db"
    app = create_api(make_settings(database_url=f"sqlite:///{path}"), run_clock=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sizer", timeout=120) as client:
            locker = sqlite3.connect(path, timeout=1, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # another process writing: every writer here waits for it
            locked_at = time.monotonic()
            writers = [asyncio.create_task(client.post("/v1/signals", json={
                "signal_id": f"w{i}", "symbol": "SP500", "side": "buy", "confidence": 0.7})) for i in range(60)]
            await asyncio.sleep(1.0)  # let them take every thread and pooled connection they can
            answers = {}
            for path_ in ("/healthz", "/openapi.json", "/healthz"):
                started = time.monotonic()
                r = await client.get(path_)
                answers[path_] = (r.status_code, time.monotonic() - started)
            assert time.monotonic() - locked_at < LOCK_S, "the probes must have run while the lock was held"
            await asyncio.sleep(max(0.0, LOCK_S - (time.monotonic() - locked_at)))
            locker.execute("ROLLBACK")
            locker.close()
            statuses = [(await w).status_code for w in writers]
    assert answers["/openapi.json"][0] == 200 and answers["/openapi.json"][1] < 2.0, answers
    assert answers["/healthz"][0] in (200, 503) and answers["/healthz"][1] < 3.0, answers
    assert all(s in (200, 201, 503) for s in statuses), statuses  # waited for the lock, or told to retry

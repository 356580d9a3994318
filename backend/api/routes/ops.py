"""Health and metrics."""
from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from backend.api.deps import Sizer

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz(sizer: Sizer, response: Response) -> dict:
    checks: dict[str, str] = {}
    try:
        with sizer.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # reported, not raised: health must answer while a dependency is down
        checks["database"] = f"down: {exc.__class__.__name__}: {exc}"
    try:
        checks["broker"] = f"ok ({sizer.broker.name}, {sizer.broker.now():%Y-%m-%d})"
    except Exception as exc:
        checks["broker"] = f"down: {exc}"
    healthy = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if healthy else 503
    return {"status": "ok" if healthy else "degraded", "checks": checks}


@router.get("/metrics")
def metrics(sizer: Sizer) -> Response:
    account = sizer.broker.account()
    sizer.metrics.equity.set(account.equity)
    sizer.metrics.exposure.set(account.exposure)
    sizer.metrics.epsilon.set(sizer.store.epsilon())
    collapse = getattr(sizer.risk.policy, "collapse", None)
    if collapse is not None:
        dominance, entropy = collapse()
        sizer.metrics.action_dominance.set(dominance)
        sizer.metrics.action_entropy.set(entropy)
    return Response(generate_latest(sizer.metrics.registry), media_type=CONTENT_TYPE_LATEST)

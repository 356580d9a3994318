"""Dependencies shared by the routers."""
from __future__ import annotations

import dataclasses
import hmac
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from backend.api.clock import MarketClock
from backend.bootstrap import Service


async def get_service(request: Request) -> Service:
    """async: a plain attribute read must not cost a thread-pool hand-off on every request."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_clock(request: Request) -> MarketClock:
    return request.app.state.clock


Clock = Annotated[MarketClock, Depends(get_clock)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="SIZER_API_KEY; required on every /v1 request when it is set (reads "
                                           "excepted with SIZER_OPEN_READS)")


async def require_api_key(request: Request, service: ServiceDep,
                          key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """Guards every /v1 route. Without SIZER_API_KEY the check is off: Settings allows that only while the service
    listens on a loopback address. A decision is no read: it draws on the policy's exploration and on the broker."""
    server = service.settings.service
    expected = server.api_key
    if expected is None or (server.open_reads and request.method == "GET"):
        return
    if key is None:
        raise HTTPException(401, f"missing X-API-Key header: {request.method} {request.url.path} needs the "
                                 "service's SIZER_API_KEY", headers={"WWW-Authenticate": "APIKey"})
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "X-API-Key does not match SIZER_API_KEY", headers={"WWW-Authenticate": "APIKey"})


def row_dict(row: Any) -> dict[str, Any]:
    """A stored record (a table row or a domain record) as the API's JSON fields."""
    names = [f.name for f in dataclasses.fields(row)] if dataclasses.is_dataclass(row) else [
        c.key for c in row.__table__.columns]
    return {name: getattr(value, "value", value) if isinstance(value := getattr(row, name), Enum) else value
            for name in names}

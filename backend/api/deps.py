"""Dependencies shared by the routers."""
from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from backend.bootstrap import App


async def get_sizer(request: Request) -> App:
    """async: a plain attribute read must not cost a thread-pool hand-off on every request."""
    return request.app.state.sizer


Sizer = Annotated[App, Depends(get_sizer)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                               description="SIZER_API_KEY; required on the trading endpoints when it is set")


async def require_api_key(sizer: Sizer, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """Guards the routers that trade or size. Without SIZER_API_KEY the check is off: Settings allows that only
    while the service listens on a loopback address."""
    expected = sizer.settings.sizer_api_key
    if expected is None:
        return
    if key is None:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "APIKey"})
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "X-API-Key does not match SIZER_API_KEY", headers={"WWW-Authenticate": "APIKey"})


def row_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}

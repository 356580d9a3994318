"""Dependencies shared by the routers."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from backend.bootstrap import App


async def get_sizer(request: Request) -> App:
    """async: a plain attribute read must not cost a thread-pool hand-off on every request."""
    return request.app.state.sizer


Sizer = Annotated[App, Depends(get_sizer)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]


def row_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}

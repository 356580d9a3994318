"""Alembic environment: the URL comes from the caller (run_migrations) or from Settings."""
from alembic import context

from backend.store.tables import Base


def _url() -> str:
    url = context.config.attributes.get("database_url")
    if url:
        return url
    from backend.config import load_settings

    return load_settings().database_url


def run() -> None:
    from backend.store.db import make_engine

    engine = make_engine(_url())
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=Base.metadata,
            render_as_batch=conn.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()

"""The service database: one engine factory, one metadata, Alembic migrations.

SQLite is the default (WAL, foreign keys on, writers serialised with
``BEGIN IMMEDIATE``); PostgreSQL is used when ``TOISIO_DATABASE_URL`` points at
it.  Each stage declares its own tables on :data:`Base`; the schema is created
and upgraded only by Alembic (:func:`migrate`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base shared by every stage's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "busy_timeout=30000"):
            dbapi_conn.execute("PRAGMA " + pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front (serialised, no upgrade deadlocks); readers opened
        # with read_connection() use a deferred transaction, which WAL lets run beside a writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("toisio_readonly") else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the service's connection settings."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _sqlite_hooks(engine)
        return engine
    # the web server runs up to 40 requests at once, each using a few connections in turn: a pool of 5 made
    # them queue (measured by bench/portal_bench.py)
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


def read_connection(engine: Engine):
    """A connection for reads only: it never waits for (or blocks) the SQLite write lock."""
    return engine.connect().execution_options(toisio_readonly=True)


#: The migrations live with the composition root (:mod:`toisio.app`), which knows every stage's tables.
MIGRATIONS_DIR = Path(__file__).parent / "app" / "migrations"


def alembic_config(engine: Engine):
    """An Alembic config bound to ``engine`` (used by :func:`migrate` and ``toisio db``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade the database schema to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def get_engine(url: str) -> Engine:
    """A migrated engine for ``url``, created once per process."""
    return _engine_for(url)

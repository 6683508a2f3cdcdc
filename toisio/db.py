"""The service database: one engine factory, one metadata, Alembic migrations.

SQLite is the default (WAL, foreign keys on, writers serialised with
``BEGIN IMMEDIATE``); PostgreSQL is used when ``TOISIO_DATABASE_URL`` points at
it.  Each stage declares its own tables on :data:`Base`; the schema is created
and upgraded only by Alembic (:func:`migrate`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, Integer, MetaData, String, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from toisio.errors import ToisioError, Unavailable

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


class StateChangeRow(Base):
    """How many times the rows behind one subject (``case:ID``, ``user:ID``, ``token:ID``) were inserted, updated
    or deleted, by anyone: counted by database triggers (:func:`change_counter_ddl`), so that an edit made outside
    the service also shows.  Part of the stamp under which a process keeps state it verified against the audit
    chain (:func:`toisio.audit.stamp`)."""

    __tablename__ = "state_change"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


_PG_COUNTER_FUNCTION = (
    "CREATE OR REPLACE FUNCTION state_change_count() RETURNS trigger AS $$ "
    "BEGIN "
    "IF TG_OP = 'TRUNCATE' THEN "
    "  UPDATE state_change SET n = n + 1 WHERE subject LIKE TG_ARGV[0] || '%'; RETURN NULL; "
    "END IF; "
    "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
    "  INSERT INTO state_change (subject, n) VALUES (TG_ARGV[0] || (to_jsonb(OLD) ->> TG_ARGV[1]), 1) "
    "  ON CONFLICT (subject) DO UPDATE SET n = state_change.n + 1; "
    "END IF; "
    "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
    "  INSERT INTO state_change (subject, n) VALUES (TG_ARGV[0] || (to_jsonb(NEW) ->> TG_ARGV[1]), 1) "
    "  ON CONFLICT (subject) DO UPDATE SET n = state_change.n + 1; "
    "END IF; "
    "RETURN NULL; END; $$ LANGUAGE plpgsql"
)


def change_counter_ddl(dialect: str, table: str, prefix: str, column: str) -> list[str]:
    """Triggers that count every insert, update and delete of ``table``'s rows (and, on PostgreSQL, a
    TRUNCATE) against the subject ``prefix || row.column`` in :class:`StateChangeRow`."""
    name = f"{table}_counted"
    if dialect == "postgresql":
        return [_PG_COUNTER_FUNCTION,
                f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
                f"EXECUTE FUNCTION state_change_count('{prefix}', '{column}')",
                f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION state_change_count('{prefix}', '{column}')"]

    def bump(row: str) -> str:
        return (f"INSERT INTO state_change (subject, n) VALUES ('{prefix}' || {row}.{column}, 1) "
                f"ON CONFLICT (subject) DO UPDATE SET n = n + 1;")

    return [f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} BEGIN {bump('NEW')} END",
            f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} BEGIN {bump('OLD')} {bump('NEW')} END",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN {bump('OLD')} END"]


def drop_change_counter_ddl(dialect: str, table: str) -> list[str]:
    name = f"{table}_counted"
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP TRIGGER IF EXISTS {name}_truncate ON {table}"]
    return [f"DROP TRIGGER IF EXISTS {name}_{op}" for op in ("insert", "update", "delete")]


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
    # The web server runs up to 40 requests at once, each using a few connections in turn: a pool of 5 made
    # them queue (measured by bench/portal_bench.py).  No ping before each use: it was a round trip on every
    # checkout, about a fifth of a case read's time.  A connection the database dropped (a restart, a failover)
    # fails the one statement that finds it, which the service answers with 503 database_unavailable
    # (:func:`lost_connection`), and SQLAlchemy then replaces every connection pooled before it; connections
    # are also renewed every half hour, before a server or a firewall times them out.
    return create_engine(url, pool_size=20, max_overflow=20, pool_recycle=1800)


def lost_connection(exc: BaseException | None) -> ToisioError | None:
    """The user's error for a database connection lost under a request (503, ``database_unavailable``: a read
    may be sent again; a change was rolled back unless the connection dropped while it committed, so the
    message asks to check first), or None if ``exc`` is something else.  The error may come
    wrapped: raised while another was handled (a middleware that failed to load a session)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and not (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    if exc is not None and id(exc) not in seen:
        return Unavailable("the connection to the database was lost before the request finished (the database "
                           "restarted or the network dropped it): try again; if you sent a change, check first "
                           "whether it was saved", code="database_unavailable")
    return None


def read_connection(engine: Engine):
    """A connection for reads only: it never waits for (or blocks) the SQLite write lock."""
    return engine.connect().execution_options(toisio_readonly=True)


def statement_connection(engine: Engine):
    """A connection for single-statement reads, with no transaction around them (no BEGIN and ROLLBACK round
    trips on PostgreSQL; one statement sees one snapshot either way).  For the checks on every request."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT", toisio_readonly=True)
    return read_connection(engine)


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

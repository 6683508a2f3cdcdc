"""The Alembic migrations build exactly the schema the models declare (no drift)."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from toisio.app.models import import_all_models
from toisio.db import Base, make_engine, migrate


def test_no_drift_between_models_and_migrations(tmp_path):
    import_all_models()
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], diff


def test_audit_table_is_append_only_after_migration(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    with engine.connect() as conn:
        triggers = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {"audit_event_no_update", "audit_event_no_delete"} <= triggers

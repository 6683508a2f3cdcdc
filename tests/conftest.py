"""Shared fixtures (the factories are in tests/factories.py)."""

from __future__ import annotations

import os
from pathlib import Path

import authlib.deprecate  # noqa: F401  (installs its "always" filter now, so the ini's filters come before it)
import pytest

from tests.factories import make_service
from toisio.config import load_settings
from toisio.service import Service

for _var in ("TOISIO_MASTER_KEY", "TOISIO_AUDIT_KEY", "TOISIO_CREDENTIAL_KEY", "TOISIO_DATABASE_URL",
             "TOISIO_SPARK_REMOTE", "TOISIO_HOME", "TOISIO_TOKEN"):
    os.environ.pop(_var, None)


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path_factory, monkeypatch):
    """Each test signs in with a configuration directory of its own (never the developer's ~/.config)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


PG_URL = os.environ.get("TOISIO_TEST_POSTGRES_URL")
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Each test is marked with its tier, from its directory (tests/unit, tests/integration, tests/e2e), so
    `pytest -m unit` runs the fast core; a test outside the tiers is an error."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request, tmp_path: Path) -> Service:
    """A service on SQLite, and again on PostgreSQL where TOISIO_TEST_POSTGRES_URL points at a server."""
    if request.param == "sqlite":
        yield make_service(tmp_path / "home")
        return
    if not PG_URL:
        if os.environ.get("TOISIO_REQUIRE_POSTGRES") == "1":  # CI: a missing server is a failure, not a skip
            pytest.fail("TOISIO_REQUIRE_POSTGRES=1 but TOISIO_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server (set TOISIO_TEST_POSTGRES_URL; .ci/run starts one)")
    import uuid

    import sqlalchemy as sa

    name = f"toisio_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    service_ = make_service(tmp_path / "home", database_url=url)
    yield service_
    service_.engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def spark():
    from pseudonymise.spark_session import get_spark

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = get_spark(load_settings(spark_master="local[2]", spark_shuffle_partitions=2))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def extracts(tmp_path_factory) -> Path:
    """Small synthetic extracts with defects, and Kanta's FHIR export of the same persons (shared, read-only)."""
    from pseudonymise.synthetic import generate

    out = tmp_path_factory.mktemp("extracts")
    generate(out, persons=3000, seed=11, defect_rate=0.02, fhir=True)
    return out

"""Shared fixtures (the factories are in tests/factories.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.factories import make_service
from toisio.config import load_settings
from toisio.service import Service

for _var in ("TOISIO_MASTER_KEY", "TOISIO_AUDIT_KEY", "TOISIO_DATABASE_URL", "TOISIO_SPARK_REMOTE", "TOISIO_HOME"):
    os.environ.pop(_var, None)


@pytest.fixture
def svc(tmp_path: Path) -> Service:
    return make_service(tmp_path / "home")


@pytest.fixture(scope="session")
def spark():
    from pseudonymise.spark_session import get_spark

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = get_spark(load_settings(spark_master="local[2]", spark_shuffle_partitions=2))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def extracts(tmp_path_factory) -> Path:
    """Small synthetic extracts with defects (shared, read-only)."""
    from pseudonymise.synthetic import generate

    out = tmp_path_factory.mktemp("extracts")
    generate(out, persons=3000, seed=11, defect_rate=0.02)
    return out

"""The extraction as a Prefect flow (ephemeral server via prefect_test_harness)."""

import os
import tempfile
from types import SimpleNamespace

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="toisio-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from flows.extraction import _transient, extraction_flow  # noqa: E402
from permits.scope import ScopeError  # noqa: E402
from pseudonymise.pipeline import ExtractionError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _state(exc):
    return SimpleNamespace(result=lambda raise_on_failure=False: exc)


def test_retry_only_transient_failures():
    assert _transient(None, None, _state(ConnectionError("executor lost")))
    assert not _transient(None, None, _state(ScopeError("bad scope")))
    assert not _transient(None, None, _state(ExtractionError("missing file")))


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_flow_delivers(harness, spark, extracts, tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOISIO_SPARK_MASTER", "local[2]")
    scope = tmp_path / "scope.yaml"
    scope.write_text("""
permit_id: TOISIO-2026-5
delivery: pseudonymised
registries:
  hilmo: {variables: [admission_date, main_dg]}
  cancer: {variables: [diagnosis_date, topography, morphology]}
""")
    summary = extraction_flow(str(scope), str(extracts), str(tmp_path / "out"), "flow-test")
    assert (tmp_path / "out" / "manifest.json").exists()
    assert summary["delivered"]["hilmo"] > 0 and "persons" in summary["delivered"]

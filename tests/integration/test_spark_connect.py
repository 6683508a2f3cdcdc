"""Scale-out by one setting: the same pipeline through a local Spark Connect server."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from pseudonymise.pipeline import run_extraction
from tests.factories import make_service

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCOPE = """
permit_id: TOISIO-2026-7
delivery: pseudonymised
cohort:
  registry: hilmo
  code_columns: [main_dg]
  code_prefixes: [E11]
  period: {start: 2005-01-01, end: 2022-12-31}
  controls_per_case: 1
registries:
  population: {variables: [sex, birth_date]}
  hilmo: {variables: [admission_date, main_dg], period: {start: 2005-01-01, end: 2023-12-31}}
"""


@pytest.fixture(scope="module")
def classic(spark, extracts, tmp_path_factory):
    """The scope delivered by a classic local run in this process: (home, scope file, delivery)."""
    from permits.scope import load_scope

    tmp = tmp_path_factory.mktemp("classic")
    home, scope_file = tmp / "home", tmp / "scope.yaml"
    scope_file.write_text(SCOPE)
    result = run_extraction(load_scope(scope_file), extracts, tmp / "classic", make_service(home), spark=spark)
    assert result.manifest.counts["hilmo"].delivered > 0
    return home, scope_file, tmp / "classic"


def _files(root):
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_standalone_cluster_gives_a_byte_identical_delivery(classic, extracts, tmp_path):
    """The same extraction in another process, on a Spark standalone cluster (a master and two workers started on
    this machine; every executor its own JVM): every delivered file byte-identical to the local run's."""
    from tests.factories import spark_standalone_cluster

    home, scope_file, local = classic
    with spark_standalone_cluster(tmp_path / "cluster") as master:
        env = {**os.environ, "TOISIO_HOME": str(home), "TOISIO_SPARK_MASTER": master,
               "TOISIO_SPARK_SHUFFLE_PARTITIONS": "2", "TOISIO_SPARK_DRIVER_HOST": "127.0.0.1",
               "TOISIO_SPARK_BIND_ADDRESS": "127.0.0.1"}
        env.pop("TOISIO_SPARK_REMOTE", None)
        proc = subprocess.run(
            [sys.executable, "-m", "toisio.app.cli", "extract", "--scope", str(scope_file), "--in", str(extracts),
             "--out", str(tmp_path / "cluster-out")], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        apps = list((tmp_path / "cluster").glob("worker-*/app-*"))
    assert len({a.parent for a in apps}) == 2  # both workers ran executors of the extraction
    assert _files(local) == _files(tmp_path / "cluster-out")


def test_connect_gives_the_same_delivery_as_classic(classic, extracts, tmp_path):
    home, scope_file, local = classic
    env = {**os.environ, "TOISIO_HOME": str(home), "TOISIO_SPARK_REMOTE": "local",
           "TOISIO_SPARK_MASTER": "local[2]", "TOISIO_SPARK_SHUFFLE_PARTITIONS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "toisio.app.cli", "extract", "--scope", str(scope_file), "--in", str(extracts),
         "--out", str(tmp_path / "connect")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("hilmo", "persons"):
        a = pd.read_parquet(local / name)
        b = pd.read_parquet(tmp_path / "connect" / name)
        cols = list(a.columns)
        pd.testing.assert_frame_equal(a.sort_values(cols).reset_index(drop=True),
                                      b.sort_values(cols).reset_index(drop=True))


PROBE = r'''
import json, os, sys
from pyspark.sql import SparkSession
from pseudonymise.pseudonym import is_connect, key_frame, pseudonym_python, with_pseudonym
from pseudonymise.keys import derive_permit_key
from toisio.keystore import Secret

spark = (SparkSession.builder.master("local[1]").config("spark.api.mode", "connect")
         .config("spark.ui.enabled", "false").getOrCreate())
assert is_connect(spark), type(spark)
sent = {}
stubs = {"ExecutePlan": spark.client._stub, "AnalyzePlan": spark.client._stub, "Config": spark.client._stub,
         "ReattachExecute": spark.client._stub, "AddArtifacts": spark.client._artifact_manager._stub,
         "ArtifactStatus": spark.client._artifact_manager._stub}
for name, stub in stubs.items():
    real = getattr(stub, name)
    def call(request, *args, _real=real, _name=name, **kwargs):
        if _name == "AddArtifacts":  # a stream of requests
            request = list(request)
            sent.setdefault(_name, []).extend(r.SerializeToString() for r in request)
            return _real(iter(request), *args, **kwargs)
        sent.setdefault(_name, []).append(request.SerializeToString())
        return _real(request, *args, **kwargs)
    setattr(stub, name, call)
key = derive_permit_key(Secret("master", bytes(range(7, 39))), "TOISIO-2026-9")
codes = ["131052-308T", "010101-123N"]
out = with_pseudonym(spark.createDataFrame([(c,) for c in codes], "hetu string"), key_frame(spark, key))
got = {r["hetu"]: r["pseudonym"] for r in out.collect()}
assert got == {c: pseudonym_python(key, c) for c in codes}, got
out.explain(mode="extended")
k = key.secret.value
print(json.dumps({name: [k in m or k.hex().encode() in m for m in messages] for name, messages in sent.items()}))
'''


def test_under_spark_connect_no_plan_message_holds_the_key(tmp_path):
    """Every message the client sends to the Spark Connect server is captured: the plans (ExecutePlan,
    AnalyzePlan) and the settings never hold the permit key; it travels once, as a session-scoped artifact."""
    import json

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    holds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert holds["ExecutePlan"] and holds["AnalyzePlan"]  # the plans were seen
    for name in ("ExecutePlan", "AnalyzePlan", "Config", "ReattachExecute"):
        assert not any(holds.get(name, [])), f"{name} carried the key"
    assert any(holds["AddArtifacts"])  # the key's one trip: the session's artifact

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


def test_connect_gives_the_same_delivery_as_classic(spark, extracts, tmp_path):
    home = tmp_path / "home"
    scope_file = tmp_path / "scope.yaml"
    scope_file.write_text(SCOPE)
    from permits.scope import load_scope

    classic = run_extraction(load_scope(scope_file), extracts, tmp_path / "classic", make_service(home), spark=spark)
    env = {**os.environ, "TOISIO_HOME": str(home), "TOISIO_SPARK_REMOTE": "local",
           "TOISIO_SPARK_MASTER": "local[2]", "TOISIO_SPARK_SHUFFLE_PARTITIONS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "toisio.app.cli", "extract", "--scope", str(scope_file), "--in", str(extracts),
         "--out", str(tmp_path / "connect")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("hilmo", "persons"):
        a = pd.read_parquet(tmp_path / "classic" / name)
        b = pd.read_parquet(tmp_path / "connect" / name)
        cols = list(a.columns)
        pd.testing.assert_frame_equal(a.sort_values(cols).reset_index(drop=True),
                                      b.sort_values(cols).reset_index(drop=True))
    assert classic.manifest.counts["hilmo"].delivered > 0

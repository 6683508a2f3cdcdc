"""One way to get a Spark session, local or distributed, by one setting.

* ``TOISIO_SPARK_MASTER`` (default ``local[*]``): any Spark master URL
  (``spark://host:7077``, ``yarn``, ``k8s://...``).
* ``TOISIO_SPARK_REMOTE``: a Spark Connect URL (``sc://host:15002``) - the
  pipeline then runs through Spark Connect with no JVM in this process; the
  value ``local`` starts a local Spark Connect server (used by the tests).

The pipeline code is the same in every mode: it only uses the DataFrame API.
"""

from __future__ import annotations

import os
import shutil
import sys

from pyspark.sql import SparkSession

from pseudonymise import jvm_functions
from toisio.config import Settings
from toisio.errors import Unavailable

# The generated code for validation is large; without this flag the JVM refuses to JIT-compile
# methods over 8 kB of bytecode and runs them interpreted, several times slower.
JAVA_OPTIONS = "-XX:-DontCompileHugeMethods"


# Session settings the pipeline needs whatever the mode (set at run time, so they reach a remote
# Spark Connect session too).  Writers stay open per output partition (valid, rejected, repeated)
# instead of Spark sorting every task's rows by the partition column first: that sort spilled and
# nearly doubled the validation time.
PIPELINE_SQL_CONF = {"spark.sql.maxConcurrentOutputFileWriters": "8"}


def apply_pipeline_conf(spark: SparkSession) -> None:
    """Set :data:`PIPELINE_SQL_CONF` on ``spark``."""
    for k, v in PIPELINE_SQL_CONF.items():
        spark.conf.set(k, v)


class SparkUnavailable(Unavailable):
    """Spark cannot start on this machine (for example Java is missing)."""


def check_java() -> None:
    """Fail with an install hint if no Java runtime is on the PATH."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkUnavailable(
            "Spark needs a Java 17+ runtime and none was found. On Debian/Ubuntu: "
            "sudo apt-get install -y openjdk-17-jre-headless"
        )


def get_spark(settings: Settings, app_name: str = "toisio") -> SparkSession:
    """The Spark session for ``settings`` (created once per process, reused after)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_bind_address)
    builder = SparkSession.builder.appName(app_name)
    if settings.spark_remote and settings.spark_remote != "local":
        spark = builder.remote(settings.spark_remote).getOrCreate()
        if not jvm_functions.available(spark):
            jvm_functions.register(spark, remote=True)
        return spark
    check_java()
    builder = (
        builder.master(settings.spark_master)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.bindAddress", settings.spark_bind_address)
        .config("spark.driver.host", settings.spark_driver_host)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.eventLog.enabled", "false")
        # Work files hold normalised identity codes: created 600 (directories 700), never readable by others.
        .config("spark.hadoop.fs.permissions.umask-mode", "077")
        .config("spark.driver.extraJavaOptions", JAVA_OPTIONS)
        .config("spark.executor.extraJavaOptions", JAVA_OPTIONS)
    )
    jar = jvm_functions.built_jar()
    if jar is not None:  # the pipeline's Java functions, on the driver's and every executor's classpath
        builder = builder.config("spark.jars", str(jar))
    if settings.spark_remote == "local":
        builder = builder.config("spark.api.mode", "connect")
    # The JVM inherits the umask it is started with: everything Spark writes (work files with plaintext
    # identity codes, their .crc checksums, task attempt directories) is then 600/700 from the start.
    old_umask = os.umask(0o077)
    try:
        spark = builder.getOrCreate()
    finally:
        os.umask(old_umask)
    if settings.spark_remote != "local":
        spark.sparkContext.setLogLevel("ERROR")
    if not jvm_functions.available(spark):
        jvm_functions.register(spark)
    return spark

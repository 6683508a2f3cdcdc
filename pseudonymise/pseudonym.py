"""Keyed pseudonyms in Spark: HMAC-SHA256 of the normalised identity code.

The pseudonym is the lower-case hex of the first 128 bits of
``HMAC-SHA256(permit key, normalised 11-character HETU)``.  128 bits keep the
Parquet columns small (a 64-character hex does not compress) while the chance
of any collision among 10 million persons stays below 1e-24.

The key never appears as a literal in the query plan: it enters as a one-row
DataFrame joined by broadcast (see shared notes, platform.md section 3), so
``explain()``, the UI and event logs show only a column reference.  Under Spark
Connect the frame is uploaded as a session-scoped artifact, so no plan message
sent to the server holds the key either (:func:`key_frame`).
"""

from __future__ import annotations

import hashlib
import hmac

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

from pseudonymise.keys import PermitKey

PSEUDONYM_HEX_CHARS = 32
_KEY_COL = "_pseudonym_key"


def pseudonym_python(key: PermitKey, hetu: str) -> str:
    """The same pseudonym computed with Python's hmac (reference and tests)."""
    digest = hmac.new(key.secret.value, hetu.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_CHARS]


#: Spark Connect sends the rows of a small local DataFrame inside the plan message; above this session setting it
#: uploads them as an artifact (its own RPC, kept in the server's session) and the plan names them by SHA-256.
CACHE_THRESHOLD = "spark.sql.session.localRelationCacheThreshold"


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def key_frame(spark: SparkSession, key: PermitKey) -> DataFrame:
    """A one-row DataFrame holding the key (kept out of the plan text).

    Classic Spark keeps it as data of the driver's plan, never printed.  Under Spark Connect the key would travel
    inside every plan message that uses it, so it is uploaded once as a session-scoped artifact instead (the
    threshold lowered to 0 for this one frame): the plan messages carry only the artifact's SHA-256."""
    schema = StructType([StructField(_KEY_COL, BinaryType(), False)])
    rows = [(bytearray(key.secret.value),)]
    if not is_connect(spark):
        return spark.createDataFrame(rows, schema)
    before = spark.conf.get(CACHE_THRESHOLD)
    spark.conf.set(CACHE_THRESHOLD, "0")
    try:
        return spark.createDataFrame(rows, schema)
    finally:
        spark.conf.set(CACHE_THRESHOLD, before)


def with_pseudonym(df: DataFrame, keydf: DataFrame, hetu_col: str = "hetu", out_col: str = "pseudonym") -> DataFrame:
    """Add ``out_col`` = pseudonym of ``hetu_col``; rows with a null code get a null pseudonym."""
    joined = df.crossJoin(F.broadcast(keydf))
    mac: Column = F.hmac(F.col(_KEY_COL), F.col(hetu_col).cast("binary"), F.lit("SHA-256"))
    first = F.substring(mac, 1, PSEUDONYM_HEX_CHARS // 2)  # bytes: only what the pseudonym keeps is hex-encoded
    return joined.withColumn(out_col, F.lower(F.hex(first))).drop(_KEY_COL)

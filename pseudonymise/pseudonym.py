"""Keyed pseudonyms in Spark: HMAC-SHA256 of the normalised identity code.

The pseudonym is the lower-case hex of the first 128 bits of
``HMAC-SHA256(permit key, normalised 11-character HETU)``.  128 bits keep the
Parquet columns small (a 64-character hex does not compress) while the chance
of any collision among 10 million persons stays below 1e-24.

The key never appears as a literal in the query plan: it enters as a one-row
DataFrame joined by broadcast (see shared notes, platform.md section 3), so
``explain()``, the UI and event logs show only a column reference.
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


def key_frame(spark: SparkSession, key: PermitKey) -> DataFrame:
    """A one-row DataFrame holding the key (kept out of the plan text)."""
    schema = StructType([StructField(_KEY_COL, BinaryType(), False)])
    return spark.createDataFrame([(bytearray(key.secret.value),)], schema)


def with_pseudonym(df: DataFrame, keydf: DataFrame, hetu_col: str = "hetu", out_col: str = "pseudonym") -> DataFrame:
    """Add ``out_col`` = pseudonym of ``hetu_col``; rows with a null code get a null pseudonym."""
    joined = df.crossJoin(F.broadcast(keydf))
    mac: Column = F.hmac(F.col(_KEY_COL), F.col(hetu_col).cast("binary"), F.lit("SHA-256"))
    first = F.substring(mac, 1, PSEUDONYM_HEX_CHARS // 2)  # bytes: only what the pseudonym keeps is hex-encoded
    return joined.withColumn(out_col, F.lower(F.hex(first))).drop(_KEY_COL)

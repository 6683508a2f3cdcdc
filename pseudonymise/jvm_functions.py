"""Spark functions written in Java for the pipeline's hottest rules, and how they are built and registered.

The identity-code rules run once per row of every registry, and Kela's ``d.M.yyyy`` dates once per row of the
largest.  As Catalyst expressions (a regular
expression, four substrings cast to numbers, date and checksum arithmetic) they cost about a microsecond
a row on two cores; as one Java function, about a twentieth of that (docs/pipeline.md gives the figures).
The sources are in ``pseudonymise/java/``; ``make`` compiles them into :data:`JAR` with the JDK's ``javac``
against the jars of the installed pyspark (``python -m pseudonymise.jvm_functions build``).

Where the jar was not built (a machine with a Java runtime but no JDK), the pipeline uses the Catalyst
expressions of :mod:`pseudonymise.validate` instead and logs that it does: the results are the same (the
tests hold the two to each other, code for code), only slower.  CI sets ``TOISIO_REQUIRE_JVM_FUNCTIONS``,
so there the jar must be built and registered.

The functions take no key and no configuration: nothing secret is in them or in the plans that call them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent / "java"
JAR = SOURCE_DIR / "toisio-functions.jar"

#: The Spark SQL name of the identity-code function: ``toisio_hetu_reason(normalised_code, allow_temporary)``
#: gives the reason of :func:`pseudonymise.hetu.rejection_reason`, or null for a usable code.
HETU_REASON = "toisio_hetu_reason"

#: ``toisio_dotted_date(text)``: the day number (since 1970-01-01) of a ``d.M.yyyy`` date of the plain shape,
#: or null (the caller leaves every other value to Spark's parser of the pattern).
DOTTED_DATE = "toisio_dotted_date"

#: Every function in the jar: its Spark SQL name, its Java class and its return type.
FUNCTIONS: dict[str, tuple[str, str]] = {
    HETU_REASON: ("fi.toisio.spark.HetuReason", "string"),
    DOTTED_DATE: ("fi.toisio.spark.DottedDate", "int"),
}

#: Set (to anything but empty or 0) where the jar must be built and used: a session without it is an error.
REQUIRE_ENV = "TOISIO_REQUIRE_JVM_FUNCTIONS"


class JvmFunctionsMissing(RuntimeError):
    """The Java functions were required (``TOISIO_REQUIRE_JVM_FUNCTIONS``) but are not built or not loaded."""


def sources() -> list[Path]:
    """The Java sources of the jar."""
    return sorted(SOURCE_DIR.rglob("*.java"))


def built_jar() -> Path | None:
    """:data:`JAR` if it is built and no source is newer than it, else ``None``."""
    try:
        built = JAR.stat().st_mtime
    except FileNotFoundError:
        return None
    if any(s.stat().st_mtime > built for s in sources()):
        log.warning("%s is older than its Java sources: not used until it is rebuilt (make install)", JAR)
        return None
    return JAR


def required() -> bool:
    """True where the jar must be built and registered (CI)."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def build(javac: str | None = None) -> Path:
    """Compile :func:`sources` into :data:`JAR` (against the installed pyspark's jars) and return its path."""
    javac = javac or shutil.which("javac")
    if javac is None:
        raise FileNotFoundError("javac is not on the PATH (Debian/Ubuntu: sudo apt-get install -y "
                                "openjdk-17-jdk-headless)")
    import pyspark

    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([javac, "-nowarn", "--release", "17", "-cp", classpath, "-d", out,
                        *map(str, sources())], check=True)
        tmp = JAR.with_suffix(".jar.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: toisio\r\n\r\n")
            for cls in sorted(Path(out).rglob("*.class")):
                jar.write(cls, cls.relative_to(out).as_posix())
        tmp.replace(JAR)
    return JAR


def register(spark: SparkSession, *, remote: bool = False) -> bool:
    """Register :data:`FUNCTIONS` in ``spark``'s session if the jar is built; True if they are registered.

    A classic session was started with the jar in ``spark.jars`` (:func:`pseudonymise.spark_session.get_spark`
    puts it there); a remote Spark Connect session gets it as a session artifact first.
    """
    jar = built_jar()
    if jar is None:
        if required():
            raise JvmFunctionsMissing(f"{JAR} is not built ({REQUIRE_ENV} is set): run make install with a JDK")
        log.warning("the pipeline's Java functions are not built (no JDK when installing): identity codes and "
                    "dotted dates are checked by the slower Catalyst expressions")
        return False
    try:
        if remote:
            spark.addArtifacts(str(jar))
        for name, (cls, return_type) in FUNCTIONS.items():
            spark.udf.registerJavaFunction(name, cls, return_type)
    except Exception as exc:  # e.g. a session started before the jar was built: its classes are not loadable
        if required():
            raise JvmFunctionsMissing(f"the pipeline's Java functions could not be registered: {exc}") from exc
        log.warning("the pipeline's Java functions could not be registered (%s): identity codes and dotted "
                    "dates are checked by the slower Catalyst expressions", type(exc).__name__)
        return False
    return True


def available(spark: SparkSession) -> bool:
    """True if ``spark``'s session has the Java functions (registered by :func:`register`)."""
    return all(spark.catalog.functionExists(name) for name in FUNCTIONS)


def main(argv: list[str]) -> int:
    """``python -m pseudonymise.jvm_functions build``: build the jar where a JDK is installed, else say why not."""
    if argv != ["build"]:
        print("usage: python -m pseudonymise.jvm_functions build", file=sys.stderr)
        return 2
    if shutil.which("javac") is None:
        print("note: no javac (a JDK) on this machine: the pipeline's Java functions are not built and it checks "
              "identity codes with slower Spark expressions (Debian/Ubuntu: sudo apt-get install -y "
              "openjdk-17-jdk-headless)", file=sys.stderr)
        return 0
    print(f"built {build()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Building and registering the pipeline's Java functions, and what happens where they are not built."""

import logging
import os
import time

import pytest

from pseudonymise import jvm_functions as J


class FakeUdf:
    def __init__(self, fail: bool = False) -> None:
        self.registered: list[tuple[str, str, str]] = []
        self.fail = fail

    def registerJavaFunction(self, name, cls, return_type):  # noqa: N802 - Spark's name
        if self.fail:
            raise RuntimeError("ClassNotFoundException: fi.toisio.spark.HetuReason")
        self.registered.append((name, cls, return_type))


class FakeSpark:
    def __init__(self, fail: bool = False) -> None:
        self.udf = FakeUdf(fail)
        self.artifacts: list[str] = []

    def addArtifacts(self, path):  # noqa: N802 - Spark's name
        self.artifacts.append(path)


@pytest.fixture
def jar(tmp_path, monkeypatch):
    """A source tree with one source and, once ``build`` is faked, its jar."""
    src = tmp_path / "java"
    (src / "fi").mkdir(parents=True)
    (src / "fi" / "A.java").write_text("class A {}")
    monkeypatch.setattr(J, "SOURCE_DIR", src)
    monkeypatch.setattr(J, "JAR", src / "toisio-functions.jar")
    monkeypatch.delenv(J.REQUIRE_ENV, raising=False)
    return src / "toisio-functions.jar"


def test_without_the_jar_the_session_keeps_the_spark_expressions_and_says_so(jar, caplog):
    spark = FakeSpark()
    with caplog.at_level(logging.WARNING):
        assert J.register(spark) is False
    assert spark.udf.registered == []
    assert "not built" in caplog.text


def test_where_the_jar_is_required_its_absence_is_an_error(jar, monkeypatch):
    monkeypatch.setenv(J.REQUIRE_ENV, "1")
    with pytest.raises(J.JvmFunctionsMissing, match="not built"):
        J.register(FakeSpark())


def test_a_jar_older_than_its_sources_is_not_used(jar, caplog):
    jar.write_bytes(b"PK")
    old = time.time() - 100
    os.utime(jar, (old, old))
    assert J.built_jar() is None
    assert "older than its Java sources" in caplog.text
    os.utime(jar, None)
    assert J.built_jar() == jar


def test_every_function_is_registered_and_a_remote_session_gets_the_jar_first(jar):
    jar.write_bytes(b"PK")
    spark = FakeSpark()
    assert J.register(spark, remote=True) is True
    assert spark.artifacts == [str(jar)]
    assert [name for name, _, _ in spark.udf.registered] == list(J.FUNCTIONS)


def test_a_session_that_cannot_load_the_classes_falls_back_or_fails_where_required(jar, monkeypatch, caplog):
    jar.write_bytes(b"PK")
    with caplog.at_level(logging.WARNING):
        assert J.register(FakeSpark(fail=True)) is False
    assert "could not be registered (RuntimeError)" in caplog.text
    monkeypatch.setenv(J.REQUIRE_ENV, "1")
    with pytest.raises(J.JvmFunctionsMissing, match="ClassNotFoundException"):
        J.register(FakeSpark(fail=True))


def test_the_build_command_needs_a_jdk_and_says_how_to_get_one(jar, monkeypatch, capsys):
    monkeypatch.setattr(J.shutil, "which", lambda name: None)
    assert J.main(["build"]) == 0  # make goes on: the pipeline works without the jar
    assert "openjdk-17-jdk-headless" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="javac"):
        J.build()
    assert J.main([]) == 2
    assert not jar.exists()


def test_every_function_has_its_source_in_the_tree():
    names = {p.relative_to(J.SOURCE_DIR).as_posix() for p in J.sources()}
    assert {cls.replace(".", "/") + ".java" for cls, _ in J.FUNCTIONS.values()} <= names

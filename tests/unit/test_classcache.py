"""The driver JVM maps the environment's class archive only when one was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockpipe.config import Settings
from stockpipe.spark import classcache
from stockpipe.spark.session import spark_conf


@pytest.fixture
def archive(monkeypatch, tmp_path: Path) -> Path:
    path = tmp_path / "share" / "spark.jsa"
    monkeypatch.setattr(classcache, "archive_path", lambda: path)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", spark_ship_jars=True)


def test_without_an_archive_the_jvm_options_are_unchanged(archive, settings, monkeypatch):
    monkeypatch.setattr("stockpipe.spark.session.spark_jars", lambda _d: [])
    assert classcache.java_options() == ""
    conf = spark_conf(settings)
    assert "SharedArchiveFile" not in conf["spark.driver.extraJavaOptions"]
    assert "-XX:-DontCompileHugeMethods" in conf["spark.driver.extraJavaOptions"]


def test_an_archive_is_mapped_by_the_driver_only(archive, settings, monkeypatch):
    monkeypatch.setattr("stockpipe.spark.session.spark_jars", lambda _d: [])
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    conf = spark_conf(settings)
    assert f"-XX:SharedArchiveFile={archive}" in conf["spark.driver.extraJavaOptions"]
    assert "SharedArchiveFile" not in conf["spark.executor.extraJavaOptions"]
    # the training run itself must not map the archive it is writing
    bare = spark_conf(settings, class_archive=False)
    assert "SharedArchiveFile" not in bare["spark.driver.extraJavaOptions"]


def test_the_archive_belongs_to_this_environment():
    import sys

    assert classcache.archive_path().is_relative_to(Path(sys.prefix))

"""The driver JVM maps the class archive only when one was made; jars come from settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stockpipe.config import Settings
from stockpipe.errors import SetupError
from stockpipe.spark import jvm
from stockpipe.spark.session import spark_conf
from stockpipe.stack import install


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "share" / "spark.jsa"


@pytest.fixture
def settings(tmp_path: Path, archive: Path) -> Settings:
    return Settings(
        cache_dir=tmp_path / "cache", spark_ship_jars=True, spark_class_archive=str(archive)
    )


@pytest.fixture
def no_jars(monkeypatch) -> None:
    monkeypatch.setattr("stockpipe.spark.session.connector_jars", lambda _s: [])


def test_without_an_archive_the_jvm_options_are_unchanged(settings, no_jars):
    assert jvm.archive_options(settings) == ""
    conf = spark_conf(settings)
    assert "SharedArchiveFile" not in conf["spark.driver.extraJavaOptions"]
    assert "-XX:-DontCompileHugeMethods" in conf["spark.driver.extraJavaOptions"]


def test_an_archive_is_mapped_by_the_driver_only(archive, settings, no_jars):
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    conf = spark_conf(settings)
    assert f"-XX:SharedArchiveFile={archive}" in conf["spark.driver.extraJavaOptions"]
    assert "SharedArchiveFile" not in conf["spark.executor.extraJavaOptions"]
    # the training run itself must not map the archive it is writing
    bare = spark_conf(settings, class_archive=False)
    assert "SharedArchiveFile" not in bare["spark.driver.extraJavaOptions"]


def test_the_archive_belongs_to_this_environment(tmp_path):
    assert jvm.archive_path(Settings()).is_relative_to(Path(sys.prefix))
    assert (
        jvm.archive_path(Settings(spark_class_archive=str(tmp_path / "a.jsa"))).parent == tmp_path
    )


def test_the_jobs_look_for_jars_where_setup_puts_them(tmp_path):
    parts = [install.spark_jars_part(tmp_path), install.delta_jars_part(tmp_path)]
    assert jvm.jar_dirs(Settings(cache_dir=tmp_path)) == [p.home / "jars" for p in parts]


def test_connector_jars_come_from_the_configured_folders(tmp_path):
    folders = [tmp_path / "a", tmp_path / "b"]
    settings = Settings(spark_jars_dirs=",".join(map(str, folders)))
    with pytest.raises(SetupError, match="make setup"):
        jvm.connector_jars(settings)
    for i, folder in enumerate(folders):
        folder.mkdir()
        (folder / f"{i}.jar").write_bytes(b"")
    assert jvm.connector_jars(settings) == [folders[0] / "0.jar", folders[1] / "1.jar"]

"""Setup and settings without services: caching, tool checks, credentials."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stockpipe.config import load_settings
from stockpipe.errors import MissingToolError
from stockpipe.stack import install, versions
from stockpipe.stack.manager import ensure_credentials


def test_parts_are_keyed_by_version_in_the_cache(tmp_path):
    part = install.kafka_part(tmp_path)
    assert part.home == tmp_path / f"kafka-{versions.KAFKA}"
    assert not part.ready
    part.home.mkdir()
    (part.home / ".complete").write_text(versions.KAFKA)
    assert part.ready
    # a ready part is not fetched again (no Maven needed)
    assert install.fetch_kafka(tmp_path) == part


def test_missing_tool_names_the_tool_and_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MissingToolError) as err:
        install.require_tool("mvn")
    assert "'mvn'" in str(err.value) and "apt-get install -y maven" in str(err.value)


def test_pom_lists_every_dependency():
    pom = install._pom("x", [("org.a", "b", "1.0"), ("org.c", "d", "2.0")])
    assert "<artifactId>b</artifactId><version>1.0</version>" in pom
    assert "<groupId>org.c</groupId>" in pom


def test_spark_jars_version_matches_pyspark():
    import pyspark

    assert pyspark.__version__ == versions.SPARK
    hadoop = [p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*")]
    assert hadoop == [f"hadoop-client-api-{versions.HADOOP}.jar"]


@pytest.fixture
def clean_env(monkeypatch):
    """No STOCKPIPE_* variables (the integration stack fixture exports its own)."""
    for key in list(os.environ):
        if key.startswith("STOCKPIPE_") or key == "ALPHAVANTAGE_API_KEY":
            monkeypatch.delenv(key)


def test_credentials_are_generated_once_with_mode_0600(tmp_path, clean_env):
    env = tmp_path / ".env"
    assert ensure_credentials(env)
    first = env.read_text()
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o600
    assert not ensure_credentials(env)
    assert env.read_text() == first
    settings = load_settings(env_file=env)
    assert settings.s3_access_key.startswith("stockpipe-")
    assert len(settings.s3_secret_key.get_secret_value()) == 40
    assert "minio" + "admin" not in first  # never the well-known default user


def test_settings_hide_secrets_and_round_trip_through_env(tmp_path, monkeypatch, clean_env):
    env = tmp_path / ".env"
    env.write_text("STOCKPIPE_S3_SECRET_KEY=s3cr3t-value\nSTOCKPIPE_KAFKA_PORT=19092\n")
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "av-key")
    settings = load_settings(env_file=env)
    assert settings.kafka_port == 19092
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert "s3cr3t-value" not in repr(settings)
    assert settings.alphavantage_api_key.get_secret_value() == "av-key"
    exported = settings.to_env()
    assert exported["STOCKPIPE_S3_SECRET_KEY"] == "s3cr3t-value"
    for key, value in exported.items():
        monkeypatch.setenv(key, value)
    assert load_settings(env_file=tmp_path / "none") == settings

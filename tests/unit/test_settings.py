"""Settings are made of small typed parts, read once, and recreated in a child."""

from __future__ import annotations

import ast
import inspect

from pydantic import SecretStr

from stockpipe import config
from stockpipe.config import PARTS, Settings, SourceSettings, load_settings
from stockpipe.sources import get_source
from stockpipe.sources.base import Source


def test_every_setting_belongs_to_exactly_one_part():
    owners: dict[str, list[str]] = {}
    for part in PARTS:
        own = ast.parse(inspect.getsource(part)).body[0]
        for node in own.body:  # fields the part itself declares
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                owners.setdefault(node.target.id, []).append(part.__name__)
    assert {name: parts for name, parts in owners.items() if len(parts) > 1} == {}
    assert set(owners) == set(Settings.model_fields)
    assert all(issubclass(Settings, part) for part in PARTS)


def test_a_part_reads_its_own_variables_and_the_whole_reads_them_too(monkeypatch, tmp_path):
    monkeypatch.setenv("STOCKPIPE_TOPIC_BARS", "bars.eu")
    monkeypatch.setenv("FINNHUB_API_KEY", "fk")
    env_file = tmp_path / ".env"
    env_file.write_text("STOCKPIPE_LEASE_TTL_S=5\nSTOCKPIPE_SPARK_CORES=6\n")
    whole = load_settings(env_file)
    assert (whole.topic_bars, whole.lease_ttl_s, whole.spark_cores) == ("bars.eu", 5.0, 6)
    assert whole.finnhub_api_key == SecretStr("fk")
    assert config.KafkaSettings().topic_bars == "bars.eu"
    assert SourceSettings().finnhub_api_key.get_secret_value() == "fk"
    assert not hasattr(SourceSettings(), "topic_bars")  # a part holds only its own


def test_what_combines_parts_is_derived_on_the_whole():
    s = Settings(host="10.1.2.3", kafka_port=19092, kafka_nodes=2, minio_port=19000)
    assert s.bootstrap_servers == "10.1.2.3:19092,10.1.2.3:19102"
    assert s.s3_url == "http://10.1.2.3:19000"
    assert s.replication_factor == 2
    given = Settings(kafka_bootstrap="b:9", s3_endpoint="https://s3.example", topic_replication=1)
    assert (given.bootstrap_servers, given.s3_url, given.replication_factor) == (
        "b:9",
        "https://s3.example",
        1,
    )
    assert Settings(spark_cluster=True, host="h", spark_master_port=7).spark_master_url == (
        "spark://h:7"
    )


def test_a_child_gets_every_setting_but_the_stack_managers_keys(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"STOCKPIPE_{name.upper()}", raising=False)
    s = Settings(
        topic_ticks="t.x",
        s3_secret_key=SecretStr("job-secret"),
        s3_root_secret_key=SecretStr("root-secret"),
        postgres_admin_password=SecretStr("pg-root"),
        spark_cores=3,
    )
    env = config.child_environ(s)
    assert env["STOCKPIPE_TOPIC_TICKS"] == "t.x" and env["STOCKPIPE_SPARK_CORES"] == "3"
    assert env["STOCKPIPE_S3_SECRET_KEY"] == "job-secret"
    assert "root-secret" not in env.values() and "pg-root" not in env.values()
    for key, value in env.items():
        if key.startswith("STOCKPIPE_") and key not in config.STACK_ONLY_ENV_VARS:
            monkeypatch.setenv(key, value)
    again = Settings()
    assert again.topic_ticks == "t.x" and again.spark_cores == 3
    assert again.s3_secret_key.get_secret_value() == "job-secret"
    assert again.s3_root_secret_key.get_secret_value() == ""


def test_sources_ask_for_their_part_only():
    hints = inspect.signature(Source.__init__).parameters["settings"].annotation
    assert "SourceSettings" in str(hints)
    src = config.SourceSettings(yahoo_stream_url="ws://127.0.0.1:1/")
    assert get_source("synthetic", settings=src).settings is src

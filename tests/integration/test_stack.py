"""The local stack for real: Kafka, MinIO, Spark, and the stack manager."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pyarrow.dataset as ds
import pytest
import requests

from stockpipe.errors import PortInUseError
from stockpipe.kafka import ConfirmedProducer, ensure_topics, read_all
from stockpipe.lake import filesystem
from stockpipe.stack.manager import Stack, isolated_settings

pytestmark = pytest.mark.integration


def test_kafka_roundtrip_keeps_keys_values_and_per_key_order(settings):
    topic = "test.roundtrip"
    ensure_topics(settings, [topic], partitions=3)
    sent = [(f"SYM{i % 7}".encode(), json.dumps({"n": i}).encode()) for i in range(500)]
    with ConfirmedProducer(settings, topic) as producer:
        producer.send_many(sent)
    assert producer.report.sent == 500 and producer.report.failed == 0

    got = list(read_all(settings, topic))
    assert sorted((k, v) for _, _, k, v in got) == sorted(sent)
    by_key: dict[bytes, list[int]] = {}
    for _, _, key, value in sorted(got, key=lambda r: (r[0], r[1])):
        by_key.setdefault(key, []).append(json.loads(value)["n"])
    for key, ns in by_key.items():
        expected = [json.loads(v)["n"] for k, v in sent if k == key]
        assert ns == expected, f"order of key {key!r} changed"


def test_minio_put_list_get_delete_and_anonymous_refused(settings):
    fs = filesystem(settings)
    path = f"{settings.bucket}/tests/hello.txt"
    fs.pipe(path, b"hello lake")
    assert fs.cat(path) == b"hello lake"
    assert path in fs.ls(f"{settings.bucket}/tests")
    anon = requests.get(f"{settings.s3_url}/{settings.bucket}/tests/hello.txt", timeout=5)
    assert anon.status_code == 403
    anon_list = requests.get(f"{settings.s3_url}/{settings.bucket}?list-type=2", timeout=5)
    assert anon_list.status_code == 403
    fs.rm(path)
    assert not fs.exists(path)


def test_spark_reads_kafka_writes_parquet_to_s3a_read_back_with_pyarrow(settings, spark):
    topic = "test.spark"
    ensure_topics(settings, [topic], partitions=2)
    sent = {(f"k{i % 4}", json.dumps({"i": i, "p": 100 + i / 8})) for i in range(200)}
    with ConfirmedProducer(settings, topic) as producer:
        producer.send_many((k.encode(), v.encode()) for k, v in sent)

    df = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value")
    )
    df.write.mode("overwrite").parquet(f"s3a://{settings.bucket}/tests/spark_parquet")
    table = ds.dataset(
        f"{settings.bucket}/tests/spark_parquet", filesystem=filesystem(settings), format="parquet"
    ).to_table()
    assert {(r["key"], r["value"]) for r in table.to_pylist()} == sent
    assert table.num_rows == len(sent)


def test_stack_manager_up_twice_status_sigkill_restart_keeps_kafka_data(own_state_root):
    settings = isolated_settings(own_state_root / "own-stack")
    st = Stack(settings)
    try:
        st.up(log=lambda _m: None)
        pids = {s.name: s.pid for s in st.status()}
        assert all(s.state == "healthy" for s in st.status())

        st.up(log=lambda _m: None)  # no-op
        assert {s.name: s.pid for s in st.status()} == pids

        ensure_topics(settings, ["test.persist"], partitions=1)
        with ConfirmedProducer(settings, "test.persist") as p:
            p.send_many((b"k", f"v{i}".encode()) for i in range(50))

        os.kill(pids["kafka"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and st.service("kafka").pid() is not None:
            time.sleep(0.2)
        status = {s.name: s for s in st.status()}
        assert status["kafka"].state == "stopped"
        assert status["minio"].state == "healthy"

        st.up(log=lambda _m: None)
        status = {s.name: s for s in st.status()}
        assert status["kafka"].state == "healthy" and status["kafka"].pid != pids["kafka"]
        assert status["minio"].pid == pids["minio"]
        values = [v for _, _, _, v in read_all(settings, "test.persist")]
        assert values == [f"v{i}".encode() for i in range(50)]
    finally:
        stopped = set(st.down(log=lambda _m: None))
        assert stopped == {"kafka", "minio", "postgres", "spark-connect"}
    assert all(s.state == "stopped" for s in st.status())


def test_postgres_on_loopback_with_its_password_keeps_its_data_across_a_sigkill(own_state_root):
    import psutil
    from pydantic import SecretStr

    from stockpipe.stack.postgres_access import ensure_database
    from stockpipe.stack.services import PostgreSQL
    from stockpipe.warehouse.connection import connect_postgres, read_sql

    settings = isolated_settings(own_state_root / "pg")
    pg = PostgreSQL("postgres", settings)
    try:
        pg.start()
        pg.wait_healthy(60)
        assert ensure_database(settings) and not ensure_database(settings)
        _assert_plain_role(settings)
        conn = connect_postgres(settings)
        with conn.cursor() as cur:
            cur.execute("CREATE SCHEMA mine")  # it owns its database
            cur.execute("CREATE TABLE kept (n integer)")
            cur.execute("INSERT INTO kept VALUES (42)")
        conn.commit()
        conn.close()
        listening = {
            c.laddr for c in psutil.Process(pg.pid()).net_connections() if c.status == "LISTEN"
        }
        assert listening == {("127.0.0.1", settings.postgres_port)}  # no socket, no 0.0.0.0
        wrong = settings.model_copy(update={"postgres_password": SecretStr("wrong")})
        with pytest.raises(Exception, match="password authentication failed"):
            connect_postgres(wrong).close()

        os.kill(pg.pid(), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pg.pid() is not None:
            time.sleep(0.2)
        assert pg.pid() is None
        pg.start()
        pg.wait_healthy(60)  # crash recovery replays the WAL
        assert read_sql(settings, "SELECT n FROM kept")["n"].tolist() == [42]
    finally:
        pg.stop()
    assert pg.pid() is None


def _assert_plain_role(settings) -> None:
    """The export's role is no superuser and can make no role and no database."""
    from stockpipe.warehouse.connection import connect_postgres, read_sql

    rights = read_sql(
        settings,
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    assert rights.iloc[0].tolist() == [False, False, False]
    conn = connect_postgres(settings, autocommit=True)
    try:
        with (
            conn.cursor() as cur,
            pytest.raises(Exception, match="42501"),
        ):  # insufficient privilege
            cur.execute("CREATE ROLE intruder SUPERUSER")
        with conn.cursor() as cur, pytest.raises(Exception, match="42501"):
            cur.execute("CREATE DATABASE other")
    finally:
        conn.close()


def test_a_cluster_whose_only_superuser_is_the_export_role_is_adopted(own_state_root):
    """A data directory made before the split (initdb -U stockpipe): `up` adds the
    postgres superuser and takes the right away from the export's role."""
    from stockpipe.stack.postgres_access import ensure_database
    from stockpipe.stack.services import PostgreSQL, private_dir
    from stockpipe.warehouse.connection import read_sql

    settings = isolated_settings(own_state_root / "old-pg")
    pg = PostgreSQL("postgres", settings)
    private_dir(settings.state_dir)
    pg.dir.mkdir(mode=0o700)
    pg.data_dir.mkdir(mode=0o700)
    identity = pg._identity()
    if identity:
        os.chown(pg.dir, identity["user"], identity["group"])
        os.chown(pg.data_dir, identity["user"], identity["group"])
    pwfile = pg.dir / "pw"
    pwfile.write_text(settings.postgres_password.get_secret_value() + "\n")
    if identity:
        os.chown(pwfile, identity["user"], identity["group"])
    old_initdb = [
        pg._bin("initdb"), "-D", str(pg.data_dir), "-U", settings.postgres_user,
        f"--pwfile={pwfile}", "--auth=scram-sha-256", "--locale=C.UTF-8",
    ]  # fmt: skip
    subprocess.run(old_initdb, check=True, capture_output=True, **identity)
    try:
        pg.start()
        pg.wait_healthy(60)  # the export's role answers before the adoption
        assert ensure_database(settings)
        _assert_plain_role(settings)
        assert read_sql(settings, "SELECT current_database() AS db")["db"][0] == "stockpipe"
    finally:
        pg.stop()


def test_port_in_use_names_port_and_setting(tmp_path):
    settings = isolated_settings(tmp_path / "busy")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.minio_port))
        blocker.listen()
        st = Stack(settings)
        with pytest.raises(PortInUseError) as err:
            st.up(log=lambda _m: None)
        st.down(log=lambda _m: None)
    assert str(settings.minio_port) in str(err.value)
    assert "STOCKPIPE_MINIO_PORT" in str(err.value)


def test_kafka_storage_formats_with_a_cluster_id_that_begins_with_a_dash(tmp_path, monkeypatch):
    import uuid

    from stockpipe.stack import services

    # 0xF8 makes the first base64 character "-" (the case that broke a CI run)
    monkeypatch.setattr(services.uuid, "uuid4", lambda: uuid.UUID(bytes=b"\xf8" + b"\x01" * 15))
    kafka = services.Kafka("kafka", isolated_settings(tmp_path))
    kafka.dir.mkdir(parents=True)
    kafka.data_dir.mkdir()
    kafka.prepare()
    meta = (kafka.data_dir / "meta.properties").read_text()
    assert "cluster.id=-" in meta

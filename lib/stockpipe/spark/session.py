"""The Spark sessions of stockpipe: a Spark Connect client of the stack's warm server
for the jobs and notebooks, and a driver of its own for the streaming job.

A Connect session starts in a fraction of a second: the server (``stockpipe up``)
has loaded Spark, Delta and the connectors and compiled their code already. The
settings of a session (``spark_conf``) are the server's; its S3 keys come from the
environment of the JVM that uses them, never from a command line or a SparkConf.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from pyspark import SparkConf, SparkContext
from pyspark.sql import DataFrame, DataFrameReader, SparkSession

from stockpipe.config import LakeSettings, Settings
from stockpipe.errors import StackError
from stockpipe.spark.jvm import archive_options, connector_jars
from stockpipe.spark.tuning import Tuning


def spark_conf(
    settings: Settings,
    *,
    ship_jars: bool | None = None,
    class_archive: bool = True,
) -> dict[str, str]:
    """Every Spark setting stockpipe needs, as plain strings.

    ``ship_jars`` (default: the setting) passes the connector jars as
    ``spark.jars`` instead of a class path fixed at JVM launch. ``class_archive``
    lets the driver JVM map the class archive, if made (``spark_class_archive``).
    The one secret among them, the RPC secret, goes only to a 0600 properties file or
    a running JVM's SparkConf, never a command line; S3 keys are not among them.
    """
    tuning = Tuning.of(settings)
    jars = [str(p) for p in connector_jars(settings)]
    driver_jvm = tuning.jvm_options()
    if settings.spark_ship_jars if ship_jars is None else ship_jars:
        # executors lack the cache (Spark serves the jars), or the JVM runs already
        classpath = {"spark.jars": ",".join(jars)}
    else:  # same paths on every node (this machine, or the project image)
        cp = os.pathsep.join(jars)
        classpath = {"spark.driver.extraClassPath": cp, "spark.executor.extraClassPath": cp}
    s3 = "spark.hadoop.fs.s3a."
    return {
        **classpath,
        "spark.driver.extraJavaOptions": " ".join(
            [*driver_jvm, archive_options(settings)] if class_archive else driver_jvm
        ).strip(),
        "spark.executor.extraJavaOptions": " ".join(tuning.jvm_options()),
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.driver.host": settings.spark_driver_host or settings.host,
        "spark.driver.bindAddress": settings.spark_driver_bind or settings.host,
        "spark.ui.enabled": "false",
        # every zone of the lake is a Delta table
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # every table Spark creates records its row changes: the warehouse export
        # reads only what changed (stockpipe.changefeed)
        "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "true",
        **tuning.session_conf(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.compression.codec": "zstd",
        # readable as timestamp[us, UTC] by pyarrow/pandas (INT96 would lose the zone)
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # "1d" would be inferred as a double: partition values stay strings
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.log.level": "WARN",
        f"{s3}endpoint": settings.s3_url,
        f"{s3}endpoint.region": settings.s3_region,
        # the keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of each JVM (s3_env)
        f"{s3}aws.credentials.provider": (
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
        ),
        **rpc_auth(settings),
        f"{s3}path.style.access": "true",
        f"{s3}connection.ssl.enabled": str(settings.s3_url.startswith("https")).lower(),
        f"{s3}change.detection.mode": "none",
        f"{s3}fast.upload": "true",
        f"{s3}connection.establish.timeout": "15s",
        f"{s3}connection.timeout": "60s",
        f"{s3}attempts.maximum": "5",
        f"{s3}retry.limit": "5",
        f"{s3}directory.marker.retention": "keep",
        f"{s3}analytics.accelerator.enabled": "false",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "true",
    }


def s3_env(settings: LakeSettings) -> dict[str, str]:
    """The lake's keys as the environment of a JVM that reads it (none set: none given)."""
    if not settings.s3_access_key:
        return {}
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
    }


def _s3_keys_conf(settings: LakeSettings) -> dict[str, str]:
    s3 = "spark.hadoop.fs.s3a."
    return {
        f"{s3}access.key": settings.s3_access_key,
        f"{s3}secret.key": settings.s3_secret_key.get_secret_value(),
        f"{s3}aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }


def rpc_auth(settings: Settings) -> dict[str, str]:
    """Spark's RPC authentication when a secret is set (Spark hands it to executors)."""
    secret = settings.spark_auth_secret.get_secret_value()
    if not secret:
        return {}
    return {"spark.authenticate": "true", "spark.authenticate.secret": secret}


#: How a Connect client retries a server that does not answer: about 15 s in all
CONNECT_RETRIES = {"max_retries": 5, "initial_backoff": 250, "max_backoff": 5000}


def get_spark(settings: Settings, app_name: str = "stockpipe") -> SparkSession:
    """A session of its own on the Spark Connect server (``spark_remote_url``).

    Its temp views and settings are its own; ``stop()`` releases what it holds on the
    server. A StackError naming ``stockpipe up`` when the server does not answer.
    """
    from pyspark.sql.connect.client.retries import DefaultPolicy

    url = settings.spark_remote_url
    _require_server(url)
    spark = SparkSession.builder.remote(url).create()
    # a server gone for longer is gone with the session's state: fail the job (and let
    # a rerun finish it) instead of the client's ten minutes of retries
    spark.client.set_retry_policies([DefaultPolicy(**CONNECT_RETRIES)])  # type: ignore[attr-defined]
    spark.addTag(app_name)
    return spark


def _require_server(url: str) -> None:
    parsed = urlparse(url.replace("sc://", "http://", 1))
    try:
        socket.create_connection((parsed.hostname, parsed.port or 15002), timeout=5).close()
    except OSError as exc:
        raise StackError(
            f"the Spark Connect server at {url} does not answer ({exc.strerror or exc}): "
            "start the stack with `stockpipe up` (or `make up`), or set STOCKPIPE_SPARK_REMOTE"
        ) from exc


@contextmanager
def classic_api() -> Iterator[None]:
    """PySpark's classic API for the block, in a process that also holds a Connect session.

    PySpark picks the API of every ``functions``/``Column`` call by an environment
    variable that a Connect session sets; a driver of this process needs the classic
    one (and a child process must not inherit the variable).
    """
    saved = os.environ.pop(_CONNECT_MODE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[_CONNECT_MODE] = saved


_CONNECT_MODE = "SPARK_CONNECT_MODE_ENABLED"


def driver_session(settings: Settings, app_name: str = "stockpipe", **extra: str) -> SparkSession:
    """A Spark driver in this process (reused if running), for the streaming job.

    Its queries live and die with this process: nothing keeps running on a server
    after the job is killed (docs/architecture.md, "Where Spark runs"). Use it inside
    :func:`classic_api` where the process may hold a Connect session too.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", settings.host)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.update(s3_env(settings))  # the JVM inherits them; never a --conf
    # a JVM started earlier in this process (a plain session) cannot take a new
    # class path any more: add the jars at run time instead
    jvm_running = SparkContext._gateway is not None
    conf = {
        "spark.app.name": app_name,
        "spark.master": settings.spark_master_url,
        **spark_conf(settings, ship_jars=settings.spark_ship_jars or jvm_running),
        **extra,
    }
    if jvm_running:
        # that JVM's environment was fixed before the keys were in ours: they go to its
        # SparkConf through the gateway (no command line is involved any more)
        conf.update(_s3_keys_conf(settings))
    # PySpark launches a JVM with every setting as a spark-submit argument, and a
    # driver of a cluster needs the secret in its SparkConf (Spark's own variable,
    # _SPARK_AUTH_SECRET, is not enough): it goes in through the gateway, after launch
    secret = conf.pop("spark.authenticate.secret", None)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    if secret:
        builder = builder.config("spark.authenticate.secret", secret)
    if not jvm_running:
        # PySpark's first call into a new JVM imports pyspark.testing, and with
        # it pandas: done here while the JVM starts, not after
        threading.Thread(target=_import_pyspark_testing, daemon=True).start()
    with classic_api():
        if not jvm_running:
            SparkContext._ensure_initialized(
                conf=SparkConf(loadDefaults=False).setAll(conf.items())
            )
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session: no SparkContext on this side, the server schedules."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int | None:
    """Task slots of the session's cluster; None on Spark Connect, which does not say."""
    return None if _is_connect(spark) else spark.sparkContext.defaultParallelism


@contextmanager
def scheduler_pool(spark: SparkSession, pool: str) -> Iterator[None]:
    """Spark jobs this thread starts run in ``pool`` (``tuning.POOLS``); the thread's own
    pool comes back after. A no-op on Spark Connect, whose server does the scheduling."""
    if _is_connect(spark):
        yield
        return
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.scheduler.pool")
    sc.setLocalProperty("spark.scheduler.pool", pool)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.scheduler.pool", before)  # type: ignore[arg-type]


def _import_pyspark_testing() -> None:
    import pyspark.testing.utils  # noqa: F401


def _kafka_options(settings: Settings, topic: str) -> dict[str, str]:
    return {
        "kafka.bootstrap.servers": settings.bootstrap_servers,
        "subscribe": topic,
        "includeHeaders": "false",
        **Tuning.of(settings).kafka_fetch(),
    }


def kafka_stream(
    spark: SparkSession,
    settings: Settings,
    topic: str,
    *,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
) -> DataFrame:
    """A topic as a stream of Kafka records (key, value, topic, partition, offset, timestamp)."""
    reader = (
        spark.readStream.format("kafka")
        .options(**_kafka_options(settings, topic))
        .option("startingOffsets", starting_offsets)
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def kafka_reader(spark: SparkSession, settings: Settings, topic: str) -> DataFrameReader:
    """A batch reader of a topic; give it ``startingOffsets`` and ``endingOffsets``."""
    return spark.read.format("kafka").options(**_kafka_options(settings, topic))


@contextmanager
def session_conf(spark: SparkSession, conf: dict[str, str]) -> Iterator[None]:
    """Spark SQL settings for the job's queries only; the session's own come back after."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)

"""One way to get a SparkSession: local, a master URL, or Spark Connect.

The Kafka and S3A connector jars come from the setup cache as local files, so a
session never reaches the network; the S3A settings point at the lake.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import SparkContext
from pyspark.sql import DataFrame, DataFrameReader, SparkSession

from stockpipe.config import Settings
from stockpipe.spark.jvm import archive_options, connector_jars
from stockpipe.spark.tuning import Tuning


def spark_conf(
    settings: Settings,
    *,
    ship_jars: bool | None = None,
    class_archive: bool = True,
    short_job: bool = False,
) -> dict[str, str]:
    """Every Spark setting stockpipe needs, as plain strings.

    ``ship_jars`` (default: the setting) passes the connector jars as
    ``spark.jars`` instead of a class path fixed at JVM launch. ``class_archive``
    lets the driver JVM map the class archive, if made (``spark_class_archive``).
    ``short_job``: a driver that plans a few small queries and exits (its JVM flags
    in :mod:`stockpipe.spark.tuning`, with the other performance knobs).
    """
    tuning = Tuning.of(settings)
    jars = [str(p) for p in connector_jars(settings)]
    driver_jvm = tuning.jvm_options(short_job=short_job)
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
        **_s3_credentials(settings),
        **_rpc_auth(settings),
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


def _s3_credentials(settings: Settings) -> dict[str, str]:
    """The S3 keys in SparkConf, or (``spark_s3_keys_from_env``) each process's environment."""
    s3 = "spark.hadoop.fs.s3a."
    if settings.spark_s3_keys_from_env:
        provider = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
        return {f"{s3}aws.credentials.provider": provider}
    return {
        f"{s3}access.key": settings.s3_access_key,
        f"{s3}secret.key": settings.s3_secret_key.get_secret_value(),
        f"{s3}aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }


def _rpc_auth(settings: Settings) -> dict[str, str]:
    """Spark's RPC authentication when a secret is set (Spark hands it to executors)."""
    secret = settings.spark_auth_secret.get_secret_value()
    if not secret:
        return {}
    return {"spark.authenticate": "true", "spark.authenticate.secret": secret}


def get_spark(
    settings: Settings, app_name: str = "stockpipe", *, short_job: bool = False, **extra: str
) -> SparkSession:
    """A SparkSession for ``settings`` (reuses the running one in this process);
    ``short_job`` as in :func:`spark_conf`."""
    os.environ.setdefault("SPARK_LOCAL_IP", settings.host)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if settings.spark_remote:
        builder = builder.remote(settings.spark_remote)
    else:
        builder = builder.master(settings.spark_master_url)
        # a JVM started earlier in this process (a plain session) cannot take a new
        # class path any more: add the jars at run time instead
        jvm_running = SparkContext._gateway is not None
        conf = spark_conf(
            settings, ship_jars=settings.spark_ship_jars or jvm_running, short_job=short_job
        )
        for key, value in {**conf, **extra}.items():
            builder = builder.config(key, value)
        if not jvm_running:
            # PySpark's first call into a new JVM imports pyspark.testing, and with
            # it pandas: done here while the JVM starts, not after
            threading.Thread(target=_import_pyspark_testing, daemon=True).start()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN") if not settings.spark_remote else None
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

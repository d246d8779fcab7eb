"""One typed, frozen settings object for the whole project, made of small parts.

Settings are read once from the environment (prefix ``STOCKPIPE_``) and from the
generated ``.env`` in the project root; everything else receives a ``Settings``
instance, or the part of it a function needs (``KafkaSettings``, ``LakeSettings``,
...). Overrides are made by copying (``settings.model_copy(update=...)``), never by
mutating. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout this package was installed (editable) from.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_env_file() -> Path:
    return Path(os.environ.get("STOCKPIPE_ENV_FILE", PROJECT_ROOT / ".env"))


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stockpipe"


class _Part(BaseSettings):
    """A group of settings, read from ``STOCKPIPE_*`` variables (and ``.env``)."""

    model_config = SettingsConfigDict(
        env_prefix="STOCKPIPE_",
        env_file=None,  # set per instance by load_settings()
        extra="ignore",
        frozen=True,
    )


class StackSettings(_Part):
    """The local services `stockpipe up` runs: where they keep state, their ports, sizes
    and the keys only the stack manager holds."""

    state_dir: Path = PROJECT_ROOT / ".state"
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    #: The address every local service listens on (loopback)
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    kafka_nodes: int = 1  # 3: a KRaft cluster of three broker+controller nodes
    minio_port: int = 9000
    minio_console_port: int = 9001
    #: The local stack's PostgreSQL (the warehouse); not 5432, which a system cluster takes
    postgres_port: int = 5433
    #: MinIO's root keys, for the stack manager only (it creates the buckets and the job
    #: user whose keys are the lake's); never passed to jobs, notebooks or DAGs
    s3_root_access_key: str = ""
    s3_root_secret_key: SecretStr = SecretStr("")
    #: The local server's superuser (``postgres``) password, for the stack manager only:
    #: it makes the export's role, which is no superuser
    postgres_admin_password: SecretStr = SecretStr("")
    # The local standalone cluster (`stockpipe spark-cluster up`): spark_master is then
    # spark://<host>:<spark_master_port>
    spark_cluster: bool = False  # true: `stockpipe up` also starts master + workers
    spark_master_port: int = 7077
    spark_master_ui_port: int = 8090
    spark_workers: int = 2
    spark_worker_cores: int = 1
    spark_worker_memory: str = "2g"
    #: The stack's Spark Connect server (sc://<host>:<port>), where the jobs run
    spark_connect_port: int = 15002
    spark_connect_bind: str = ""  # the address it listens on; empty: host (a container: 0.0.0.0)
    #: Cores the server takes of a standalone cluster (the streaming job's driver needs
    #: the rest); 0: half of the cluster's task slots, at least one
    spark_connect_cores: int = 0
    airflow_port: int = 8080
    lab_port: int = 8888

    @property
    def kafka_broker_ports(self) -> list[int]:
        return [self.kafka_port + 10 * i for i in range(self.kafka_nodes)]

    @property
    def kafka_controller_ports(self) -> list[int]:
        return [self.kafka_controller_port + 10 * i for i in range(self.kafka_nodes)]


class KafkaSettings(_Part):
    """The brokers (when not the local stack's) and the topics."""

    kafka_bootstrap: str = ""  # empty: the local stack's broker
    topic_bars: str = "stock.bars"
    topic_ticks: str = "stock.ticks"
    topic_partitions: int = 3
    topic_replication: int = 0  # 0: min(3, kafka_nodes)
    #: Producers and the streaming job create a missing topic (partitions and
    #: replication above); false: they fail at once naming the command that creates it
    create_topics: bool = True


class LakeSettings(_Part):
    """The object store, the lake's bucket and the tables' writer leases."""

    s3_endpoint: str = ""  # empty: the local stack's MinIO
    s3_region: str = "us-east-1"
    #: The job user's keys (least privilege: objects of the lake's buckets only)
    s3_access_key: str = ""
    s3_secret_key: SecretStr = SecretStr("")
    bucket: str = "stock-lake"
    #: One writer per table: a job waits this long for another job's lease of a
    #: table it writes, then fails naming the holder
    lease_wait_s: float = 600.0
    #: A lease not renewed for this long (a crashed job) is free again
    lease_ttl_s: float = 60.0

    @property
    def lake_root(self) -> str:
        """The lake as seen by pyarrow/s3fs (no scheme)."""
        return self.bucket

    def s3a(self, *parts: str) -> str:
        """The lake as seen by Spark's S3A connector."""
        return "s3a://" + "/".join([self.bucket, *(p.strip("/") for p in parts if p)])


class WarehouseSettings(_Part):
    """Where `stockpipe export` loads processed data: PostgreSQL or Snowflake."""

    #: "postgresql" (the local stack's, or postgres_url) or "snowflake" (snowflake_*)
    warehouse: str = "postgresql"
    #: Schema of the warehouse tables (PostgreSQL; Snowflake uses snowflake_schema)
    warehouse_schema: str = "stockpipe"
    #: A PostgreSQL URL without the password (postgresql://user@host:port/db); empty:
    #: the local stack's server
    postgres_url: str = ""
    postgres_user: str = "stockpipe"
    postgres_password: SecretStr = SecretStr("")
    postgres_db: str = "stockpipe"
    snowflake_account: str = ""
    snowflake_user: str = ""
    snowflake_warehouse: str = ""
    snowflake_database: str = ""
    snowflake_schema: str = "STOCKPIPE"
    snowflake_role: str = ""
    #: Key-pair authentication (preferred): the PEM private key, or a path to it
    snowflake_private_key: SecretStr | None = None
    snowflake_private_key_path: str = ""
    snowflake_private_key_passphrase: SecretStr | None = None
    snowflake_password: SecretStr | None = None


class SparkSettings(_Part):
    """Where the Spark jobs run, how large they are, and what they load."""

    spark_master: str = "local[*]"
    #: The Spark Connect server the jobs and notebooks use (sc://host:port); empty: the
    #: local stack's. spark_master is where that server (and the streaming job) runs tasks
    spark_remote: str = ""
    #: Heap of the Spark Connect server's driver (bounds what all jobs hold at once in
    #: local mode) and of the streaming job's own driver
    spark_driver_memory: str = "2g"
    spark_executor_memory: str = "1g"
    #: Task slots the jobs are tuned for (stockpipe.spark.tuning); 0: from spark_master
    #: (local[N], the local cluster's workers x cores), else this machine's CPUs
    spark_cores: int = 0
    spark_shuffle_partitions: int = 0  # 0: two per task slot
    #: False: executors load the connector jars from the cache paths (same machine,
    #: or the project image); True: Spark ships them (executors without the cache)
    spark_ship_jars: bool = False
    #: The driver's address as executors reach it (a container's hostname); empty: host
    spark_driver_host: str = ""
    spark_driver_bind: str = ""  # the address the driver listens on; empty: host
    #: RPC authentication of Spark's drivers, master, workers and executors: generated
    #: into .env by `stockpipe up` (the Compose deployment: into docker/.env); the
    #: master and workers read it from a 0600 file. Empty: no RPC authentication
    spark_auth_secret: SecretStr = SecretStr("")
    #: Folders of the connector jars (Kafka source, S3A, Delta Lake), comma-separated;
    #: empty: the ones `stockpipe setup` fetches into cache_dir at the pinned versions
    spark_jars_dirs: str = ""
    #: The driver JVM's class-data archive (`stockpipe setup` trains it); empty: this
    #: environment's, <sys.prefix>/share/stockpipe/spark-<version>.jsa
    spark_class_archive: str = ""


class OrchestrationSettings(_Part):
    """The Airflow DAGs' defaults: schedules, what they fetch, retries and timeouts."""

    batch_schedule: str = "@daily"  # cron or preset (UTC); "none": manual runs only
    batch_source: str = "samples"
    batch_symbols: str = "MSFT,GOOG"  # empty: every symbol the source offers
    batch_interval: str = "1d"
    stream_schedule: str = "@hourly"  # the available-now run of the streaming job
    stream_symbols: str = "AAPL,MSFT,GOOGL,AMZN"
    stream_source: str = "synthetic"  # the live DAG's default tick source: synthetic | yahoo
    maintenance_schedule: str = "@daily"  # OPTIMIZE + VACUUM of the lake's Delta tables
    task_retries: int = 2  # for tasks where a retry can help (network, stack restarts)
    #: Longest run of each notebook task (seconds): the task then fails and every process
    #: its notebook started (kernel, Spark) is stopped. A job's includes its lease wait.
    producer_timeout_s: float = 1800.0  # batch_producer: a source's download
    batch_timeout_s: float = 3600.0  # spark_batch
    stream_timeout_s: float = 3600.0  # spark_streaming, available-now (duration_s fits in it)
    live_timeout_s: float = 7200.0  # stock_stream_live's producer and job (duration_s fits)
    charts_timeout_s: float = 900.0
    export_timeout_s: float = 1800.0
    maintenance_timeout_s: float = 3600.0  # maintain_lake
    #: The new-records sensor fails when records are pending while a job holds the bars
    #: tables' leases and no commit has moved their Kafka offsets for this long (seconds)
    batch_stall_s: float = 1800.0


class SourceSettings(_Part):
    """The external market-data services: their keys (never notebook parameters) and URLs."""

    alphavantage_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ALPHAVANTAGE_API_KEY", "STOCKPIPE_ALPHAVANTAGE_API_KEY"),
    )
    #: The finnhub live feed's key (optional; stream producer source=finnhub)
    finnhub_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FINNHUB_API_KEY", "STOCKPIPE_FINNHUB_API_KEY"),
    )
    finnhub_stream_url: str = "wss://ws.finnhub.io"
    #: Yahoo Finance's streamer (yfinance's default); a local replay for tests and demos
    yahoo_stream_url: str = "wss://streamer.finance.yahoo.com/?version=2"


#: The parts, in the order their settings are documented.
PARTS: tuple[type[_Part], ...] = (
    StackSettings,
    KafkaSettings,
    LakeSettings,
    WarehouseSettings,
    SparkSettings,
    OrchestrationSettings,
    SourceSettings,
)


class Settings(
    SourceSettings,
    OrchestrationSettings,
    SparkSettings,
    WarehouseSettings,
    LakeSettings,
    KafkaSettings,
    StackSettings,
):
    """Every setting: the parts above, read together once.

    A function that needs one part says so in its signature (``KafkaSettings``, ...);
    a ``Settings`` is each of them. What combines parts (a service's address from the
    stack's host and port when no endpoint is set) is defined here.
    """

    @property
    def spark_master_url(self) -> str:
        """Where sessions go: the local cluster's master when it is on, else spark_master."""
        if self.spark_cluster and not self.spark_master.startswith("spark://"):
            return f"spark://{self.host}:{self.spark_master_port}"
        return self.spark_master

    @property
    def spark_remote_url(self) -> str:
        """The Spark Connect server: spark_remote, else the local stack's."""
        return self.spark_remote or f"sc://{self.host}:{self.spark_connect_port}"

    @property
    def replication_factor(self) -> int:
        return self.topic_replication or min(3, self.kafka_nodes)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or ",".join(f"{self.host}:{p}" for p in self.kafka_broker_ports)

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://{self.host}:{self.minio_port}"

    def to_env(self) -> dict[str, str]:
        """Environment variables that recreate these settings in a child process.

        The stack manager's keys are left out: a child (job, notebook, DAG) works as the
        MinIO job user and the export's PostgreSQL role.
        """
        env: dict[str, str] = {}
        for name, value in self:
            if value is None or name in _STACK_ONLY:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            key = _ENV_NAMES.get(name, f"STOCKPIPE_{name.upper()}")
            env[key] = str(value)
        return env


#: Settings read from a variable without the STOCKPIPE_ prefix (as their tools name them).
_ENV_NAMES = {"alphavantage_api_key": "ALPHAVANTAGE_API_KEY", "finnhub_api_key": "FINNHUB_API_KEY"}
#: Settings only the stack manager holds: never in a child's environment.
_STACK_ONLY = ("s3_root_access_key", "s3_root_secret_key", "postgres_admin_password")
STACK_ONLY_ENV_VARS = tuple(f"STOCKPIPE_{name.upper()}" for name in _STACK_ONLY)


def child_environ(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours and the settings, without the stack's keys."""
    env = {k: v for k, v in os.environ.items() if k not in STACK_ONLY_ENV_VARS}
    return {**env, **settings.to_env(), **(extra or {})}


def load_settings(env_file: Path | None = None, **overrides: object) -> Settings:
    """Read settings from the environment and the project's ``.env``."""
    path = env_file or _default_env_file()
    kwargs: dict[str, object] = {"_env_file": path if path.exists() else None}
    return Settings(**kwargs, **overrides)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()

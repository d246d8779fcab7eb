"""What the DAGs share: notebook tasks, the new-records sensor, lake assets, params.

The DAG files in ``dags/`` only wire these together. Every notebook task is the
papermill provider's operator, with three additions that every run needs:

* the executed notebook goes to ``s3://<bucket>/notebooks/<dag_id>/<run_id>/<task_id>.ipynb``,
  written through s3fs with the lake's endpoint and credentials (papermill's own
  S3 handler only knows AWS's defaults);
* parameters are checked for secrets before the kernel starts: credentials and API
  keys reach notebooks through the environment only, never as parameters, so they
  never land in an executed notebook;
* an error that a retry cannot fix (a bad source name, a missing setting) fails the
  task at once instead of burning its retries.

Heavy imports (papermill, Spark, Kafka clients) happen inside ``execute``/``poke``,
so the scheduler parses the DAG files quickly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.providers.papermill.operators.papermill import PapermillOperator
from airflow.sdk import Asset, BaseSensorOperator, CronDataIntervalTimetable, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from stockpipe.config import PROJECT_ROOT, Settings, get_settings
from stockpipe.errors import StackError
from stockpipe.notebooks import (
    KERNEL_NAME,
    REPORTS_DIR,
    SecretParameterError,
    check_no_secrets,
    notebook_path,
    notebook_url,
    register_lake_io,
)
from stockpipe.stack.airflow import LAKE_WRITER_POOL, STREAMING_POOL

__all__ = [
    "LAKE_WRITER_POOL",
    "MACROS",
    "REPORTS_DIR",
    "STREAMING_POOL",
    "NewRecordsSensor",
    "NotebookOperator",
    "batch_params",
    "check_stack",
    "default_args",
    "lake_asset",
    "maintain_lake",
    "maintenance_params",
    "schedule",
    "stack_ready",
    "stream_params",
    "warehouse_asset",
    "warehouse_assets",
]

DAGS_DIR = PROJECT_ROOT / "dags"
#: A fixed date in the past: with catchup off, only the latest interval is ever scheduled.
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)

#: Exception names (``ename`` of the failing cell) that no retry can fix.
PERMANENT_ERRORS = frozenset(
    {
        "UnknownNameError",
        "ConfigError",
        "SetupError",
        "MissingToolError",
        "PapermillMissingParameterException",
        "NameError",
        "SyntaxError",
        "TypeError",
    }
)
#: Exception names that mean "nothing to do": the task and what follows are skipped.
NOTHING_TO_DO = frozenset({"NothingNewError"})


# The notebook task -------------------------------------------------------------------------


class NotebookOperator(PapermillOperator):
    """A project notebook run by papermill; the executed copy is stored in the lake.

    Returns (and pushes to XCom) the URL of the executed notebook. A failing cell
    fails the task; its error and traceback are in the task log.
    """

    def __init__(self, *, notebook: str, **kwargs: Any) -> None:
        settings = get_settings()
        task_id = kwargs.setdefault("task_id", notebook)
        kwargs.setdefault("input_nb", notebook_path(notebook))
        kwargs.setdefault(
            "output_nb", notebook_url(settings, "{{ dag.dag_id }}", "{{ run_id }}", task_id)
        )
        kwargs.setdefault("kernel_name", KERNEL_NAME)
        kwargs.setdefault("log_output", True)
        super().__init__(**kwargs)
        self.notebook = notebook

    def execute(self, context: Any) -> str:
        from papermill.exceptions import PapermillExecutionError

        settings = get_settings()
        try:
            check_no_secrets(self.parameters, settings)
        except SecretParameterError as exc:
            raise AirflowFailException(str(exc)) from exc
        register_lake_io(settings)
        url = str(self.output_nb)  # rendered; papermill's operator wraps it in a NoteBook
        self.log.info("executed notebook: %s", url)
        try:
            super().execute(context)
        except PapermillExecutionError as exc:
            if exc.ename in NOTHING_TO_DO:
                raise AirflowSkipException(
                    f"{self.notebook}: {exc.evalue} (executed notebook: {url})"
                ) from None
            if exc.ename in PERMANENT_ERRORS:
                raise AirflowFailException(
                    f"{self.notebook} failed with an error a retry cannot fix "
                    f"(executed notebook: {url}):\n{exc}"
                ) from None  # the message holds the cell's traceback already
            raise
        return url


# Waiting for data --------------------------------------------------------------------------


class NewRecordsSensor(BaseSensorOperator):
    """Waits until the topic holds records the Spark batch job has not processed yet.

    Reschedule mode: the worker slot is free between pokes. Fails with a message
    that says what is missing once ``timeout`` passes.
    """

    template_fields = ("topic",)

    def __init__(self, *, topic: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 15)
        kwargs.setdefault("timeout", 600)
        super().__init__(**kwargs)
        self.topic = topic

    def _topic(self) -> str:
        return self.topic or get_settings().topic_bars

    def poke(self, context: Any) -> bool:
        from stockpipe.spark.batch import pending_records

        n = pending_records(get_settings(), self._topic())
        self.log.info("%d record(s) on %s not yet processed by the Spark job", n, self._topic())
        return n > 0

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"no new records on {self._topic()} beyond what the Spark batch job has "
                f"processed after waiting {self.timeout:.0f} s: the producer sent nothing "
                "new (an empty date window, or every symbol failed; see the producer's "
                "task log and executed notebook)"
            ) from exc


# Checking the stack ------------------------------------------------------------------------


def stack_ready(settings: Settings, topics: Iterable[str]) -> dict[str, Any]:
    """Fail with a fix when the bucket is missing, or a topic that is not to be created."""
    from stockpipe.kafka import end_offsets, require_topic
    from stockpipe.lake import filesystem

    try:
        bucket_ok = filesystem(settings).exists(settings.bucket)
    except Exception as exc:
        raise StackError(
            f"MinIO at {settings.s3_url} cannot be reached ({exc}); is the stack up? Run `make up`."
        ) from exc
    if not bucket_ok:
        raise StackError(f"bucket {settings.bucket!r} does not exist; run `make up`")
    offsets = {}
    for topic in topics:
        try:
            require_topic(settings, topic)
            offsets[topic] = sum(end_offsets(settings, topic).values())
        except StackError:
            raise
        except Exception as exc:
            raise StackError(
                f"Kafka at {settings.bootstrap_servers} cannot be reached ({exc}); "
                "is the stack up? Run `make up`."
            ) from exc
    return {"bucket": settings.bucket, "records_per_topic": offsets}


@task(task_id="check_stack", retry_exponential_backoff=2.0)
def check_stack(topics: list[str]) -> dict[str, Any]:
    """The bucket and ``topics`` exist (retried with backoff: the stack may be starting)."""
    return stack_ready(get_settings(), topics)


# Lake maintenance --------------------------------------------------------------------------


@task(task_id="maintain_lake", pool=LAKE_WRITER_POOL)
def maintain_lake() -> dict[str, Any]:
    """OPTIMIZE + VACUUM of every Delta table (``params``: ``tables``, ``retention_hours``).

    A table whose lease another job held past the wait fails the task after the
    others are done, so a retry does it; a table that failed otherwise fails it
    for good (a retry cannot fix it).
    """
    from airflow.sdk import get_current_context

    from stockpipe.maintenance import DEFAULT_RETENTION_HOURS, maintain

    params = get_current_context()["params"]
    tables = [t.strip() for t in str(params.get("tables") or "").split(",") if t.strip()]
    retention = int(params.get("retention_hours") or DEFAULT_RETENTION_HOURS)
    report = maintain(get_settings(), tables or None, retention_hours=retention)
    for line in report.lines():
        print(line)
    if report.failed:
        raise AirflowFailException(
            "lake maintenance failed: " + "; ".join(f"{t.table}: {t.error}" for t in report.failed)
        )
    if report.held:
        raise RuntimeError(
            "lake maintenance skipped tables another job was writing (retried later): "
            + "; ".join(f"{t.table}: {t.held}" for t in report.held)
        )
    return report.to_json()


def maintenance_params() -> dict[str, Param]:
    """Trigger-form parameters of the maintenance DAG (no retention under 7 days here)."""
    from stockpipe.maintenance import DEFAULT_RETENTION_HOURS

    return {
        "tables": Param(
            "", type="string", description="comma separated zone names; empty: every Delta table"
        ),
        "retention_hours": Param(
            DEFAULT_RETENTION_HOURS,
            type="integer",
            minimum=DEFAULT_RETENTION_HOURS,
            description="VACUUM keeps the files of every version this many hours back",
        ),
    }


# Assets, schedules, defaults, params -------------------------------------------------------


def lake_asset(settings: Settings, zone_name: str) -> Asset:
    """A lake zone as an Airflow asset (``s3://<bucket>/<prefix>``), named by bucket and
    zone: Airflow deactivates an asset whose name another DAG gives another URI."""
    from stockpipe.lake import ZONES

    where = f"{settings.bucket}/{ZONES[zone_name]}"
    return Asset(name=where, uri=f"s3://{where}")


def warehouse_asset(settings: Settings, table: str) -> Asset:
    """A warehouse table as an Airflow asset, so downstream DAGs can schedule on it:
    ``postgres://host:port/db/schema/table``, or ``snowflake://account/db/schema/table``."""
    from urllib.parse import urlsplit

    from stockpipe.warehouse.connection import postgres_url, resolve_target

    if resolve_target(settings) == "snowflake":
        where = (
            f"snowflake://{settings.snowflake_account}/{settings.snowflake_database}/"
            f"{settings.snowflake_schema}"
        )
    else:
        url = urlsplit(postgres_url(settings))
        where = (
            f"postgres://{url.hostname}:{url.port or 5432}{url.path}/{settings.warehouse_schema}"
        )
    return Asset(name=f"warehouse_{table}", uri=f"{where}/{table}")


def warehouse_assets(settings: Settings, tables: Iterable[str]) -> list[Asset]:
    return [warehouse_asset(settings, t) for t in tables]


def schedule(expression: str) -> CronDataIntervalTimetable | None:
    """A cron expression or preset as a data-interval schedule in UTC; "none": manual only.

    A data-interval schedule gives each run a real window (``@daily``: the previous
    day), which the batch producer fetches.
    """
    if expression.strip().lower() in ("", "none", "manual"):
        return None
    return CronDataIntervalTimetable(expression, timezone="UTC")


def default_args(settings: Settings) -> dict[str, Any]:
    """Retries with exponential backoff (30 s, 60 s, ... up to 10 min)."""
    return {
        "owner": "stockpipe",
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    }


def _day(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10]


def window_start(params: Mapping[str, Any], data_interval_start: Any) -> str:
    """First day to fetch: the ``start`` param, else the run's data interval start."""
    if params.get("full_history"):
        return ""
    return _day(params.get("start")) or _day(data_interval_start)


def window_end(params: Mapping[str, Any], data_interval_end: Any) -> str:
    """End of the window: the ``end`` param, else the day the run's data interval ends.

    The sources read ``end`` as exclusive (as yfinance does), so ``@daily``'s
    interval [D, D+1) fetches day D. Were ``end`` read as inclusive, the run would
    also ask for D+1, which has no bars yet when the run starts: same result.
    """
    if params.get("full_history"):
        return ""
    if params.get("end"):
        return _day(params["end"])
    return _day(data_interval_end)


#: Jinja helpers the DAGs register with ``user_defined_macros``.
MACROS = {"window_start": window_start, "window_end": window_end}


def batch_params(settings: Settings) -> dict[str, Param]:
    """Trigger-form parameters of the batch pipeline, defaults from settings."""
    return {
        "source": Param(
            settings.batch_source,
            type="string",
            description="samples | yahoo | alphavantage | csv | synthetic",
        ),
        "symbols": Param(
            settings.batch_symbols,
            type="string",
            description='comma separated, e.g. "MSFT,GOOG"; empty: all the source offers',
        ),
        "interval": Param(settings.batch_interval, type="string", enum=["1d", "1h", "5m", "1m"]),
        "start": Param(
            "", type="string", description="ISO date; empty: the run's data interval start"
        ),
        "end": Param(
            "",
            type="string",
            description="ISO date, passed to the producer as is; empty: the run's data "
            "interval end",
        ),
        "full_history": Param(
            False, type="boolean", description="fetch everything the source has (no window)"
        ),
        "path": Param("", type="string", description="CSV file, folder or glob (source=csv)"),
        "options": Param(
            "",
            type="string",
            description='more source options as JSON, e.g. {"dayfirst": true, "errors": "skip"}',
        ),
        "report_dir": Param(
            str(REPORTS_DIR), type="string", description="local folder for the HTML report"
        ),
    }


def stream_params(settings: Settings, *, live: bool) -> dict[str, Param]:
    """Trigger-form parameters of the streaming DAGs, defaults from settings."""
    params = {
        "window": Param("1 minute", type="string", description="sliding window length"),
        "slide": Param("15 seconds", type="string", description="window slide"),
        "watermark": Param("30 seconds", type="string", description="lateness allowed"),
        "trigger": Param("5 seconds", type="string", description="micro-batch interval"),
    }
    if not live:
        params["duration_s"] = Param(
            1800, type="integer", minimum=10, description="give up on the backlog after this long"
        )
        return params
    from stockpipe.schemas import TICK_SOURCES

    return {
        "source": Param(
            settings.stream_source,
            type="string",
            enum=list(TICK_SOURCES),
            description="synthetic ticks, or live trades (yahoo: STOCKPIPE_YAHOO_STREAM_URL)",
        ),
        "symbols": Param(settings.stream_symbols, type="string"),
        "rate": Param(1000, type="number", minimum=1, description="ticks per second"),
        "duration_s": Param(300, type="integer", minimum=10, description="how long ticks flow"),
        "seed": Param(42, type="integer"),
        **params,
        "archive_trigger": Param(
            "15 seconds",
            type="string",
            description="micro-batch interval of the raw and quarantine queries",
        ),
    }

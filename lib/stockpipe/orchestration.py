"""What the DAGs share: notebook tasks, the new-records sensor, lake assets, params.

The DAG files in ``dags/`` only wire these together. Every notebook task is the
papermill provider's operator, with three additions that every run needs:

* the executed notebook goes to ``s3://<bucket>/notebooks/<dag_id>/<run_id>/<task_id>.ipynb``,
  written through s3fs with the lake's endpoint and credentials (papermill's own
  S3 handler only knows AWS's defaults);
* parameters are checked for secrets before the kernel starts: credentials and API
  keys reach notebooks through the environment only, never as parameters, so they
  never land in an executed notebook;
* an error that a retry cannot fix (a bad source name, a missing setting: its class
  in ``stockpipe.errors`` says so) fails the task at once instead of burning its retries;
* a timeout of its own (``execution_timeout``, from a ``*_timeout_s`` setting): when
  the task ends, however it ends, every process its notebook started (the kernel,
  Spark's driver) is stopped, so a retry never runs beside a job left behind.

A retry that still finds a table's lease held (the killed job's, until it expires,
or a job started outside Airflow) waits for it up to ``lease_wait_s``, then fails
naming the holder: the leases, not the pools, keep one writer per table.

Heavy imports (papermill, Spark, Kafka clients) happen inside ``execute``/``poke``,
so the scheduler parses the DAG files quickly.
"""

from __future__ import annotations

import builtins
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, Literal

from airflow.providers.papermill.operators.papermill import PapermillOperator
from airflow.sdk import Asset, BaseSensorOperator, CronDataIntervalTimetable, Param, task
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
)

from stockpipe.config import PROJECT_ROOT, Settings, get_settings
from stockpipe.errors import LakeError, StackError, StockpipeError
from stockpipe.lease import Holder
from stockpipe.notebooks import (
    KERNEL_NAME,
    REPORTS_DIR,
    check_no_secrets,
    check_parameters,
    marked_run,
    notebook_path,
    notebook_url,
    register_lake_io,
    stop_processes,
)
from stockpipe.pools import LAKE_WRITER_POOL, STREAMING_POOL

__all__ = [
    "LAKE_WRITER_POOL",
    "MACROS",
    "REPORTS_DIR",
    "STREAMING_POOL",
    "BatchActivity",
    "NewRecordsSensor",
    "NotebookOperator",
    "batch_params",
    "check_stack",
    "default_args",
    "lake_asset",
    "maintain_lake",
    "maintenance_params",
    "outcome",
    "schedule",
    "stack_ready",
    "stream_params",
    "stuck_job",
    "task_timeout",
    "warehouse_asset",
    "warehouse_assets",
]

DAGS_DIR = PROJECT_ROOT / "dags"
#: A fixed date in the past: with catchup off, only the latest interval is ever scheduled.
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)

#: Python's errors of a notebook's own code (with their builtin subclasses, e.g.
#: IndentationError): a retry runs the same code, so it fails the same way.
CODE_ERRORS: tuple[type[Exception], ...] = (NameError, SyntaxError, TypeError)

Outcome = Literal["skip", "fail", "retry"]


def _subclasses(cls: type[StockpipeError]) -> Iterator[type[StockpipeError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@cache
def known_errors() -> dict[str, type[Exception]]:
    """Exception classes by name: papermill reports a failing cell's class by name only."""
    from papermill.exceptions import PapermillMissingParameterException

    python = [
        c for c in vars(builtins).values() if isinstance(c, type) and issubclass(c, CODE_ERRORS)
    ]
    ours = [StockpipeError, *_subclasses(StockpipeError)]
    return {c.__name__: c for c in (*python, PapermillMissingParameterException, *ours)}


def outcome(ename: str) -> Outcome:
    """What a task does when a cell raised the exception named ``ename``.

    A stockpipe error says itself (its ``skip`` and ``retryable``); a code error
    or a missing notebook parameter fails at once; anything else (a service's or
    a library's error) may pass, so it is retried.
    """
    cls = known_errors().get(ename)
    if cls is None:
        return "retry"
    if not issubclass(cls, StockpipeError):
        return "fail"
    return "skip" if cls.skip else "retry" if cls.retryable else "fail"


def ending(decision: Outcome, what: str, error: str, where: str = "") -> Exception | None:
    """What skips or fails the task at once as ``decision`` says; None: it is retried."""
    if decision == "skip":
        return AirflowSkipException(f"{what}: {error}{where}")
    if decision == "fail":
        return AirflowFailException(
            f"{what} failed with an error a retry cannot fix{where}:\n{error}"
        )
    return None


@contextmanager
def decided(what: str) -> Iterator[None]:
    """A stockpipe error raised in the block (in the task's own process, not in a
    notebook) ends the task as its class says: skipped, failed at once, or retried."""
    try:
        yield
    except StockpipeError as exc:
        name = type(exc).__name__
        ended = ending(outcome(name), what, f"{name}: {exc}")
        if ended is None:
            raise
        raise ended from exc


# The notebook task -------------------------------------------------------------------------


#: The stack check's own bound: its Kafka and MinIO calls time out well before.
CHECK_TIMEOUT = timedelta(minutes=5)
#: What a streaming task needs beside its ``duration_s``: Spark's start, the last
#: micro-batch and the queries' stop.
STREAM_OVERHEAD_S = 300


def timeout_env(field: str) -> str:
    """The environment variable of a ``*_timeout_s`` setting (as a user sets it)."""
    return f"STOCKPIPE_{field.upper()}"


def task_timeout(settings: Settings, field: str) -> timedelta:
    """The ``execution_timeout`` that the setting ``field`` (``*_timeout_s``) gives."""
    return timedelta(seconds=float(getattr(settings, field)))


class NotebookOperator(PapermillOperator):
    """A project notebook run by papermill; the executed copy is stored in the lake.

    Returns (and pushes to XCom) the URL of the executed notebook. A failing cell
    fails the task; its error and traceback are in the task log. ``timeout`` names
    the setting that bounds the task's run (its ``execution_timeout``).
    """

    def __init__(self, *, notebook: str, timeout: str, **kwargs: Any) -> None:
        settings = get_settings()
        task_id = kwargs.setdefault("task_id", notebook)
        kwargs.setdefault("input_nb", notebook_path(notebook))
        kwargs.setdefault(
            "output_nb", notebook_url(settings, "{{ dag.dag_id }}", "{{ run_id }}", task_id)
        )
        kwargs.setdefault("kernel_name", KERNEL_NAME)
        kwargs.setdefault("log_output", True)
        kwargs["execution_timeout"] = task_timeout(settings, timeout)
        super().__init__(**kwargs)
        self.notebook = notebook
        self.timeout_setting = timeout
        self._run: str | None = None  # the marker of the running notebook's processes

    def execute(self, context: Any) -> str:
        settings = get_settings()
        with decided(self.notebook):  # before the kernel starts: no retry of bad parameters
            check_no_secrets(self.parameters, settings)
            check_parameters(self.notebook, self.parameters)
        register_lake_io(settings)
        url = str(self.output_nb)  # rendered; papermill's operator wraps it in a NoteBook
        self.log.info("executed notebook: %s", url)
        with marked_run() as self._run, self._stop_first_on_timeout():
            try:
                return self._execute(context, url)
            except AirflowTaskTimeout:
                assert self.execution_timeout is not None
                raise AirflowTaskTimeout(
                    f"{self.notebook} did not finish within "
                    f"{self.execution_timeout.total_seconds():.0f} s "
                    f"({timeout_env(self.timeout_setting)}); its processes were stopped "
                    f"(executed notebook: {url})"
                ) from None
            finally:
                self._stop()

    def on_kill(self) -> None:
        """The task timed out or was killed: stop the notebook's processes now."""
        self._stop()

    @contextmanager
    def _stop_first_on_timeout(self) -> Iterator[None]:
        """On Airflow's timeout (SIGALRM), stop the processes before papermill's clean-up.

        That clean-up interrupts the kernel first: the job's Python would release its
        leases while its Spark driver may still commit. Killed first, the job keeps its
        leases until they expire, and by then nothing of it runs.
        """
        previous = signal.getsignal(signal.SIGALRM)
        if not callable(previous) or threading.current_thread() is not threading.main_thread():
            yield  # no timeout armed, or signals cannot be handled here
            return

        def stop_then_time_out(signum: int, frame: Any) -> None:
            self._stop()
            previous(signum, frame)

        signal.signal(signal.SIGALRM, stop_then_time_out)
        try:
            yield
        finally:
            signal.signal(signal.SIGALRM, previous)

    def _stop(self) -> None:
        if self._run is None:
            return
        stopped = stop_processes(self._run)
        if stopped:
            self.log.warning(
                "stopped what the notebook left running: %s (a job's table leases expire "
                "within STOCKPIPE_LEASE_TTL_S)",
                ", ".join(stopped),
            )

    def _execute(self, context: Any, url: str) -> str:
        from papermill.exceptions import PapermillExecutionError

        try:
            super().execute(context)
        except PapermillExecutionError as exc:
            decision = outcome(exc.ename)
            error = exc.evalue if decision == "skip" else str(exc)
            ended = ending(decision, self.notebook, error, f" (executed notebook: {url})")
            if ended is None:
                raise
            raise ended from None  # the message holds the cell's traceback already
        return url


# Waiting for data --------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchActivity:
    """What the batch job is doing on a topic, as its tables and leases show it."""

    topic: str
    #: Records on the topic beyond what the tables hold.
    pending: int
    #: (table, holder) of every lease of the job's tables that is held (not expired).
    holders: tuple[tuple[str, Holder], ...] = ()
    #: When a commit last moved a table's offsets in the topic (epoch s; None: never).
    progress_at: float | None = None


def stuck_job(activity: BatchActivity, now: float, stall_s: float) -> str | None:
    """Why the batch job is stuck, or None if it is not.

    Stuck: records are pending, a job holds a lease of the bars tables, and no commit
    has moved the tables' Kafka offsets (``userMetadata``) for ``stall_s``, counted
    from the later of the last such commit and the holder's taking of its lease (a
    job that just started has committed nothing yet). No holder: the next job starts
    and takes the records. A held lease that is renewed is no proof of progress: the
    renewal thread runs on while the job's work hangs.
    """
    if activity.pending <= 0 or not activity.holders:
        return None
    table, holder = max(activity.holders, key=lambda th: th[1].acquired_ts)
    since = max(activity.progress_at or 0.0, holder.acquired_ts)
    idle = now - since
    if idle < stall_s:
        return None
    last = (
        "no commit has ever moved them"
        if activity.progress_at is None
        else "the last commit that moved them was at "
        + datetime.fromtimestamp(activity.progress_at, UTC).isoformat(timespec="seconds")
    )
    return (
        f"{activity.pending} record(s) on {activity.topic} are waiting, but the batch job "
        f"is stuck: {holder.describe()} holds the lease of {table}, and the tables' Kafka "
        f"offsets have not moved for {idle:.0f} s (STOCKPIPE_BATCH_STALL_S = {stall_s:.0f}; "
        f"{last}). Stop that job (pid {holder.pid} on {holder.host}); its leases then "
        "expire and the next run processes the records."
    )


def offsets_moved_at(settings: Settings, table: str, topic: str) -> float | None:
    """When the newest commit that changed ``table``'s offsets in ``topic`` was made
    (epoch s), searching the recent history; None if none of it records offsets.

    Commits that carry the offsets unchanged (maintenance, a replay) are no progress.
    """
    from stockpipe.tables import open_table, parse_metadata, recent_commits

    dt = open_table(settings, table)
    if dt is None:
        return None
    newer: tuple[float, Any] | None = None
    for commit in recent_commits(dt):
        meta = parse_metadata(commit.get("userMetadata"))
        if meta is None:
            continue
        offsets = (meta.get("kafka", {}).get(topic) or {}).get("offsets")
        if newer is not None and offsets != newer[1]:
            return newer[0]
        newer = (commit["timestamp"] / 1000, offsets)
    return newer[0] if newer and newer[1] else None


def batch_activity(settings: Settings, topic: str) -> BatchActivity:
    """The batch job's activity on ``topic``; leases and history read only when needed."""
    from stockpipe.lake import ZONES
    from stockpipe.lease import Lease
    from stockpipe.spark.batch import TABLES, pending_records

    pending = pending_records(settings, topic)
    if pending <= 0:
        return BatchActivity(topic, pending)
    holders = []
    for table in TABLES:
        holder = Lease(settings, ZONES[table]).current_holder()
        if holder is not None and not holder.expired:
            holders.append((ZONES[table], holder))
    if not holders:
        return BatchActivity(topic, pending)
    moved = [t for table in TABLES if (t := offsets_moved_at(settings, table, topic))]
    return BatchActivity(topic, pending, tuple(holders), max(moved, default=None))


class NewRecordsSensor(BaseSensorOperator):
    """Waits until the topic holds records the Spark batch job has not processed yet.

    Reschedule mode: the worker slot is free between pokes. Fails with a message
    that says what is missing once ``timeout`` passes, and at once when records are
    pending but the job that holds the tables is stuck (:func:`stuck_job`).
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
        settings = get_settings()
        activity = batch_activity(settings, self._topic())
        self.log.info(
            "%d record(s) on %s not yet processed by the Spark job", activity.pending, self._topic()
        )
        for table, holder in activity.holders:
            self.log.info("%s is being written by %s", table, holder.describe())
        why = stuck_job(activity, time.time(), settings.batch_stall_s)
        if why:
            raise AirflowFailException(why)
        return activity.pending > 0

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


@task(task_id="check_stack", retry_exponential_backoff=2.0, execution_timeout=CHECK_TIMEOUT)
def check_stack(topics: list[str]) -> dict[str, Any]:
    """The bucket and ``topics`` exist (retried with backoff: the stack may be starting)."""
    with decided("check_stack"):
        return stack_ready(get_settings(), topics)


# Lake maintenance --------------------------------------------------------------------------


@task(task_id="maintain_lake", pool=LAKE_WRITER_POOL)
def maintain_lake() -> dict[str, Any]:
    """OPTIMIZE + VACUUM of every Delta table (``params``: ``tables``, ``retention_hours``).

    A table whose lease another job held past the wait fails the task after the
    others are done, so a retry does it; a table that failed otherwise fails it
    for good (a retry cannot fix it). The DAG gives it ``maintenance_timeout_s``;
    the work runs in the task's own process, so a timeout lands between two of its
    commits, and the lease is released only once the commit under way is done.
    """
    from airflow.sdk import get_current_context

    from stockpipe.maintenance import DEFAULT_RETENTION_HOURS, maintain

    params = get_current_context()["params"]
    tables = [t.strip() for t in str(params.get("tables") or "").split(",") if t.strip()]
    retention = int(params.get("retention_hours") or DEFAULT_RETENTION_HOURS)
    with decided("maintain_lake"):  # an unknown table name fails at once
        report = maintain(get_settings(), tables or None, retention_hours=retention)
    for line in report.lines():
        print(line)
    if report.failed:
        raise AirflowFailException(
            "lake maintenance failed: " + "; ".join(f"{t.table}: {t.error}" for t in report.failed)
        )
    if report.held:
        raise LakeError(
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


#: The live DAG's streaming job outlives its producer by this long (Spark's start).
LIVE_JOB_EXTRA_S = 60


def _longest_duration(settings: Settings, timeout: str, job_extra_s: int = 0) -> int:
    """The longest ``duration_s`` a streaming task's timeout leaves room for: its lease
    wait, Spark's start and stop, and what the job runs beyond the duration."""
    room = getattr(settings, timeout) - settings.lease_wait_s - STREAM_OVERHEAD_S - job_extra_s
    return max(10, int(room))


def stream_params(settings: Settings, *, live: bool) -> dict[str, Param]:
    """Trigger-form parameters of the streaming DAGs, defaults from settings; the
    longest ``duration_s`` is what the task's timeout leaves room for."""
    params = {
        "window": Param("1 minute", type="string", description="sliding window length"),
        "slide": Param("15 seconds", type="string", description="window slide"),
        "watermark": Param("30 seconds", type="string", description="lateness allowed"),
        "trigger": Param("5 seconds", type="string", description="micro-batch interval"),
        "replace_windows": Param(
            False,
            type="boolean",
            description="a new window definition: replace the windows table's rows "
            "(computed again from the topic's first tick)",
        ),
    }
    if not live:
        longest = _longest_duration(settings, "stream_timeout_s")
        params["duration_s"] = Param(
            min(1800, longest),
            type="integer",
            minimum=10,
            maximum=longest,
            description="give up on the backlog after this long",
        )
        return params
    longest = _longest_duration(settings, "live_timeout_s", job_extra_s=LIVE_JOB_EXTRA_S)
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
        "duration_s": Param(
            min(300, longest),
            type="integer",
            minimum=10,
            maximum=longest,
            description="how long ticks flow",
        ),
        "seed": Param(42, type="integer"),
        **params,
        "archive_trigger": Param(
            "15 seconds",
            type="string",
            description="micro-batch interval of the archive query (raw and quarantine)",
        ),
    }

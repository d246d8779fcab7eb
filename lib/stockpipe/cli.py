"""The `stockpipe` command: setup, the local stack, the jobs and the demo.

Every command ends a :class:`StockpipeError` with one red ``error: <message>``
line on stderr and exit code 1 (``_Typer.command``), never a traceback.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import typer

from stockpipe.config import load_settings
from stockpipe.errors import LeaseHeldError, NothingNewError, StockpipeError, UnknownNameError

ExitCodes = Mapping[type[Exception], int]


def _exit_on(errors: ExitCodes, command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` turning each error of ``errors`` into one ``error:`` line and its exit code."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own ends (an exit code, a usage error) pass as they are
        except tuple(errors) as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(next(c for t, c in errors.items() if isinstance(exc, t))) from None

    return run


class _Typer(typer.Typer):
    """A Typer app whose commands all report a StockpipeError as one clean line.

    ``exit_codes`` adds errors (or other exit codes) of one command; the first
    class that matches wins, StockpipeError (exit 1) comes last.
    """

    def command(  # type: ignore[override]
        self, *args: Any, exit_codes: ExitCodes | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        errors = {**(exit_codes or {}), StockpipeError: 1}
        return lambda command: register(_exit_on(errors, command))


app = _Typer(
    help="stockpipe: stock data through Kafka, Spark and an S3 lake.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _settings():
    from stockpipe.config import _default_env_file
    from stockpipe.stack.manager import ensure_credentials

    env_file = _default_env_file()
    if ensure_credentials(env_file):
        typer.echo(f"generated credentials (MinIO, PostgreSQL, Spark) into {env_file} (mode 0600)")
    return load_settings(env_file)


@app.command()
def setup(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Fetch and build the pinned Kafka, Spark connector and MinIO parts (cached)."""
    from stockpipe.spark.classcache import ensure_archive
    from stockpipe.stack.install import setup_all

    settings = load_settings()
    setup_all(settings.cache_dir, quiet_when_ready=not verbose)
    ensure_archive(settings)


@app.command()
def up() -> None:
    """Start Kafka, MinIO, PostgreSQL and the Spark Connect server on 127.0.0.1 (a no-op
    when already up; a dead service is started again)."""
    from stockpipe.stack.manager import Stack

    settings = _settings()
    t0 = time.perf_counter()
    Stack(settings).up(log=typer.echo)
    typer.echo(
        f"stack is up ({time.perf_counter() - t0:.1f} s): Kafka {settings.bootstrap_servers}, "
        f"MinIO {settings.s3_url} (console http://{settings.host}:{settings.minio_console_port}), "
        f"bucket {settings.bucket}, Spark Connect {settings.spark_remote_url}, "
        f"warehouse {_warehouse_url(settings)}"
    )


def _warehouse_url(settings) -> str:
    from stockpipe.warehouse.connection import postgres_url

    return postgres_url(settings) + " (password: STOCKPIPE_POSTGRES_PASSWORD in .env)"


@app.command()
def down() -> None:
    """Stop the services this checkout started."""
    from stockpipe.stack.manager import Stack

    stopped = Stack(_settings()).down(log=typer.echo)
    if not stopped:
        typer.echo("nothing was running")


@app.command()
def status() -> None:
    """Show each service, its port, pid and health."""
    from stockpipe.stack.manager import Stack

    rows = Stack(_settings()).status()
    typer.echo(f"{'service':<16} {'port':>6} {'pid':>8}  state")
    for r in rows:
        typer.echo(f"{r.name:<16} {r.port:>6} {r.pid or '-':>8}  {r.state}")
    if any(r.state != "healthy" for r in rows):
        raise typer.Exit(3)


# a service that is down raises its client's error: say which, not a traceback
@app.command(exit_codes={Exception: 1})
def init() -> None:
    """Create the bucket, the lake's tables (empty) and the topics on the configured
    services (e.g. a cluster)."""
    from stockpipe.kafka import ensure_topics
    from stockpipe.stack.minio_access import provision_bucket
    from stockpipe.tables import ensure_tables

    settings = load_settings()
    made = provision_bucket(settings)
    tables = ensure_tables(settings)
    topics = ensure_topics(settings)
    typer.echo(
        f"bucket {settings.bucket} {'created' if made else 'exists'}; tables "
        f"{', '.join(tables) or 'exist'}; topics "
        f"{', '.join(topics) or 'exist'} (replication {settings.replication_factor}) "
        f"on {settings.bootstrap_servers}"
    )


@app.command("spark-connect")
def spark_connect() -> None:
    """Run the Spark Connect server in the foreground (a container's command; the local
    stack starts it in the background with `stockpipe up`)."""
    from stockpipe.stack.spark_connect import serve

    settings = load_settings()
    serve(settings, settings.state_dir / "spark-connect")


@app.command("docker-env")
def docker_env() -> None:
    """Generate the Compose deployment's credentials into docker/.env (mode 0600)."""
    from stockpipe.deploy import DOCKER_ENV, write_docker_env

    added = write_docker_env()
    what = f"added {', '.join(added)}" if added else "every secret was already there"
    typer.echo(f"{DOCKER_ENV}: {what}")


@app.command()
def smoke(records: int = 20) -> None:
    """Produce a few records, read them with Spark, write a Delta table to MinIO, read back."""
    from stockpipe.smoke import run_smoke

    run_smoke(_settings(), records=records, log=typer.echo)


@app.command()
def env() -> None:
    """Print the settings as environment variables (secrets masked)."""
    for key, value in sorted(_settings().to_env().items()):
        if any(w in key for w in ("SECRET", "API_KEY", "PASSWORD", "PRIVATE_KEY", "PASSPHRASE")):
            value = "****"
        typer.echo(f"{key}={value}")


@app.command()
def demo(
    stream_seconds: float = typer.Option(150, help="how long ticks flow in the live session"),
    symbols: str = typer.Option("MSFT,GOOG", help="sample symbols for the batch pipeline"),
    stream_source: str = typer.Option(
        "synthetic", help="ticks of the live session: synthetic, or yahoo (its streamer URL)"
    ),
) -> None:
    """The batch DAG on the sample data, a live streaming session, the charts, a summary."""
    from stockpipe.demo import run_demo

    run_demo(
        _settings(),
        stream_seconds=stream_seconds,
        symbols=symbols,
        stream_source=stream_source,
        log=typer.echo,
    )


@app.command()
def batch(
    topic: str = typer.Option("", help="the bar topic (default: the setting)"),
    max_offsets_per_trigger: int = typer.Option(0, help="records per micro-batch (0: all)"),
    reset_topic: str = typer.Option(
        "", help="after a topic was recreated: read it from 'earliest' or from 'latest'"
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="make processed/ and quarantine/ again from raw/ alone"
    ),
) -> None:
    """Run the Spark batch job: what is new on the bar topic into the lake."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from stockpipe.spark.batch import BarsBatchJob, run_batch_job
    from stockpipe.spark.session import get_spark

    settings = _settings()
    if rebuild:
        job = BarsBatchJob(settings, get_spark(settings, "stockpipe-rebuild"), topic or None)
        report = job.rebuild()
    else:
        report = run_batch_job(
            settings,
            topic or None,
            max_offsets_per_trigger=max_offsets_per_trigger or None,
            reset_topic=reset_topic or None,
        )
    typer.echo(str(report))


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM stops a job as Ctrl-C does (its own clean stop), for the time of the job."""

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _given(**options: Any) -> dict[str, Any]:
    """The options given on the command line: the others keep the job's own defaults."""
    return {k: v for k, v in options.items() if v is not None}


@app.command()
def ingest(
    source: str = typer.Option("samples", help="samples | csv | synthetic | yahoo | alphavantage"),
    symbols: str | None = typer.Option(
        None, help="comma separated; default: every symbol the source offers"
    ),
    start: str | None = typer.Option(None, help="ISO date, inclusive"),
    end: str | None = typer.Option(None, help="ISO date, exclusive (as in yfinance)"),
    interval: str = typer.Option("1d", help="1d | 1h | 5m | 1m"),
    path: str | None = typer.Option(None, help="CSV file, folder or glob (source csv)"),
    options: str | None = typer.Option(
        None, help="more source options as JSON, e.g. '{\"dayfirst\": true}'"
    ),
    topic: str | None = typer.Option(None, help="the bar topic (default: the setting)"),
    allow_empty: bool = typer.Option(
        False, help="a window without bars (a closed market) is no failure"
    ),
) -> None:
    """Fetch historical bars from a source and send them to the bar topic (the producer)."""
    import logging

    from stockpipe.ingest import ingest as run_ingest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = run_ingest(
        _settings(),
        source,
        symbols=symbols,
        start=start,
        end=end,
        interval=interval,
        topic=topic,
        path=path,
        options=options,
    )
    typer.echo(report.summary().to_string(index=False))
    try:
        report.check(allow_empty=allow_empty, start=start or "", end=end or "")
    except NothingNewError as exc:
        typer.echo(f"nothing to do: {exc}")


@app.command(exit_codes={LeaseHeldError: 3})
def stream(
    ctx: typer.Context,
    mode: str | None = typer.Option(None, help="continuous, or available-now (the backlog)"),
    window: str | None = typer.Option(None),
    slide: str | None = typer.Option(None),
    watermark: str | None = typer.Option(None),
    trigger: str | None = typer.Option(None, help="micro-batch interval (continuous)"),
    archive_trigger: str | None = typer.Option(
        None, help="micro-batch interval of the raw and quarantine queries (continuous)"
    ),
    duration_s: float | None = typer.Option(
        None, "--duration", help="seconds; default: until Ctrl-C"
    ),
    name: str | None = typer.Option(None, help="query name (also the checkpoint folder)"),
    checkpoint: str | None = typer.Option(None, help="checkpoint root (default in the lake)"),
    topic: str | None = typer.Option(None),
    max_offsets_per_trigger: int | None = typer.Option(None),
    state_partitions: int | None = typer.Option(None),
    lease_wait_s: float | None = typer.Option(
        None,
        "--lease-wait",
        help="seconds to wait for another job's leases of the tables (default: fail at once)",
    ),
    reset_topic: str | None = typer.Option(
        None, help="after the tick topic was recreated: read it from 'earliest' or 'latest'"
    ),
    replace_windows: bool | None = typer.Option(
        None,
        "--replace-windows",
        help="replace the windows table's rows with this run's definition (from the topic's "
        "first tick)",
    ),
    progress: Literal["text", "json"] = typer.Option(
        "text", help="one line per micro-batch: readable, or a JSON object (for tools)"
    ),
) -> None:
    """Run the streaming job: ticks from Kafka to sliding-window aggregates in the lake.

    Defaults are the job's own (``StreamOptions``); another job holding the
    tables' leases ends it with exit code 3.
    """
    import json
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from stockpipe.config import get_settings
    from stockpipe.spark.streaming import StreamOptions, format_progress, run_stream

    given = {k: v for k, v in ctx.params.items() if k != "progress"}  # named as the fields
    try:
        opts = StreamOptions(**_given(**given))
    except UnknownNameError as exc:  # a bad --mode is a usage error, as any bad option
        hint = {"run mode": "--mode", "topic reset": "--reset-topic"}.get(exc.kind)
        raise typer.BadParameter(str(exc), param_hint=hint) from None

    def show(row: dict[str, Any]) -> None:
        text = json.dumps(row, default=str) if progress == "json" else format_progress(row)
        typer.echo(text)

    with _sigterm_stops():
        report = run_stream(get_settings(), opts, on_progress=show)
    typer.echo(str(report))


@app.command()
def ticks(
    symbols: str | None = typer.Option(None, help="comma separated (default: TickSpec's)"),
    rate: float = typer.Option(1000.0, help="ticks/s; 0: as fast as possible"),
    duration: float | None = typer.Option(None, help="seconds"),
    max_ticks: int | None = typer.Option(None),
    seed: int = typer.Option(0),
    out_of_order: float = typer.Option(0.0, help="share of ticks"),
    out_of_order_max_ms: int | None = typer.Option(None),
    late: float = typer.Option(0.0, help="share of ticks"),
    late_by_ms: int | None = typer.Option(None),
    start_ms: int | None = typer.Option(None, help="virtual clock start (epoch ms)"),
    step_ms: float | None = typer.Option(None),
    topic: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON line"),
) -> None:
    """Send synthetic ticks to the tick topic until a duration, a count or Ctrl-C/SIGTERM."""
    import json

    if duration is None and max_ticks is None:
        raise typer.BadParameter("give --duration or --max-ticks (Ctrl-C also stops)")
    from stockpipe.config import get_settings
    from stockpipe.ticks import TickSpec, run_producer

    listed = None if symbols is None else tuple(s.strip() for s in symbols.split(",") if s.strip())
    spec = TickSpec(
        seed=seed,
        rate=rate or 10_000.0,
        start_ms=start_ms,
        step_ms=step_ms,
        out_of_order_fraction=out_of_order,
        late_fraction=late,
        **_given(symbols=listed, out_of_order_max_ms=out_of_order_max_ms, late_by_ms=late_by_ms),
    )
    with _sigterm_stops():
        report = run_producer(
            get_settings(),
            spec,
            rate=rate or None,
            duration_s=duration,
            max_ticks=max_ticks,
            topic=topic,
            on_progress=None
            if as_json
            else lambda r: typer.echo(f"{r.generated} ticks, {r.rate:.0f}/s"),
        )
    typer.echo(json.dumps(report.summary(), default=str) if as_json else str(report))
    if report.failed:
        raise typer.Exit(1)


@app.command()
def export(
    tables: str = typer.Option(
        "", help="warehouse tables, comma separated (bars, tick_windows, quarantine_counts)"
    ),
    target: str = typer.Option("", help="postgresql or snowflake (default: STOCKPIPE_WAREHOUSE)"),
) -> None:
    """Export what changed in the lake's processed tables into the SQL warehouse."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from stockpipe.warehouse.export import export as run_export

    report = run_export(_settings(), tables or None, target=target or None)
    typer.echo(str(report))
    for table, rows in report.counts.items():
        typer.echo(f"  {table}: {rows:,} rows")


@app.command()
def airflow() -> None:
    """Airflow (API server + UI, scheduler, DAG processor, triggerer) on 127.0.0.1."""
    from stockpipe.stack.airflow import run_airflow

    raise typer.Exit(run_airflow(_settings(), log=typer.echo))


@app.command()
def dag(
    dag_id: str = typer.Argument(..., help="e.g. stock_batch_pipeline"),
    conf: str = typer.Option("{}", help='params as JSON, e.g. \'{"symbols": "MSFT"}\''),
) -> None:
    """Run one DAG run now, in-process (`airflow dags test`), with this checkout's Airflow."""
    import json

    from stockpipe.stack.airflow import dags_test

    settings = _settings()
    log_file = settings.state_dir / "airflow" / "dags-test" / f"{dag_id}.log"
    result = dags_test(settings, dag_id, json.loads(conf), log_file=log_file, on_line=typer.echo)
    for t in result.tasks:
        typer.echo(f"{t.task_id:<24} {t.state or '-':<16} {t.seconds or 0:7.1f} s")
    typer.echo(f"{dag_id} {result.run_id}: {result.state} (output also in {log_file})")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def lab() -> None:
    """JupyterLab on the notebooks with the project kernel, reaching the same stack."""
    from stockpipe.stack.lab import run_lab

    run_lab(_settings())


# The lake's Delta tables ----------------------------------------------------------------------

lake_app = _Typer(
    help="The lake's Delta tables: compaction, vacuum, history.", no_args_is_help=True
)
app.add_typer(lake_app, name="lake")

_TABLES_ARG = typer.Argument(
    None,
    help="zone names (processed_bars) or paths (processed/bars); none: every Delta table",
    show_default=False,
)


def _lake_logging() -> None:
    """Show that a command waits for a lease, and maintenance's warnings (on stderr)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("stockpipe.lease").setLevel(logging.INFO)


_LEASE_WAIT_HELP = (
    "seconds to wait for another job's lease of a table (default: STOCKPIPE_LEASE_WAIT_S)"
)


@lake_app.command("optimize")
def lake_optimize(
    tables: list[str] | None = _TABLES_ARG,
    lease_wait: float | None = typer.Option(None, help=_LEASE_WAIT_HELP, show_default=False),
) -> None:
    """Compact small files (processed_bars also Z-ordered by symbol), under each table's lease."""
    from stockpipe import maintenance as m

    _lake_logging()
    settings = _settings()
    for name in m.resolve_tables(tables):
        result = m.optimize(settings, name, wait_s=lease_wait)
        typer.echo(f"{name}: {result if result is not None else 'no table yet'}")


@lake_app.command("vacuum")
def lake_vacuum(
    tables: list[str] | None = _TABLES_ARG,
    retention_hours: int = typer.Option(
        168, help="keep files a version of this many hours back needs (at least 168)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be deleted"),
    force: bool = typer.Option(
        False, "--force", help="allow a retention under 7 days (only when nothing reads the lake)"
    ),
    lease_wait: float | None = typer.Option(None, help=_LEASE_WAIT_HELP, show_default=False),
) -> None:
    """Delete files that no version within the retention needs, under each table's lease."""
    from stockpipe import maintenance as m

    _lake_logging()
    settings = _settings()
    m.check_retention(retention_hours, force)
    for name in m.resolve_tables(tables):
        result = m.vacuum(settings, name, retention_hours, dry_run, force=force, wait_s=lease_wait)
        typer.echo(f"{name}: {result if result is not None else 'no table yet'}")
        if result is not None and dry_run:
            for path in result.files:
                typer.echo(f"  {path}")


@lake_app.command("maintain")
def lake_maintain(
    tables: list[str] | None = _TABLES_ARG,
    retention_hours: int = typer.Option(168, help="VACUUM retention (at least 168)"),
    lease_wait: float | None = typer.Option(None, help=_LEASE_WAIT_HELP, show_default=False),
) -> None:
    """OPTIMIZE then VACUUM every Delta table that exists (what the maintenance DAG runs)."""
    from stockpipe.maintenance import maintain

    _lake_logging()
    settings = _settings()
    report = maintain(settings, tables, retention_hours=retention_hours, wait_s=lease_wait)
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)


@lake_app.command("history")
def lake_history(
    table: str = typer.Argument(..., help="zone name (processed_bars) or path (processed/bars)"),
    limit: int = typer.Option(20, help="how many commits, newest first"),
) -> None:
    """A table's latest commits: version, time, operation, key metrics, Kafka progress."""
    from stockpipe.maintenance import describe_progress, key_metrics, resolve_tables
    from stockpipe.tables import history

    settings = _settings()
    [name] = resolve_tables([table])
    commits = history(settings, name, limit)
    if not commits:
        typer.secho(f"{name}: no table yet", err=True)
        raise typer.Exit(1)
    typer.echo(f"{'version':>7}  {'time':<19}  {'operation':<20} metrics")
    for c in commits:
        typer.echo(
            f"{c['version']:>7}  {c['timestamp']:<19}  {c['operation'] or '-':<20} "
            f"{key_metrics(c['metrics']) or '-'}"
        )
        if c.get("kafka"):
            typer.echo(f"{'':>7}  kafka {describe_progress(c['kafka'])}")


# The Compose deployment's engine ---------------------------------------------------------

engine_app = _Typer(
    help="A Docker engine and Compose for docker/compose.yaml (the machine's, or a private one).",
    no_args_is_help=True,
)
app.add_typer(engine_app, name="engine")


@engine_app.command("start")
def engine_start() -> None:
    """Use the machine's Docker engine, or start a private dockerd; Compose and a base image."""
    from stockpipe.stack.engine import build_compose, compose_binary, start_engine
    from stockpipe.stack.images import ensure_rootfs_image

    settings = _settings()
    host = start_engine(settings, log=typer.echo)
    build_compose(settings.cache_dir)
    base = ensure_rootfs_image(host, settings.cache_dir)
    typer.echo(f"DOCKER_HOST={host}")
    typer.echo(f"compose: {compose_binary(settings.cache_dir)}")
    typer.echo(f"root file system of the local build mode: {base}")


@engine_app.command("stop")
def engine_stop() -> None:
    """Stop the private dockerd (never the machine's own engine)."""
    from stockpipe.stack.engine import stop_engine

    stopped = stop_engine(_settings())
    typer.echo("stopped the private dockerd" if stopped else "no private dockerd was running")


# The Compose deployment ------------------------------------------------------------------

deploy_app = _Typer(
    help="docker/compose.yaml: build its images here (local mode), bring it up, remove it.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")

_LOCAL = typer.Option(
    True,
    "--local/--official",
    help="images built here from Debian and the caches, or the official images (a registry)",
)


def _deployment(local: bool):
    from stockpipe.deploy import Deployment, write_docker_env
    from stockpipe.stack.engine import build_compose, compose_binary, start_engine
    from stockpipe.stack.images import compose_image_env

    settings = _settings()
    host = start_engine(settings, log=typer.echo)
    build_compose(settings.cache_dir)
    write_docker_env()
    variables = compose_image_env() if local else {}
    return settings, Deployment(host, compose_binary(settings.cache_dir), variables=variables)


@deploy_app.command("build")
def deploy_build(local: bool = _LOCAL) -> None:
    """Build every image of the deployment (the local mode needs no image registry)."""
    settings, deployment = _deployment(local)
    if not local:
        deployment.run("build")
        return
    from stockpipe.stack.images import build_local_images

    times = build_local_images(deployment.host, settings.cache_dir, settings.state_dir / "deploy")
    typer.echo(f"built {len(times)} images in {sum(times.values()):.0f} s")


@deploy_app.command("up")
def deploy_up(local: bool = _LOCAL, timeout: int = typer.Option(1200, help="seconds")) -> None:
    """Start every service and wait until all of them are healthy."""
    _, deployment = _deployment(local)
    took = deployment.up(timeout)
    typer.echo(f"every service is healthy after {took:.0f} s")


@deploy_app.command("down")
def deploy_down(local: bool = _LOCAL) -> None:
    """Remove the deployment's containers, networks and volumes (its data too)."""
    _, deployment = _deployment(local)
    deployment.down()
    left = {kind: ids for kind, ids in deployment.leftovers().items() if ids}
    typer.echo(f"left behind: {left}" if left else "removed; nothing of it is left")


def main() -> None:  # pragma: no cover
    sys.exit(app(prog_name="stockpipe"))  # also as `python -m stockpipe.cli`


if __name__ == "__main__":  # pragma: no cover
    main()

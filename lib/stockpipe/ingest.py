"""Batch ingestion: fetch bars from a source and send them to Kafka, confirmed.

The notebook ``batch_producer.ipynb`` is a thin shell over :func:`ingest`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from tqdm import tqdm

from stockpipe.config import Settings
from stockpipe.errors import DeliveryError, NothingNewError, ParameterError, SourceError
from stockpipe.kafka import ConfirmedProducer, DeliveryReport
from stockpipe.schemas import bar_messages
from stockpipe.times import utc_window

log = logging.getLogger(__name__)

CHUNK = 50_000


def new_batch_id() -> str:
    """One id per producer run: sortable by time, unique."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def produce_bars(
    settings: Settings,
    bars: pd.DataFrame,
    topic: str | None = None,
    *,
    backend: str = "confluent",
    progress: bool = True,
    raise_on_failure: bool = False,
) -> DeliveryReport:
    """Send conformed bars keyed by symbol; return what Kafka confirmed.

    Every send is confirmed before this returns (flush); failures are counted
    with their reason in the report and raised only when asked.
    """
    topic = topic or settings.topic_bars
    producer = ConfirmedProducer(settings, topic, backend=backend, client_id="stockpipe-bars")
    chunks = [bars.iloc[i : i + CHUNK] for i in range(0, len(bars), CHUNK)]
    # Encode the next chunk in a thread while this one is sent: polars' JSON
    # writer releases the GIL, so encoding and sending overlap.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode") as pool,
        tqdm(
            total=len(bars), desc=f"sending to {topic}", unit=" bars", disable=not progress
        ) as bar,
    ):
        pending = pool.submit(bar_messages, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            messages = pending.result()
            pending = pool.submit(bar_messages, chunks[i + 1]) if i + 1 < len(chunks) else None
            producer.send_many(messages)
            bar.update(len(messages))
    return producer.close(raise_on_failure=raise_on_failure)


@dataclass
class IngestReport:
    """What one producer run fetched and what Kafka confirmed, per symbol."""

    batch_id: str
    source: str
    topic: str
    interval: str
    fetch_summary: pd.DataFrame
    delivery: DeliveryReport
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)
    #: nothing fetched only because the window holds no bars (a weekend, a holiday)
    window_empty: bool = False

    @property
    def fetched(self) -> int:
        return int(self.fetch_summary["bars"].sum()) if len(self.fetch_summary) else 0

    @property
    def sent(self) -> int:
        return self.delivery.sent

    @property
    def ok(self) -> bool:
        return self.delivery.failed == 0 and self.sent == self.fetched

    def summary(self) -> pd.DataFrame:
        """One row per symbol: fetched, sent (confirmed), date range, failure, note."""
        df = self.fetch_summary.copy()
        df["sent"] = [self.delivery.per_key.get(s, 0) for s in df["symbol"]]
        return df.loc[:, ["symbol", "bars", "sent", "first", "last", "error", "note"]].rename(
            columns={"bars": "fetched"}
        )

    def check(self, *, allow_empty: bool = False, start: str = "", end: str = "") -> None:
        """Raise what went wrong: records Kafka did not confirm, or no bar at all (a
        closed market's window is nothing to do when ``allow_empty``, else a failure)."""
        if self.delivery.failed:
            reasons = dict(self.delivery.failures)
            raise DeliveryError(
                self.delivery.failed, self.delivery.sent + self.delivery.failed, reasons
            )
        if self.fetched:
            return
        symbols = ",".join(self.fetch_summary["symbol"]) if len(self.fetch_summary) else ""
        if self.window_empty and allow_empty:
            raise NothingNewError(
                f"no {self.interval} bars for {symbols or 'any symbol'} in "
                f"[{start or 'the beginning'}, {end or 'now'}): the market was closed "
                "(a weekend or a holiday); nothing to process"
            )
        errors = "; ".join(self.fetch_summary["error"].dropna()) if len(self.fetch_summary) else ""
        raise SourceError(
            self.source,
            symbols or "every symbol",
            f"no bars were fetched ({errors or 'the source offers none'})",
        )

    def __str__(self) -> str:
        failed = self.fetch_summary["error"].notna().sum() if len(self.fetch_summary) else 0
        text = (
            f"batch {self.batch_id}: {self.fetched} bars fetched from {self.source}, "
            f"{self.sent} confirmed on {self.topic} in {self.seconds:.1f} s"
        )
        if failed:
            text += f"; {failed} symbol(s) failed"
        if self.delivery.failed:
            text += f"; {self.delivery.failed} deliveries failed: {dict(self.delivery.failures)}"
        return text


#: How a source's options are written, for the error that refuses them.
OPTIONS_EXAMPLE = 'a JSON object, e.g. {"dayfirst": true, "errors": "skip"}'


def parse_options(options: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """A source's options, from a mapping or JSON text (as a notebook parameter has them)."""
    if not options:
        return {}
    parsed: Any = options
    if isinstance(options, str):
        try:
            parsed = json.loads(options)
        except ValueError as exc:
            raise ParameterError("options", options, f"JSON ({exc})", use=OPTIONS_EXAMPLE) from None
    if not isinstance(parsed, Mapping):
        raise ParameterError("options", options, "a JSON object", use=OPTIONS_EXAMPLE)
    return dict(parsed)


def check_parameters(
    source: str = "samples",
    start: date | str | None = None,
    end: date | str | None = None,
    interval: str = "1d",
    options: Mapping[str, Any] | str | None = None,
    **_others: Any,
) -> dict[str, Any]:
    """Refuse what no run can use, before any work: an unknown source or interval, a
    date that is none, an end not after its start, options that are no JSON object.

    Takes the batch producer notebook's parameters (the others are ignored), so a
    DAG task checks them before the kernel starts; returns the parsed options.
    """
    from stockpipe.sources import source_key
    from stockpipe.sources.base import check_interval

    source_key(source)
    check_interval(interval)
    utc_window(start or None, end or None)
    return parse_options(options)


def ingest(
    settings: Settings,
    source: str = "samples",
    symbols: list[str] | str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    interval: str = "1d",
    topic: str | None = None,
    path: str | None = None,
    *,
    batch_id: str | None = None,
    backend: str = "confluent",
    progress: bool = True,
    options: Mapping[str, Any] | str | None = None,
    **source_options: Any,
) -> IngestReport:
    """Fetch bars for ``symbols`` from ``source`` and send them to Kafka.

    ``options`` are more of the source's options, as a mapping or JSON text (as a
    notebook parameter carries them), e.g. ``'{"dayfirst": true, "errors": "skip"}'``.
    """
    from stockpipe.sources import fetch_many, get_source

    t0 = time.perf_counter()
    options = {**check_parameters(source, start, end, interval, options), **source_options}
    batch_id = batch_id or new_batch_id()
    topic = topic or settings.topic_bars
    if path:
        options["path"] = path
    src = get_source(source, settings, **options)
    result = fetch_many(
        src,
        symbols,
        start=start,
        end=end,
        interval=interval,
        batch_id=batch_id,
        progress=progress,
    )
    delivery = produce_bars(settings, result.bars, topic, backend=backend, progress=progress)
    report = IngestReport(
        batch_id=batch_id,
        source=source,
        topic=topic,
        interval=interval,
        fetch_summary=result.summary(),
        delivery=delivery,
        seconds=time.perf_counter() - t0,
        window_empty=result.window_empty,
    )
    log.info("%s", report)
    return report

"""Live tick feeds behind one interface, looked up by name, and the producer that sends them.

A feed (``yahoo``: Yahoo Finance's streamer) turns a connection into
:class:`Trade` events, plus :class:`Rejected` ones for frames it could not read;
:func:`run_feed` sends both to ``stock.ticks`` through the idempotent
:class:`~stockpipe.kafka.ConfirmedProducer`:

* a trade is a tick of the contract (key = symbol): ``ts`` is the trade's event
  time, ``seq`` counts this producer's records from 0, ``producer_id`` names the
  run; ``bid``, ``ask``, ``bid_size``, ``ask_size`` and ``source`` ride along when
  known (the streaming job reads the contract's fields; raw/ keeps the value);
* a rejected frame is a record with ``feed_error`` and the frame as received, no
  key: the streaming job quarantines it with its reason, so nothing read is lost.

:func:`produce_ticks` is what the stream producer notebook calls: ``source``
``synthetic`` runs :func:`stockpipe.ticks.run_producer`, any other name a feed.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from stockpipe.config import Settings
from stockpipe.errors import UnknownNameError
from stockpipe.kafka import ConfirmedProducer, Delivered, DeliveryReport
from stockpipe.schemas import SCHEMA_VERSION, TICK_SOURCES

log = logging.getLogger(__name__)

#: Registry: feed name -> "module:Class" (imported when first asked for); with
#: ``synthetic`` (the generator, not a feed) these are schemas.TICK_SOURCES.
FEEDS: dict[str, str] = {"yahoo": "stockpipe.sources.yahoo_stream:YahooFeed"}


@dataclass(frozen=True)
class Trade:
    """One trade from a feed, in the tick contract's terms (ts in epoch ms, UTC)."""

    symbol: str
    ts: int
    price: float
    size: int
    bid: float | None = None
    ask: float | None = None
    bid_size: int | None = None
    ask_size: int | None = None


@dataclass(frozen=True)
class Rejected:
    """A frame the feed could not read, and why."""

    reason: str
    frame: str


@dataclass
class FeedStats:
    """What a feed received, and what it did not turn into ticks (with the reason)."""

    connections: int = 0
    drops: int = 0
    idle_timeouts: int = 0
    frames: int = 0
    rejected: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)


class TickFeed(ABC):
    """A live source of trades. Subclasses set ``name`` and write :meth:`events`."""

    name: ClassVar[str]

    def __init__(self, symbols: list[str] | tuple[str, ...]) -> None:
        self.symbols = tuple(dict.fromkeys(s.strip().upper() for s in symbols if s.strip()))
        if not self.symbols:
            raise ValueError(f"the {self.name} feed needs at least one symbol")
        self.stats = FeedStats()

    @abstractmethod
    def events(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Trades and rejected frames until ``stop`` is set; never raises for bad input.

        Must notice ``stop`` within about a second, also when nothing arrives.
        """


def get_feed(name: str, settings: Settings | None = None, **options: Any) -> TickFeed:
    """A live feed by name (``yahoo``); ``options`` go to its constructor (``symbols=``)."""
    key = str(name).strip().lower()
    if key not in FEEDS:
        raise UnknownNameError("live feed", name, list(FEEDS))
    module_name, _, cls_name = FEEDS[key].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(settings, **options)


@dataclass
class FeedRunReport(Delivered):
    """What one live producer run sent (as Kafka confirmed it) and what the feed dropped."""

    producer_id: str
    topic: str
    source: str
    delivery: DeliveryReport
    stats: FeedStats
    ticks: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    seconds: float = 0.0
    stopped_by: str = ""

    def summary(self) -> dict[str, object]:
        def when(ms: int | None) -> pd.Timestamp | None:
            return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC")

        return {
            "producer_id": self.producer_id,
            "topic": self.topic,
            "source": self.source,
            "ticks": self.ticks,
            "rejected_frames": self.stats.rejected,
            "sent": self.sent,
            "failed": self.failed,
            "frames": self.stats.frames,
            "connections": self.stats.connections,
            "reconnects": self.stats.reconnects,
            "idle_timeouts": self.stats.idle_timeouts,
            "not_sent": dict(self.stats.skipped),
            "event_time": (when(self.min_ts), when(self.max_ts)),
            "seconds": round(self.seconds, 2),
            "stopped_by": self.stopped_by,
            "per_symbol": dict(sorted(self.delivery.per_key.items())),
        }

    def __str__(self) -> str:
        skipped = sum(self.stats.skipped.values())
        return (
            f"{self.ticks} ticks and {self.stats.rejected} undecodable frames from "
            f"{self.source} ({self.stats.frames} frames, {skipped} not trades); "
            f"{self.sent} confirmed ({self.failed} failed) to {self.topic} in "
            f"{self.seconds:.1f} s; {self.stats.reconnects} reconnects; "
            f"stopped by {self.stopped_by}"
        )


def tick_value(trade: Trade, seq: int, producer_id: str, source: str) -> bytes:
    """A trade as the tick contract's JSON value (optional fields only when known)."""
    value: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "symbol": trade.symbol,
        "ts": trade.ts,
        "price": trade.price,
        "size": trade.size,
        "seq": seq,
        "producer_id": producer_id,
    }
    for name in ("bid", "ask", "bid_size", "ask_size"):
        if getattr(trade, name) is not None:
            value[name] = getattr(trade, name)
    value["source"] = source
    return json.dumps(value, separators=(",", ":")).encode()


def rejected_value(rejected: Rejected, seq: int, producer_id: str, source: str) -> bytes:
    """A frame the feed could not read, as a record the streaming job quarantines."""
    value = {
        "schema_version": SCHEMA_VERSION,
        "seq": seq,
        "producer_id": producer_id,
        "source": source,
        "feed_error": rejected.reason,
        "frame": rejected.frame,
    }
    return json.dumps(value, separators=(",", ":")).encode()


def run_feed(
    settings: Settings,
    feed: TickFeed,
    *,
    duration_s: float | None = None,
    max_ticks: int | None = None,
    stop: threading.Event | None = None,
    topic: str | None = None,
    producer_id: str = "",
    on_progress: Callable[[FeedRunReport], None] | None = None,
    progress_every_s: float = 10.0,
) -> FeedRunReport:
    """Send a feed's trades (and rejected frames) until a duration, a count, ``stop`` or Ctrl-C.

    A market that is closed sends nothing: the run idles (the feed logs why) and
    ends at its duration like any other. What was handed to Kafka is flushed and
    counted in every case.
    """
    if duration_s is None and max_ticks is None and stop is None:
        raise ValueError("give duration_s, max_ticks or a stop event, or the run never ends")
    topic = topic or settings.topic_ticks
    producer_id = producer_id or f"{feed.name}-{uuid.uuid4().hex[:12]}"
    stop = stop or threading.Event()
    producer = ConfirmedProducer(settings, topic, client_id=producer_id)
    report = FeedRunReport(producer_id, topic, feed.name, producer.report, feed.stats)
    timer = threading.Timer(duration_s, stop.set) if duration_s is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    t0 = time.monotonic()
    next_progress = t0 + progress_every_s
    seq = 0
    log.info("%s feed -> %s as producer %s", feed.name, topic, producer_id)
    events = feed.events(stop)
    try:
        for event in events:
            if isinstance(event, Trade):
                producer.send(event.symbol.encode(), tick_value(event, seq, producer_id, feed.name))
                report.ticks += 1
                report.min_ts = event.ts if report.min_ts is None else min(report.min_ts, event.ts)
                report.max_ts = event.ts if report.max_ts is None else max(report.max_ts, event.ts)
            else:
                producer.send(None, rejected_value(event, seq, producer_id, feed.name))
            seq += 1
            if max_ticks is not None and report.ticks >= max_ticks:
                report.stopped_by = "count"
                break
            if on_progress is not None and time.monotonic() >= next_progress:
                report.seconds = time.monotonic() - t0
                on_progress(report)
                next_progress = time.monotonic() + progress_every_s
        if not report.stopped_by:
            report.stopped_by = "duration" if timer is not None and not timer.is_alive() else "stop"
    except KeyboardInterrupt:
        report.stopped_by = "interrupt"
    finally:
        events.close()  # the feed closes its connection
        if timer is not None:
            timer.cancel()
        report.seconds = time.monotonic() - t0
        producer.close(raise_on_failure=False)
    log.info("%s", report)
    return report


def produce_ticks(
    settings: Settings,
    source: str = "synthetic",
    *,
    symbols: str | list[str] = "AAPL,MSFT,GOOGL,AMZN",
    duration_s: float = 60,
    topic: str | None = None,
    on_progress: Callable[[Any], None] | None = None,
    **synthetic: Any,
) -> Any:
    """The stream producer: synthetic ticks (``synthetic`` options: rate, seed, ...) or a feed."""
    names = [s.strip() for s in (symbols.split(",") if isinstance(symbols, str) else symbols)]
    names = [s for s in names if s]
    key = str(source).strip().lower()
    if key == "synthetic":
        from stockpipe.ticks import TickSpec, run_producer

        rate = synthetic.pop("rate", 1000) or None
        start_ms, step_ms = synthetic.pop("start_ms", None), synthetic.pop("step_ms", None)
        spec = TickSpec(
            symbols=tuple(names),
            rate=rate or 10_000,
            start_ms=start_ms or None,
            step_ms=step_ms or None,
            **synthetic,
        )
        return run_producer(
            settings, spec, rate=rate, duration_s=duration_s, topic=topic, on_progress=on_progress
        )
    if key not in FEEDS:
        raise UnknownNameError("tick source", source, list(TICK_SOURCES))
    feed = get_feed(key, settings, symbols=names)
    return run_feed(settings, feed, duration_s=duration_s, topic=topic, on_progress=on_progress)

"""Live tick feeds behind one interface, looked up by name, and the producer that sends them.

A feed (``yahoo``: Yahoo Finance's streamer; ``finnhub``: Finnhub's trades
websocket, with ``FINNHUB_API_KEY``) turns a connection into
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
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from stockpipe.config import Settings, get_settings
from stockpipe.errors import ParameterError, UnknownNameError
from stockpipe.kafka import ConfirmedProducer, Delivered, DeliveryReport
from stockpipe.schemas import FEED_ERROR_FIELD, SCHEMA_VERSION, TICK_SOURCES

log = logging.getLogger(__name__)

#: Registry: feed name -> "module:Class" (imported when first asked for); with
#: ``synthetic`` (the generator, not a feed) these are schemas.TICK_SOURCES.
FEEDS: dict[str, str] = {
    "yahoo": "stockpipe.sources.yahoo_stream:YahooFeed",
    "finnhub": "stockpipe.sources.finnhub_stream:FinnhubFeed",
}


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
            raise ParameterError("symbols", symbols, f"a symbol for the {self.name} feed")
        self.stats = FeedStats()

    @abstractmethod
    def events(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        """Trades and rejected frames until ``stop`` is set; never raises for bad input.

        Must notice ``stop`` within about a second, also when nothing arrives.
        """


@dataclass(frozen=True)
class FeedOptions:
    """Timing of a websocket feed's connection loop (tests shorten every one of them)."""

    heartbeat_s: float = 15.0  # the feed's keep-alive (Yahoo: the subscription again)
    idle_timeout_s: float = 60.0  # no frame for this long: the connection is stale
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    poll_s: float = 0.5  # how soon a stop request is noticed


class WebSocketFeed(TickFeed):
    """A feed over a websocket: the connection loop every live source needs.

    Reconnects with exponential backoff (and jitter) and subscribes again; sends
    the source's heartbeat every ``heartbeat_s``; after ``idle_timeout_s`` without
    a frame logs that the market is probably closed and reconnects, idling
    without failing. Subclasses write :meth:`connect` and :meth:`decode`.
    """

    #: Why a market may be silent, for the idle log line.
    closed_hint: ClassVar[str] = "nothing is sent outside trading hours"
    #: The setting that holds the feed's URL.
    url_setting: ClassVar[str]

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        symbols: list[str] | tuple[str, ...],
        url: str | None = None,
        options: FeedOptions | None = None,
    ) -> None:
        super().__init__(symbols)
        self.settings = settings or get_settings()
        self.url = url or getattr(self.settings, self.url_setting)
        self.where = self.url  # for logs: never holds a secret (keys go in connect())
        self.options = options or FeedOptions()

    @abstractmethod
    def connect(self) -> Any:
        """An open connection, subscribed to :attr:`symbols` (``recv(timeout=)``, ``close()``)."""

    @abstractmethod
    def decode(self, text: str | bytes) -> list[Trade | Rejected]:
        """The events in one frame; what is no trade is counted in :attr:`stats`."""

    def heartbeat(self, conn: Any) -> None:
        """Keep the subscription alive (protocol pings are the websocket library's)."""

    def describe(self, exc: BaseException) -> str:
        """An exception's text fit for logs (subclasses blank their secrets)."""
        return str(exc)

    def reject(self, text: str | bytes, reason: str) -> Rejected:
        self.stats.rejected += 1
        frame = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        log.warning("frame not decodable (%s), sent on for quarantine: %.80r", reason, frame)
        return Rejected(reason=reason, frame=frame)

    def events(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        from websockets.exceptions import WebSocketException

        failures = 0
        while not stop.is_set():
            try:
                conn = self.connect()
            except (OSError, WebSocketException, TimeoutError) as exc:
                wait = self._backoff(failures)
                failures += 1
                log.warning(
                    "cannot reach %s (%s); trying again in %.1f s",
                    self.where,
                    self.describe(exc),
                    wait,
                )
                stop.wait(wait)
                continue
            self.stats.connections += 1
            log.info("connected to %s, subscribed to %s", self.where, ", ".join(self.symbols))
            frames_before = self.stats.frames
            try:
                yield from self._session(conn, stop)
            finally:
                _close(conn)
            if stop.is_set():
                break
            failures = 0 if self.stats.frames > frames_before else failures + 1
            wait = self._backoff(failures)
            log.info("reconnecting to %s in %.1f s", self.where, wait)
            stop.wait(wait)

    def _session(self, conn: Any, stop: threading.Event) -> Iterator[Trade | Rejected]:
        from websockets.exceptions import ConnectionClosed

        opts = self.options
        last_frame = last_beat = time.monotonic()
        while not stop.is_set():
            try:
                try:
                    text = conn.recv(timeout=opts.poll_s)
                except TimeoutError:
                    now = time.monotonic()
                    if now - last_beat >= opts.heartbeat_s:
                        self.heartbeat(conn)
                        last_beat = now
                    if now - last_frame >= opts.idle_timeout_s:
                        self.stats.idle_timeouts += 1
                        log.info(
                            "no message from %s for %.0f s: the market is probably closed (%s) "
                            "or the connection is stale; reconnecting and waiting, nothing has "
                            "failed",
                            self.where,
                            now - last_frame,
                            self.closed_hint,
                        )
                        return
                    continue
            except ConnectionClosed as exc:
                self.stats.drops += 1
                log.warning("connection to %s closed (%s)", self.where, self.describe(exc))
                return
            last_frame = time.monotonic()
            self.stats.frames += 1
            yield from self.decode(text)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter, so reconnecting clients do not arrive together."""
        opts = self.options
        return min(opts.backoff_max_s, opts.backoff_initial_s * 2**failures) * random.uniform(
            0.8, 1.2
        )


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception as exc:  # closing a broken connection may fail; it is gone anyway
        log.debug("closing a feed connection: %s", exc)


def get_feed(name: str, settings: Settings | None = None, **options: Any) -> TickFeed:
    """A live feed by name (``yahoo``, ``finnhub``); ``options`` go to its constructor."""
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
        FEED_ERROR_FIELD: rejected.reason,
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
    from stockpipe.ticks import require_an_end

    require_an_end(duration_s, max_ticks, stop)
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

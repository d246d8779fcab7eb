"""Live trades from Yahoo Finance's streamer, through yfinance's own client and schema.

The protocol, as yfinance speaks it: the client sends ``{"subscribe": [symbols]}``
(and again every 15 s, as yfinance's AsyncWebSocket does, which keeps the
subscription alive); the server sends text frames ``{"type": "pricing", "message":
<base64 PricingData protobuf>}``, the schema ``yfinance.pricing_pb2.PricingData``.
``time`` is epoch milliseconds; prices are 32-bit floats, rounded here to
``price_hint`` decimals.

From message to tick (the tick contract holds trades):

* ``size`` is ``last_size`` when the message has one, else the rise of the
  symbol's ``day_volume`` since its previous message. A message that raises
  nothing is a quote update, not a trade; the first message of a symbol only
  sets the volume baseline; a message older than the newest without
  ``last_size`` has its volume in a later message. These are counted, not sent.
* the same message twice (same symbol, time, price, volumes) is counted once.
* ``bid``/``ask`` and their sizes go with the tick when the message has them;
  the rest (change, day high/low, market hours, names) stays out of the contract.
* a frame that is not JSON, not base64 or not a PricingData is sent on as a
  feed-error record, which the streaming job quarantines with its reason.
* an out-of-order message keeps its event time: the streaming job's watermark
  counts it or drops it as late (and counts that).

The connection is yfinance's ``WebSocket`` (its URL parameter points it at the
real streamer or a local replay); the receive loop is ours, because yfinance's
loops cannot serve a long-running feed: the sync one stops at the first frame it
cannot parse without telling the handler, and the async one, after a drop,
"reconnects" to the connection that closed and never subscribes again. So this
loop reconnects with exponential backoff and subscribes again, re-sends the
subscription as a heartbeat, and treats a silent connection as stale: after
``idle_timeout_s`` without a frame it logs that the market is probably closed
(Yahoo sends nothing then) and reconnects, idling without failing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stockpipe.config import Settings, get_settings
from stockpipe.live import FeedStats, Rejected, TickFeed, Trade

log = logging.getLogger(__name__)

#: Messages remembered to recognise a repeat (a few seconds of a busy feed).
DEDUPE_WINDOW = 20_000


class FrameError(ValueError):
    """A frame that is not a PricingData message; the text says why."""


def decode_frame(text: str | bytes) -> Any | None:
    """A frame's ``PricingData``, or None for a frame that carries no price (another type)."""
    from google.protobuf.message import DecodeError
    from yfinance.pricing_pb2 import PricingData

    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FrameError("not a JSON object")
    if "message" not in obj:
        if obj.get("type", "pricing") != "pricing":
            return None  # a frame of another kind (e.g. a heartbeat): nothing to send
        raise FrameError("a pricing frame without 'message'")
    try:
        raw = base64.b64decode(obj["message"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise FrameError(f"'message' is not base64 ({exc})") from None
    msg = PricingData()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise FrameError(f"'message' is not a PricingData protobuf ({exc})") from None
    if not msg.id:
        raise FrameError("a PricingData without a symbol (id)")
    return msg


@dataclass
class _SymbolState:
    day_volume: int = 0
    newest_ms: int = 0


@dataclass
class TradeMapper:
    """PricingData messages to trades, with what a trade needs from earlier messages.

    State outlives connections, so a reconnect loses no volume: the first message
    after it is measured against the last one before it.
    """

    symbols: frozenset[str]
    stats: FeedStats
    _state: dict[str, _SymbolState] = field(default_factory=dict)
    _seen: OrderedDict = field(default_factory=OrderedDict)

    def map(self, msg: Any) -> Trade | None:
        """The trade in ``msg``, or None (counted in ``stats.skipped`` with the reason)."""
        symbol = msg.id.upper()
        if symbol not in self.symbols:
            return self._skip("a symbol not subscribed")
        key = (symbol, msg.time, msg.price, msg.day_volume, msg.last_size, msg.bid, msg.ask)
        if key in self._seen:
            return self._skip("duplicate message")
        self._seen[key] = None
        if len(self._seen) > DEDUPE_WINDOW:
            self._seen.popitem(last=False)
        state = self._state.setdefault(symbol, _SymbolState())
        older = msg.time < state.newest_ms
        size = self._size(msg, state, older)
        if not older:
            state.newest_ms = msg.time
        if isinstance(size, str):
            return self._skip(size)
        hint = msg.price_hint if 0 < msg.price_hint <= 8 else 4
        return Trade(
            symbol=symbol,
            ts=_epoch_ms(msg.time),
            price=_rounded(msg.price, hint),
            size=size,
            bid=_rounded(msg.bid, hint) if msg.bid > 0 else None,
            ask=_rounded(msg.ask, hint) if msg.ask > 0 else None,
            bid_size=msg.bid_size if msg.bid_size > 0 else None,
            ask_size=msg.ask_size if msg.ask_size > 0 else None,
        )

    def _size(self, msg: Any, state: _SymbolState, older: bool) -> int | str:
        """The trade size, or why the message is no trade."""
        before = state.day_volume
        if not older and msg.day_volume > 0:
            state.day_volume = msg.day_volume  # the newest message is the baseline
        if msg.last_size > 0:
            return int(msg.last_size)
        if older:
            return "older than the newest, without last_size: its volume is in a later message"
        if msg.day_volume <= 0:
            return "no trade size: the feed sends no volume for this symbol"
        if before == 0:
            return "first message of the symbol: sets the day-volume baseline"
        if msg.day_volume < before:
            return "day volume started again (a new session): a new baseline"
        if msg.day_volume == before:
            return "quote update: day volume unchanged, no trade"
        return int(msg.day_volume - before)

    def _skip(self, reason: str) -> None:
        self.stats.skipped[reason] += 1
        return None


def _epoch_ms(value: int) -> int:
    # the v2 streamer sends milliseconds; seconds (v1, 10 digits) are scaled up
    return int(value) * 1000 if 0 < value < 100_000_000_000 else int(value)


def _rounded(value: float, decimals: int) -> float:
    return round(float(value), decimals) if math.isfinite(value) else float(value)


@dataclass(frozen=True)
class StreamOptions:
    """Timing of the connection loop (tests shorten every one of them)."""

    heartbeat_s: float = 15.0  # re-send the subscription this often
    idle_timeout_s: float = 60.0  # no frame for this long: the connection is stale
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    poll_s: float = 0.5  # how soon a stop request is noticed


def streamer_client(url: str) -> Any:
    """yfinance's WebSocket client for ``url``, with a receive that times out."""
    import yfinance as yf

    class StreamerClient(yf.WebSocket):
        def recv(self, timeout: float) -> str | bytes:
            return self._ws.recv(timeout=timeout)  # the connection yfinance opened

    return StreamerClient(url=url, verbose=False)


class YahooFeed(TickFeed):
    """Trades of ``symbols`` from Yahoo's streamer (``settings.yahoo_stream_url``)."""

    name = "yahoo"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        symbols: list[str] | tuple[str, ...],
        url: str | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        super().__init__(symbols)
        self.settings = settings or get_settings()
        self.url = url or self.settings.yahoo_stream_url
        self.options = options or StreamOptions()
        self.mapper = TradeMapper(frozenset(self.symbols), self.stats)

    def events(self, stop: threading.Event) -> Iterator[Trade | Rejected]:
        from websockets.exceptions import WebSocketException

        opts = self.options
        failures = 0
        while not stop.is_set():
            try:
                client = streamer_client(self.url)
                client.subscribe(list(self.symbols))  # connects, then subscribes
            except (OSError, WebSocketException, TimeoutError) as exc:
                wait = _backoff(failures, opts)
                failures += 1
                log.warning("cannot reach %s (%s); trying again in %.1f s", self.url, exc, wait)
                stop.wait(wait)
                continue
            self.stats.connections += 1
            log.info("connected to %s, subscribed to %s", self.url, ", ".join(self.symbols))
            frames_before = self.stats.frames
            try:
                yield from self._session(client, stop)
            finally:
                _close(client)
            if stop.is_set():
                break
            failures = 0 if self.stats.frames > frames_before else failures + 1
            wait = _backoff(failures, opts)
            log.info("reconnecting to %s in %.1f s", self.url, wait)
            stop.wait(wait)

    def _session(self, client: Any, stop: threading.Event) -> Iterator[Trade | Rejected]:
        from websockets.exceptions import ConnectionClosed

        opts = self.options
        last_frame = last_subscribe = time.monotonic()
        while not stop.is_set():
            try:
                text = client.recv(timeout=opts.poll_s)
            except TimeoutError:
                now = time.monotonic()
                if now - last_subscribe >= opts.heartbeat_s:
                    try:
                        client.subscribe(list(self.symbols))
                    except ConnectionClosed as exc:
                        self.stats.drops += 1
                        log.warning("connection to %s closed (%s)", self.url, exc)
                        return
                    last_subscribe = now
                if now - last_frame >= opts.idle_timeout_s:
                    self.stats.idle_timeouts += 1
                    log.info(
                        "no message from %s for %.0f s: the market is probably closed (Yahoo "
                        "sends nothing outside trading hours) or the connection is stale; "
                        "reconnecting and waiting, nothing has failed",
                        self.url,
                        now - last_frame,
                    )
                    return
                continue
            except ConnectionClosed as exc:
                self.stats.drops += 1
                log.warning("connection to %s closed (%s)", self.url, exc)
                return
            last_frame = time.monotonic()
            self.stats.frames += 1
            event = self._event(text)
            if event is not None:
                yield event

    def _event(self, text: str | bytes) -> Trade | Rejected | None:
        try:
            msg = decode_frame(text)
        except FrameError as exc:
            self.stats.rejected += 1
            frame = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            log.warning("frame not decodable (%s), sent on for quarantine: %.80r", exc, frame)
            return Rejected(reason=str(exc), frame=frame)
        if msg is None:
            self.stats.skipped["a frame of another type"] += 1
            return None
        return self.mapper.map(msg)


def _backoff(failures: int, opts: StreamOptions) -> float:
    """Exponential backoff with jitter, so reconnecting clients do not arrive together."""
    base = min(opts.backoff_max_s, opts.backoff_initial_s * 2**failures)
    return base * random.uniform(0.8, 1.2)


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:  # closing a broken connection may fail; it is gone anyway
        log.debug("closing the streamer connection: %s", exc)

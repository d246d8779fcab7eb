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
"reconnects" to the connection that closed and never subscribes again. So the
loop is :class:`stockpipe.live.WebSocketFeed`'s: it reconnects with exponential
backoff and subscribes again, re-sends the subscription as a heartbeat, and
treats a silent connection as stale: after ``idle_timeout_s`` without a frame it
logs that the market is probably closed (Yahoo sends nothing then) and
reconnects, idling without failing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from stockpipe.config import SourceSettings
from stockpipe.errors import FrameError
from stockpipe.live import FeedStats, Rejected, Trade, WebSocketFeed

log = logging.getLogger(__name__)

#: Messages remembered to recognise a repeat (a few seconds of a busy feed).
DEDUPE_WINDOW = 20_000


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


def streamer_client(url: str) -> Any:
    """yfinance's WebSocket client for ``url``, with a receive that times out."""
    import yfinance as yf

    class StreamerClient(yf.WebSocket):
        def recv(self, timeout: float) -> str | bytes:
            return self._ws.recv(timeout=timeout)  # the connection yfinance opened

    return StreamerClient(url=url, verbose=False)


class YahooFeed(WebSocketFeed):
    """Trades of ``symbols`` from Yahoo's streamer (``settings.yahoo_stream_url``)."""

    name = "yahoo"
    closed_hint = "Yahoo sends nothing outside trading hours"
    url_setting = "yahoo_stream_url"

    def __init__(self, settings: SourceSettings | None = None, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.mapper = TradeMapper(frozenset(self.symbols), self.stats)

    def connect(self) -> Any:
        client = streamer_client(self.url)
        client.subscribe(list(self.symbols))  # connects, then subscribes
        return client

    def heartbeat(self, conn: Any) -> None:
        conn.subscribe(list(self.symbols))  # as yfinance's AsyncWebSocket does

    def decode(self, text: str | bytes) -> list[Trade | Rejected]:
        try:
            msg = decode_frame(text)
        except FrameError as exc:
            return [self.reject(text, str(exc))]
        if msg is None:
            self.stats.skipped["a frame of another type"] += 1
            return []
        trade = self.mapper.map(msg)
        return [] if trade is None else [trade]

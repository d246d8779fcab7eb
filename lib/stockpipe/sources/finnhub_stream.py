"""Live trades from Finnhub's trades websocket (an API key from the environment).

The protocol: connect to ``wss://ws.finnhub.io?token=<key>``, send
``{"type": "subscribe", "symbol": "AAPL"}`` per symbol; the server sends
``{"type": "trade", "data": [{"s": "AAPL", "p": 129.58, "t": <epoch ms>, "v": 100,
"c": [conditions]}, ...]}`` and ``{"type": "ping"}``. Each trade is a tick as it
is (price, size, event time); a trade whose volume is not a whole positive number
(fractional crypto lots) does not fit the contract and is counted, not sent.

The key is ``FINNHUB_API_KEY`` (settings ``finnhub_api_key``, a secret): it is in
the connection URL only, never in a log line, a report or a notebook parameter.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from stockpipe.config import SourceSettings
from stockpipe.errors import ConfigError
from stockpipe.live import Rejected, Trade, WebSocketFeed

log = logging.getLogger(__name__)


class FinnhubFeed(WebSocketFeed):
    """Trades of ``symbols`` from Finnhub (``settings.finnhub_stream_url``)."""

    name = "finnhub"
    closed_hint = "Finnhub sends stock trades only while the exchange trades"
    url_setting = "finnhub_stream_url"

    def __init__(self, settings: SourceSettings | None = None, **kw: Any) -> None:
        super().__init__(settings, **kw)
        key = self.settings.finnhub_api_key
        if key is None or not key.get_secret_value():
            raise ConfigError("FINNHUB_API_KEY", "The finnhub feed needs a Finnhub API key.")
        self._key = key.get_secret_value()

    def connect(self) -> Any:
        from websockets.sync.client import connect

        sep = "&" if "?" in self.url else "?"
        conn = connect(f"{self.url}{sep}token={self._key}", open_timeout=10)
        for symbol in self.symbols:
            conn.send(json.dumps({"type": "subscribe", "symbol": symbol}))
        return conn

    def describe(self, exc: BaseException) -> str:
        return str(exc).replace(self._key, "****")

    def decode(self, text: str | bytes) -> list[Trade | Rejected]:
        try:
            message = json.loads(text)
            kind = message.get("type")
        except (ValueError, AttributeError) as exc:
            return [self.reject(text, f"not a JSON object ({exc})")]
        if kind == "ping":
            self.stats.skipped["ping"] += 1
            return []
        if kind == "error":
            self.stats.skipped["error message from the server"] += 1
            log.error("finnhub says: %s", self.describe(Exception(message.get("msg"))))
            return []
        if kind != "trade" or not isinstance(message.get("data"), list):
            return [self.reject(text, f"not a trade message (type {kind!r})")]
        out: list[Trade | Rejected] = []
        for item in message["data"]:
            trade = self._trade(item)
            if isinstance(trade, str):
                self.stats.skipped[trade] += 1
            else:
                out.append(trade)
        return out

    def _trade(self, item: Any) -> Trade | str:
        try:
            symbol, price, ts, volume = item["s"], item["p"], item["t"], item["v"]
        except (KeyError, TypeError):
            return "a trade without s, p, t or v"
        if str(symbol).upper() not in self.symbols:
            return "a symbol not subscribed"
        if not isinstance(volume, int | float) or volume <= 0 or volume != int(volume):
            return "a trade size that is not a whole positive number (e.g. a crypto fraction)"
        if not isinstance(price, int | float) or not isinstance(ts, int):
            return "a trade with a price or time that is not a number"
        return Trade(symbol=str(symbol).upper(), ts=ts, price=float(price), size=int(volume))

"""Bars from Alpha Vantage through the ``alpha_vantage`` package (it uses requests).

Alpha Vantage answers problems with HTTP 200 and a JSON body holding one key:
``Error Message`` (invalid call or symbol), ``Information`` or ``Note`` (rate
limits, but also e.g. premium-only parameters). The package turns all three into
a bare ``ValueError`` and calls requests without a timeout, so its one HTTP hook
(``_handle_api_call``) is overridden: the body's key decides, a rate limit is
retried with backoff and then reported as :class:`RateLimitError`, and the API
key never appears in an error message.

Values arrive as strings; intraday times are in the zone the answer's
``Meta Data`` names (``US/Eastern``) and are converted to UTC, DST included.
Alpha Vantage labels an intraday bar by its open time. ``TIME_SERIES_DAILY``
(the free daily series) has no adjusted close, so ``adj_close`` is empty.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import requests
from alpha_vantage.timeseries import TimeSeries

from stockpipe.config import SourceSettings
from stockpipe.errors import ConfigError, RateLimitError, SourceError, UnknownNameError
from stockpipe.sources.base import RetryPolicy, Source, daily_ts, intraday_ts, is_daily, now_utc

KEY_VARIABLE = "ALPHAVANTAGE_API_KEY"

#: Our interval -> Alpha Vantage's.
AV_INTERVALS: dict[str, str] = {"1h": "60min", "5m": "5min", "1m": "1min"}

_FIELDS = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}
_RATE_LIMIT_RE = re.compile(
    r"rate limit|call frequency|per (second|minute|day)|sparingly|too many", re.IGNORECASE
)
#: A compact answer holds the last 100 bars; older starts need outputsize=full.
_COMPACT_SPAN = pd.Timedelta(days=140)


class _Answer(Exception):
    """A body or HTTP status that is not data: ``kind`` is ``rate`` or ``error``."""

    def __init__(self, kind: str, text: str) -> None:
        self.kind, self.text = kind, text
        super().__init__(text)


class _TimeSeries(TimeSeries):
    """The package's TimeSeries with a timeout and typed handling of error bodies."""

    def __init__(self, key: str, timeout: float) -> None:
        super().__init__(key=key, output_format="json")
        self._timeout = timeout

    def _handle_api_call(self, url: str) -> dict[str, Any]:
        try:
            response = requests.get(
                url, proxies=self.proxy, headers=self.headers, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise _Answer("error", f"request failed: {type(exc).__name__}: {exc}") from None
        if response.status_code in (429, 503):
            raise _Answer("rate", f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise _Answer("error", f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError:
            raise _Answer("error", f"answer is not JSON: {response.text[:200]!r}") from None
        if not isinstance(body, dict) or not body:
            raise _Answer("error", "empty answer")
        if "Error Message" in body:
            raise _Answer("error", str(body["Error Message"]))
        for key in ("Note", "Information"):
            if key in body and not any(k.startswith("Time Series") for k in body):
                text = str(body[key])
                raise _Answer("rate" if _RATE_LIMIT_RE.search(text) else "error", f"{key}: {text}")
        if not any(k.startswith("Time Series") for k in body):
            raise _Answer("error", f"answer holds no time series (keys: {sorted(body)})")
        return body


class AlphaVantageSource(Source):
    """Alpha Vantage ``TIME_SERIES_DAILY`` and ``TIME_SERIES_INTRADAY`` bars.

    The API key comes only from the settings (environment ``ALPHAVANTAGE_API_KEY``
    or ``.env``). Options: ``outputsize`` (``compact``/``full``; default: ``full``
    only when ``start`` is older than a compact answer reaches), ``extended_hours``
    (intraday pre/post market, default off), ``retry``, ``timeout``. Intraday history
    costs one call per calendar month of ``[start, end)`` (the API's ``month=``);
    free keys allow 25 calls a day.
    """

    name = "alphavantage"

    def __init__(
        self,
        settings: SourceSettings | None = None,
        *,
        outputsize: str | None = None,
        extended_hours: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(settings)
        secret = self.settings.alphavantage_api_key
        if secret is None or not secret.get_secret_value().strip():
            raise ConfigError(
                KEY_VARIABLE, "The alphavantage source needs an Alpha Vantage API key."
            )
        self._key = secret.get_secret_value().strip()
        if outputsize not in (None, "compact", "full"):
            raise UnknownNameError("outputsize", outputsize, ["compact", "full"])
        self.outputsize = outputsize
        self.extended_hours = extended_hours
        # Free keys allow a few calls a minute: wait long enough for the window to pass.
        self.retry = retry or RetryPolicy(attempts=3, wait_initial=15.0, wait_max=60.0)
        self.timeout = timeout

    def raw_bars(
        self,
        symbol: str,
        *,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        interval: str,
        **kw: Any,
    ) -> pd.DataFrame:
        self.refuse_options(kw)
        if is_daily(interval):
            size = self.outputsize or _size_for(start)
            body = self._call(symbol, lambda ts: ts.get_daily(symbol=symbol, outputsize=size))
            return parse_body(body, symbol, interval, source=self.name)
        frames = []
        for month in _months(start, end):
            body = self._call(
                symbol,
                lambda ts, month=month: ts.get_intraday(
                    symbol=symbol,
                    interval=AV_INTERVALS[interval],
                    outputsize=self.outputsize or ("full" if month else "compact"),
                    month=month,
                    extended_hours="true" if self.extended_hours else "false",
                    adjusted="false",
                ),
            )
            frames.append(parse_body(body, symbol, interval, source=self.name))
        return pd.concat(frames, ignore_index=True).drop_duplicates("ts", keep="last")

    def _call(self, symbol: str, request: Any) -> dict[str, Any]:
        """One API call, retried while rate limited; returns the whole JSON body."""

        def attempt() -> dict[str, Any]:
            client = _TimeSeries(self._key, self.timeout)
            try:
                data, meta = request(client)
            except _Answer as ans:
                text = self._redact(ans.text)
                if ans.kind == "rate":
                    raise RateLimitError(self.name, symbol, text) from None
                raise SourceError(self.name, symbol, text) from None
            except (ValueError, KeyError) as exc:  # the package's own checks
                raise SourceError(self.name, symbol, self._redact(repr(exc))) from None
            return {"Meta Data": meta, "data": data}

        return self.retry.call(attempt)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _size_for(start: pd.Timestamp | None) -> str:
    if start is None or start >= now_utc() - _COMPACT_SPAN:
        return "compact"
    return "full"


def _months(start: pd.Timestamp | None, end: pd.Timestamp | None) -> list[str | None]:
    """The ``month=YYYY-MM`` values covering ``[start, end)``; ``[None]``: the latest data."""
    if start is None:
        return [None]
    last = (end or now_utc()) - pd.Timedelta(microseconds=1)
    months = pd.period_range(start.tz_localize(None), last.tz_localize(None), freq="M")
    return [str(m) for m in months] or [None]


def _meta_value(meta: dict[str, Any], suffix: str) -> str | None:
    return next((str(v) for k, v in meta.items() if k.endswith(suffix)), None)


def parse_body(
    body: dict[str, Any], symbol: str, interval: str, *, source: str = "alphavantage"
) -> pd.DataFrame:
    """``{"Meta Data": ..., "data": {time: {"1. open": "...", ...}}}`` -> raw bars.

    Values are converted from strings as they are (a value that is not a number
    becomes NaN, a negative volume stays negative): checking them is the Spark
    job's work.
    """
    meta = body.get("Meta Data") or {}
    data = body.get("data") or {}
    if not data:
        raise SourceError(source, symbol, "the answer holds no bars")
    frame = pd.DataFrame.from_dict(data, orient="index")
    frame.columns = [re.sub(r"^\d+\.\s*", "", str(c)) for c in frame.columns]
    missing = [c for c in _FIELDS if c not in frame.columns]
    if missing:
        raise SourceError(source, symbol, f"answer lacks fields {missing}")
    try:
        times = pd.to_datetime(pd.Index(frame.index, dtype=str), format="ISO8601")
    except ValueError as exc:
        raise SourceError(source, symbol, f"a time does not parse: {exc}") from exc
    if is_daily(interval):
        ts = daily_ts(times)
    else:
        tz = _meta_value(meta, "Time Zone") or "US/Eastern"
        try:
            ts = intraday_ts(times, tz)
        except (ValueError, TypeError) as exc:
            raise SourceError(source, symbol, f"times cannot be read in {tz}: {exc}") from exc
    out = pd.DataFrame(
        {col: pd.to_numeric(frame[col].to_numpy(), errors="coerce") for col in _FIELDS}
    )
    out.insert(0, "ts", ts)
    out["adj_close"] = float("nan")
    return out

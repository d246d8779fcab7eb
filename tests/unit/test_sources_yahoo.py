"""The yahoo source against recorded ``yfinance.download`` answers.

Two ways of standing in for Yahoo: ``yfinance.download`` replaced by a function
returning a recorded frame (layouts, values), and ``yfinance.multi.Ticker``
replaced so that the *real* ``download`` runs its own error handling (it swallows
rate limits and unknown tickers into log lines; the source must still see them).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import yfinance
import yfinance.multi
from oracles.recorded import frame_from_json, frame_to_json, yfinance_frame
from yfinance.exceptions import YFRateLimitError

from stockpipe.config import Settings
from stockpipe.errors import RateLimitError, SourceError
from stockpipe.sources import fetch_many, get_source
from stockpipe.sources.base import RetryPolicy

OFFLINE = Settings(_env_file=None)
FIELDS = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "adj_close": "Adj Close"}


class Sleeps(list):
    """A RetryPolicy sleep that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _source(attempts: int = 3, sleeps: Sleeps | None = None):
    retry = RetryPolicy(
        attempts=attempts,
        wait_initial=1.0,
        wait_max=4.0,
        sleep=sleeps if sleeps is not None else Sleeps(),
    )
    return get_source("yahoo", OFFLINE, retry=retry)


@pytest.fixture
def downloads(monkeypatch) -> list[dict[str, Any]]:
    """Replace yfinance.download: answers the recorded frame named by the call."""
    calls: list[dict[str, Any]] = []
    answers = {
        ("MSFT", "1d"): "download_MSFT_1d",
        ("MSFT", "5m"): "download_MSFT_5m",
        ("MULTI", "1d"): "download_MSFT_GOOG_1d",
    }

    def fake_download(tickers, **kw):
        calls.append({"tickers": tickers, **kw})
        name = answers.get((tickers, kw["interval"])) or answers[("MULTI", kw["interval"])]
        return yfinance_frame(name)

    monkeypatch.setattr(yfinance, "download", fake_download)
    return calls


def _check_values(bars: pd.DataFrame, frame: pd.DataFrame, ticker: str | None) -> None:
    """Every bar equals the recorded frame's cell for its date, field by field."""
    one = frame.xs(ticker, axis=1, level="Ticker") if ticker else frame
    one = one.dropna(how="all")
    assert len(bars) == len(one)
    for bar, (when, row) in zip(bars.itertuples(index=False), one.iterrows(), strict=True):
        assert bar.ts == pd.Timestamp(when.date(), tz="UTC")
        for ours, theirs in FIELDS.items():
            assert getattr(bar, ours) == row[theirs], (when, ours)
        assert bar.volume == row["Volume"]


def test_one_ticker_multiindex_layout_value_by_value(downloads):
    bars = _source().fetch("msft", start="2013-02-01", end="2013-03-01", batch_id="b")
    _check_values(bars, yfinance_frame("download_MSFT_1d"), "MSFT")
    # Adj Close is kept apart from Close (MSFT's dividend before 2013-02-19).
    assert (bars["adj_close"] < bars["close"]).sum() == 11
    call = downloads[0]
    assert call["tickers"] == "MSFT" and call["auto_adjust"] is False
    assert (call["start"], call["end"], call["interval"]) == ("2013-02-01", "2013-03-01", "1d")
    assert set(bars["source"]) == {"yahoo"}


def test_several_tickers_layout_picks_each_ticker(monkeypatch):
    frame = yfinance_frame("download_MSFT_GOOG_1d")
    monkeypatch.setattr(yfinance, "download", lambda tickers, **kw: frame)
    src = _source()
    for ticker in ("GOOG", "MSFT"):
        bars = src.fetch(ticker, start="2013-02-01", end="2013-03-01", batch_id="b")
        _check_values(bars, frame, ticker)
        assert set(bars["symbol"]) == {ticker}


def test_flat_and_ticker_first_layouts(monkeypatch):
    recorded = yfinance_frame("download_MSFT_1d")
    flat = recorded.droplevel("Ticker", axis=1).rename_axis(None, axis=1)  # multi_level_index=False
    ticker_first = recorded.swaplevel(axis=1)  # group_by="ticker"
    for frame in (flat, ticker_first):
        monkeypatch.setattr(yfinance, "download", lambda tickers, frame=frame, **kw: frame)
        bars = _source().fetch("MSFT", start="2013-02-01", end="2013-03-01", batch_id="b")
        _check_values(bars, recorded, "MSFT")


def test_intraday_exchange_times_become_utc_across_dst(downloads):
    bars = _source().fetch(
        "MSFT", start="2017-11-03", end="2017-11-07", interval="5m", batch_id="b"
    )
    recorded = yfinance_frame("download_MSFT_5m")
    assert str(recorded.index.tz) == "America/New_York"
    assert list(bars["ts"]) == list(recorded.index.tz_convert("UTC"))
    first = bars.groupby(bars["ts"].dt.date)["ts"].min()
    # 09:30 New York is 13:30 UTC under EDT (Nov 3) and 14:30 UTC under EST (Nov 6).
    assert [t.strftime("%H:%M") for t in first] == ["13:30", "14:30"]
    assert bars["close"].tolist() == recorded[("Close", "MSFT")].tolist()
    assert downloads[0]["ignore_tz"] is False


def test_period_is_passed_when_no_range_is_given(downloads):
    _source().fetch("MSFT", batch_id="b", period="max")
    assert downloads[0]["period"] == "max" and downloads[0]["start"] is None


def test_bad_rows_pass_through_unchanged(monkeypatch):
    frame = yfinance_frame("download_MSFT_1d")
    frame.iloc[2, frame.columns.get_loc(("Close", "MSFT"))] = np.nan
    frame.iloc[3, frame.columns.get_loc(("Volume", "MSFT"))] = -100
    monkeypatch.setattr(yfinance, "download", lambda tickers, **kw: frame)
    bars = _source().fetch("MSFT", start="2013-02-01", end="2013-03-01", batch_id="b")
    assert len(bars) == len(frame)
    assert (
        math.isnan(bars.loc[2, "close"]) and bars.loc[2, "open"] == frame.iloc[2][("Open", "MSFT")]
    )
    assert bars.loc[3, "volume"] == -100


def test_join_padding_rows_are_not_bars_but_partial_rows_are(monkeypatch):
    frame = yfinance_frame("download_MSFT_GOOG_1d")
    goog = [c for c in frame.columns if c[1] == "GOOG"]
    frame.loc[frame.index[0], goog] = np.nan  # GOOG had no bar that day: download pads NaN
    frame.loc[frame.index[1], ("Close", "GOOG")] = np.nan  # a real bar lacking its close
    monkeypatch.setattr(yfinance, "download", lambda tickers, **kw: frame)
    bars = _source().fetch("GOOG", start="2013-02-01", end="2013-03-01", batch_id="b")
    assert len(bars) == len(frame) - 1
    assert bars["ts"].iloc[0] == pd.Timestamp(frame.index[1], tz="UTC")
    assert math.isnan(bars["close"].iloc[0])


def test_empty_answer_is_a_per_symbol_error(monkeypatch):
    monkeypatch.setattr(yfinance, "download", lambda tickers, **kw: pd.DataFrame())
    with pytest.raises(SourceError, match="yahoo: MSFT: Yahoo returned no bars"):
        _source().fetch("MSFT", batch_id="b")


class _StandInTicker:
    """Stands in for yfinance.Ticker inside the real yfinance.download."""

    script: ClassVar[list[Any]] = []

    class _PriceHistory:
        _last_error = None

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self._price_history = self._PriceHistory()

    def history(self, **kw: Any) -> pd.DataFrame:
        step = self.script.pop(0)
        if isinstance(step, pd.DataFrame):
            return step.copy()
        if step == "rate-limited":
            raise YFRateLimitError()  # what yfinance's HTTP layer raises on HTTP 429
        if step == "unknown":
            # What Ticker.history does for a ticker Yahoo does not know: log and answer empty.
            reason = "possibly delisted; no timezone found"
            logging.getLogger("yfinance").error(f"${self.ticker}: {reason}")
            self._price_history._last_error = reason
            return yfinance.utils.empty_df()
        raise AssertionError(f"unknown script step {step!r}")


@pytest.fixture
def yahoo_script(monkeypatch) -> list[Any]:
    """Real yfinance.download; each Ticker.history call takes the next step of the script."""
    script: ClassVar[list[Any]] = []
    monkeypatch.setattr(_StandInTicker, "script", script)
    monkeypatch.setattr(yfinance.multi, "Ticker", _StandInTicker)
    return script


def _history(name: str = "download_MSFT_1d") -> pd.DataFrame:
    """A Ticker.history-shaped frame (flat columns, exchange-zone index) from a recording."""
    frame = yfinance_frame(name).droplevel("Ticker", axis=1).rename_axis(None, axis=1)
    if frame.index.tz is None:
        frame.index = frame.index.tz_localize("America/New_York")
    return frame[["Open", "High", "Low", "Close", "Adj Close", "Volume"]]


def test_rate_limit_is_retried_with_backoff_then_reported(yahoo_script):
    yahoo_script.extend(["rate-limited"] * 3)
    sleeps = Sleeps()
    with pytest.raises(RateLimitError, match="still rate limited after 3 attempts") as info:
        _source(attempts=3, sleeps=sleeps).fetch(
            "MSFT", start="2013-02-01", end="2013-03-01", batch_id="b"
        )
    assert info.value.symbol == "MSFT" and "Too Many Requests" in info.value.reason
    assert sleeps == [1.0, 2.0]  # exponential backoff between the 3 attempts
    assert yahoo_script == []


def test_rate_limit_then_success(yahoo_script):
    yahoo_script.extend(["rate-limited", _history()])
    sleeps = Sleeps()
    bars = _source(sleeps=sleeps).fetch("MSFT", start="2013-02-01", end="2013-03-01", batch_id="b")
    _check_values(bars, yfinance_frame("download_MSFT_1d"), "MSFT")
    assert sleeps == [1.0]


def test_unknown_symbol_carries_yfinance_reason(yahoo_script):
    yahoo_script.append("unknown")
    with pytest.raises(SourceError, match="possibly delisted; no timezone found") as info:
        _source().fetch("NOSUCH", start="2013-02-01", end="2013-03-01", batch_id="b")
    assert not isinstance(info.value, RateLimitError)
    assert info.value.symbol == "NOSUCH"


def test_fetch_many_keeps_good_symbols_when_one_fails(yahoo_script):
    yahoo_script.extend([_history(), "unknown"])
    result = fetch_many(
        _source(),
        "MSFT, nosuch",
        start="2013-02-01",
        end="2013-03-01",
        batch_id="b",
        progress=False,
    )
    summary = result.summary().set_index("symbol")
    assert summary.loc["MSFT", "bars"] == len(_history()) and summary.loc["MSFT", "error"] is None
    assert summary.loc["NOSUCH", "bars"] == 0
    assert "possibly delisted" in summary.loc["NOSUCH", "error"]
    assert set(result.bars["symbol"]) == {"MSFT"}


def test_recorded_frames_round_trip_with_layout_and_dtypes():
    frame = yfinance_frame("download_MSFT_GOOG_1d")
    assert list(frame.columns.names) == ["Price", "Ticker"]
    assert frame[("Volume", "GOOG")].dtype == np.int64
    pd.testing.assert_frame_equal(frame_from_json(frame_to_json(frame)), frame)


def test_rate_limit_is_seen_even_when_yfinance_logging_is_silenced(yahoo_script):
    logger = logging.getLogger("yfinance")
    saved = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yahoo_script.extend(["rate-limited", "rate-limited"])
        with pytest.raises(RateLimitError):
            _source(attempts=2).fetch("MSFT", start="2013-02-01", end="2013-03-01", batch_id="b")
        assert logger.level == logging.CRITICAL  # the caller's setting is restored
    finally:
        logger.setLevel(saved)

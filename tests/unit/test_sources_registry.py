"""The source registry, symbol parsing, date bounds and fetch_many's bookkeeping."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from stockpipe.config import Settings
from stockpipe.errors import ParameterError, SourceError, UnknownNameError
from stockpipe.schemas import BAR_COLUMNS
from stockpipe.sources import FetchResult, Source, fetch_many, get_source, parse_symbols
from stockpipe.sources.csvfile import CsvSource
from stockpipe.sources.synthetic import SyntheticSource
from stockpipe.times import to_utc

OFFLINE = Settings(_env_file=None)


def test_unknown_source_lists_the_allowed_names():
    with pytest.raises(UnknownNameError) as info:
        get_source("bloomberg", OFFLINE)
    message = str(info.value)
    for name in ("alphavantage", "csv", "samples", "synthetic", "yahoo"):
        assert name in message
    assert info.value.allowed == ["alphavantage", "csv", "samples", "synthetic", "yahoo"]
    assert isinstance(info.value, ValueError)


def test_names_map_to_their_classes_and_instances_pass_through(tmp_path):
    assert isinstance(get_source("Synthetic", OFFLINE), SyntheticSource)
    assert type(get_source("csv", OFFLINE, path=tmp_path)) is CsvSource
    src = get_source("samples", OFFLINE)
    assert get_source(src) is src and src.name == "samples"


def test_unknown_interval_lists_the_allowed_ones():
    with pytest.raises(UnknownNameError, match="1d, 1h, 1m, 5m"):
        fetch_many(
            get_source("samples", OFFLINE), "MSFT", interval="1w", batch_id="b", progress=False
        )


def test_parse_symbols_accepts_lists_and_comma_strings():
    assert parse_symbols(" msft, goog ,,MSFT ") == ["MSFT", "GOOG"]
    assert parse_symbols(["aapl", "AAPL", "ibm"]) == ["AAPL", "IBM"]
    assert parse_symbols(None) == []


def test_bounds_are_utc():
    assert to_utc("2024-01-02") == pd.Timestamp("2024-01-02", tz="UTC")
    assert to_utc(date(2024, 1, 2)) == pd.Timestamp("2024-01-02", tz="UTC")
    assert to_utc("2024-07-01T09:30:00-04:00") == pd.Timestamp("2024-07-01 13:30", tz="UTC")
    assert to_utc(None) is None and to_utc("") is None


class _Flaky(Source):
    """Answers two fixed bars, fails for BAD, and breaks (a bug) for BUG."""

    name = "flaky"

    def raw_bars(self, symbol, *, start, end, interval, **kw):
        if symbol == "BAD":
            raise SourceError(self.name, symbol, "boom")
        if symbol == "BUG":
            raise KeyError("not a source error")
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True),
                "open": [1.0, 2.0],
                "high": [1.5, 2.5],
                "low": [0.5, 1.5],
                "close": [1.2, 2.2],
                "adj_close": [None, None],
                "volume": [10, 20],
            }
        )


def test_fetch_many_records_a_failure_and_keeps_the_others():
    result = fetch_many(_Flaky(OFFLINE), "ok1, bad, ok2", batch_id="b7", progress=False)
    assert isinstance(result, FetchResult)
    summary = result.summary()
    assert list(summary.columns) == ["symbol", "bars", "first", "last", "error", "note"]
    assert summary["symbol"].tolist() == ["OK1", "BAD", "OK2"]
    assert summary["bars"].tolist() == [2, 0, 2]
    assert summary.loc[1, "error"] == "flaky: BAD: boom"
    assert summary.loc[0, "first"] == pd.Timestamp("2024-01-02", tz="UTC")
    assert summary.loc[0, "last"] == pd.Timestamp("2024-01-03", tz="UTC")
    assert [r.symbol for r in result.failed] == ["BAD"]
    bars = result.bars
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars["symbol"].tolist() == ["OK1", "OK1", "OK2", "OK2"]
    assert bars["batch_id"].eq("b7").all() and bars["ingested_at"].nunique() == 1


def test_a_bug_in_a_source_is_not_swallowed():
    with pytest.raises(KeyError):
        fetch_many(_Flaky(OFFLINE), ["OK", "BUG"], batch_id="b", progress=False)


def test_invalid_symbol_is_a_per_symbol_failure():
    result = fetch_many(_Flaky(OFFLINE), ["OK", "no good!"], batch_id="b", progress=False)
    assert result.summary()["error"].tolist()[0] is None
    assert "not a ticker symbol" in result.summary()["error"].tolist()[1]


def test_all_failing_gives_empty_conformed_bars():
    result = fetch_many(_Flaky(OFFLINE), "BAD", batch_id="b", progress=False)
    assert result.bars.empty and list(result.bars.columns) == list(BAR_COLUMNS)


def test_no_symbols_for_an_api_source_is_an_error():
    with pytest.raises(
        ParameterError, match=r"parameter `symbols`: '' is not enough: source .* needs"
    ):
        fetch_many(_Flaky(OFFLINE), "", batch_id="b", progress=False)


def test_start_after_end_is_refused():
    with pytest.raises(ParameterError, match="parameter `end`: '2024-01-01' is not after start"):
        _Flaky(OFFLINE).fetch("OK", start="2024-02-01", end="2024-01-01", batch_id="b")


def test_a_window_without_bars_is_told_apart_from_a_failure():
    # _Flaky's bars are on 2024-01-02 and 03; a weekend a year later holds none
    weekend = dict(start="2025-01-04", end="2025-01-06", batch_id="b", progress=False)
    empty = fetch_many(_Flaky(OFFLINE), "OK1, OK2", **weekend)
    assert empty.bars.empty and empty.window_empty
    assert all(r.empty_window and "no 1d bars in" in r.error for r in empty.results)
    # the same window with one real failure: not just an empty window
    mixed = fetch_many(_Flaky(OFFLINE), "OK1, BAD", **weekend)
    assert not mixed.window_empty
    assert [r.empty_window for r in mixed.results] == [True, False]
    # bars in the window: nothing empty
    full = fetch_many(_Flaky(OFFLINE), "OK1", start="2024-01-01", batch_id="b", progress=False)
    assert not full.window_empty and full.results[0].ok

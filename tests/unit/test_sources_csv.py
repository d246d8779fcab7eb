"""The csv and samples sources: parsing, time zones, range filtering, bad rows, errors."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from stockpipe.config import Settings
from stockpipe.errors import ParameterError, SourceError
from stockpipe.schemas import BAR_COLUMNS
from stockpipe.sources import get_source
from stockpipe.sources.samples import SAMPLES_DIR

OFFLINE = Settings(_env_file=None)
NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def _fetch(source, symbol: str, **kw) -> pd.DataFrame:
    return source.fetch(symbol, batch_id="t-batch", **kw)


def test_samples_daily_bars_match_the_shipped_file_value_by_value():
    src = get_source("samples", OFFLINE)
    bars = _fetch(src, "msft", start="2017-10-02", end="2017-11-01")
    expected = [
        r for r in _rows(SAMPLES_DIR / "MSFT.csv") if "2017-10-02" <= r["Date"] < "2017-11-01"
    ]
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert len(bars) == len(expected) > 15
    for bar, row in zip(bars.itertuples(index=False), expected, strict=True):
        assert bar.ts == pd.Timestamp(row["Date"], tz="UTC")  # the trading date at 00:00 UTC
        assert (bar.open, bar.high, bar.low, bar.close) == tuple(
            float(row[c]) for c in ("Open", "High", "Low", "Close")
        )
        assert bar.volume == int(row["Volume"])
        assert math.isnan(bar.adj_close)  # the file has no Adj Close
    assert set(bars["symbol"]) == {"MSFT"}
    assert set(bars["source"]) == {"samples"} and set(bars["batch_id"]) == {"t-batch"}


def test_samples_lists_symbols_per_interval_and_reads_hourly_fx():
    src = get_source("samples", OFFLINE)
    assert src.available_symbols() == ["EURUSD", "GOOG", "MSFT"]
    assert src.available_symbols("1d") == ["GOOG", "MSFT"]
    assert src.available_symbols("1h") == ["EURUSD"]
    bars = _fetch(src, "EURUSD", start="2017-11-01", end="2017-11-02", interval="1h")
    expected = [
        r for r in _rows(SAMPLES_DIR / "EURUSD.csv") if r["Datetime"].startswith("2017-11-01")
    ]
    assert len(bars) == len(expected) == 24
    # Naive times are read as UTC (documented for this file).
    assert list(bars["ts"]) == [pd.Timestamp(r["Datetime"], tz="UTC") for r in expected]
    assert list(bars["close"]) == [float(r["Close"]) for r in expected]


def test_wrong_interval_for_a_file_says_which_to_use():
    src = get_source("samples", OFFLINE)
    with pytest.raises(SourceError, match=r"holds 1d bars, not 1h; ask for interval='1d'") as info:
        _fetch(src, "MSFT", interval="1h")
    assert info.value.symbol == "MSFT" and info.value.source == "samples"


def test_end_is_exclusive_and_an_empty_range_is_a_clear_error():
    src = get_source("samples", OFFLINE)
    bars = _fetch(src, "GOOG", start="2013-02-26", end="2013-02-28")
    assert [t.strftime("%Y-%m-%d") for t in bars["ts"]] == ["2013-02-26", "2013-02-27"]
    with pytest.raises(SourceError, match=r"no 1d bars in \[2020-01-01, 2020-02-01\)"):
        _fetch(src, "GOOG", start="2020-01-01", end="2020-02-01")


def test_unknown_symbol_names_the_files_there_are():
    with pytest.raises(SourceError, match=r"no CSV for this symbol .*EURUSD, GOOG, MSFT"):
        _fetch(get_source("samples", OFFLINE), "AAPL")


def test_csv_with_adj_close_and_symbol_from_file_name(tmp_path):
    path = _write(
        tmp_path / "aapl.csv",
        """
Date,Open,High,Low,Close,Adj Close,Volume
2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700
2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500
""",
    )
    src = get_source("csv", OFFLINE, path=path)
    assert src.available_symbols() == ["AAPL"]
    bars = _fetch(src, "AAPL")
    for bar, row in zip(bars.itertuples(index=False), _rows(path), strict=True):
        assert bar.ts == pd.Timestamp(row["Date"], tz="UTC")
        assert bar.adj_close == float(row["Adj Close"])
        assert bar.close == float(row["Close"])
        assert bar.volume == int(row["Volume"])
    assert set(bars["source"]) == {"csv"}


def test_symbol_option_overrides_the_file_name(tmp_path):
    path = _write(
        tmp_path / "prices.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10"
    )
    src = get_source("csv", OFFLINE, path=path, symbol="ibm")
    assert src.available_symbols() == ["IBM"]
    assert list(_fetch(src, "IBM")["symbol"]) == ["IBM"]
    with pytest.raises(SourceError):
        _fetch(src, "PRICES")


def test_intraday_times_with_utc_offsets_become_utc_across_dst(tmp_path):
    # yfinance writes intraday CSVs with the exchange's offset; DST ended 2017-11-05.
    path = _write(
        tmp_path / "MSFT.csv",
        """
Datetime,Open,High,Low,Close,Adj Close,Volume
2017-11-03 09:30:00-04:00,84.08,84.10,84.04,84.05,84.05,402743
2017-11-03 09:35:00-04:00,84.05,84.06,84.00,84.02,84.02,388976
2017-11-06 09:30:00-05:00,84.20,84.25,84.18,84.19,84.19,453415
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path), "MSFT", interval="5m")
    for bar, row in zip(bars.itertuples(index=False), _rows(path), strict=True):
        expected = datetime.fromisoformat(row["Datetime"]).astimezone(UTC)
        assert bar.ts.to_pydatetime() == expected
    assert [t.strftime("%H:%M") for t in bars["ts"]] == ["13:30", "13:35", "14:30"]


def test_naive_intraday_times_are_read_in_the_tz_option(tmp_path):
    path = _write(
        tmp_path / "SPY.csv",
        """
Datetime,Open,High,Low,Close,Volume
2024-03-08 09:30:00,510.0,511.0,509.0,510.5,1000
2024-03-08 10:30:00,510.5,512.0,510.0,511.5,900
2024-03-11 09:30:00,511.0,512.0,510.0,511.0,800
""",
    )
    bars = _fetch(
        get_source("csv", OFFLINE, path=path, tz="America/New_York"), "SPY", interval="1h"
    )
    # 2024-03-10 is the spring DST change: 09:30 is 14:30 UTC before, 13:30 UTC after.
    expected = [
        datetime.fromisoformat(r["Datetime"]).replace(tzinfo=NY).astimezone(UTC)
        for r in _rows(path)
    ]
    assert [t.to_pydatetime() for t in bars["ts"]] == expected
    assert [t.strftime("%m-%d %H:%M") for t in bars["ts"]] == [
        "03-08 14:30",
        "03-08 15:30",
        "03-11 13:30",
    ]


def test_bad_rows_pass_through_unchanged(tmp_path):
    path = _write(
        tmp_path / "BAD.csv",
        """
Date,Open,High,Low,Close,Volume
2024-01-02,10,11,9,,1000
2024-01-03,10,11,9,10.5,-5
2024-01-04,10,9,11,10,100
2024-01-05,10,11,9,10.2,200
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path), "BAD")
    assert len(bars) == 4  # nothing dropped: the Spark job quarantines these
    assert math.isnan(bars.loc[0, "close"])
    assert bars.loc[1, "volume"] == -5
    assert (bars.loc[2, "high"], bars.loc[2, "low"]) == (9.0, 11.0)
    assert bars.loc[3, "close"] == 10.2


def test_missing_column_is_a_per_symbol_error_naming_it(tmp_path):
    path = _write(tmp_path / "X.csv", "Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1.5")
    with pytest.raises(SourceError, match=r"X\.csv: missing column\(s\) Volume"):
        _fetch(get_source("csv", OFFLINE, path=path), "X")


def test_directory_of_csvs(tmp_path):
    _write(tmp_path / "a.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10")
    _write(tmp_path / "b.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,3,4,2.5,3.5,20")
    (tmp_path / "notes.txt").write_text("not a csv")
    src = get_source("csv", OFFLINE, path=tmp_path)
    assert src.available_symbols() == ["A", "B"]
    assert _fetch(src, "b")["close"].tolist() == [3.5]


def test_missing_path_fails_at_construction(tmp_path):
    with pytest.raises(ParameterError, match=r"parameter `path`: '.*nope\.csv' is not an existing"):
        get_source("csv", OFFLINE, path=tmp_path / "nope.csv")


def test_fractional_volume_is_a_clear_per_symbol_error(tmp_path):
    path = _write(
        tmp_path / "BTC.csv",
        "Date,Open,High,Low,Close,Volume\n2012-01-31,4.58,7.38,3.8,5.55,2012.25",
    )
    with pytest.raises(SourceError, match="bars do not fit the bar contract") as info:
        _fetch(get_source("csv", OFFLINE, path=path), "BTC")
    assert info.value.symbol == "BTC"

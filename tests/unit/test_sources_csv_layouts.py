"""The csv source on exports as people have them: date layouts, zones, headers, numbers.

Each file is small and made for the test; expected values are written out by hand
(or computed with zoneinfo), never by the parser under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from stockpipe.config import Settings
from stockpipe.errors import ParameterError, SourceError
from stockpipe.sources import fetch_many, get_source

OFFLINE = Settings(_env_file=None)
NY = ZoneInfo("America/New_York")


def _write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def _fetch(source, symbol: str, **kw) -> pd.DataFrame:
    return source.fetch(symbol, batch_id="t-layouts", **kw)


def _days(bars: pd.DataFrame) -> list[str]:
    return [t.strftime("%Y-%m-%d") for t in bars["ts"]]


def _utc(*args: int, tz: ZoneInfo | None = None) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=tz or UTC)).tz_convert("UTC")


YAHOO_US = """
Date,Open,High,Low,Close,Adj Close,Volume
1/4/1999,10.5,11,10.25,10.75,9.5,1200
1/5/1999,10.75,11.5,10.5,11.25,9.94,1500
12/31/1999,20,21,19.5,20.5,18.1,900
"""


def test_us_month_first_yahoo_export_under_another_name_with_the_one_symbol_asked(tmp_path):
    path = _write(tmp_path / "download (3).csv", YAHOO_US)
    result = fetch_many(get_source("csv", OFFLINE, path=path), "goog", batch_id="b", progress=False)
    assert result.failed == []
    bars = result.bars
    assert _days(bars) == ["1999-01-04", "1999-01-05", "1999-12-31"]
    assert set(bars["symbol"]) == {"GOOG"}
    assert bars["adj_close"].tolist() == [9.5, 9.94, 18.1]
    assert bars["volume"].tolist() == [1200, 1500, 900]


def test_a_single_file_asked_for_two_symbols_says_it_holds_one(tmp_path):
    path = _write(tmp_path / "prices.csv", YAHOO_US)
    result = fetch_many(
        get_source("csv", OFFLINE, path=path), "IBM,MSFT", batch_id="b", progress=False
    )
    assert [r.symbol for r in result.failed] == ["IBM", "MSFT"]
    assert "prices.csv holds one symbol's bars, read as PRICES" in result.failed[0].error
    assert "ask for that one symbol alone" in result.failed[0].error


def test_day_first_semicolons_and_decimal_commas(tmp_path):
    path = _write(
        tmp_path / "SAP.csv",
        """
Date;Open;High;Low;Close;Volume
04.01.1999;1.234,50;1.240,00;1.230,25;1.238,75;12.000
25.01.1999;1.250,00;1.260,50;1.245,00;1.255,25;9.500
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path), "SAP")
    assert _days(bars) == ["1999-01-04", "1999-01-25"]
    assert bars["open"].tolist() == [1234.5, 1250.0]
    assert bars["close"].tolist() == [1238.75, 1255.25]
    assert bars["volume"].tolist() == [12000, 9500]


AMBIGUOUS = """
Date,Open,High,Low,Close,Volume
01/02/2024,1,2,0.5,1.5,10
02/03/2024,1,2,0.5,1.6,11
"""


def test_ambiguous_dates_are_refused_with_the_options_that_settle_them(tmp_path):
    path = _write(tmp_path / "X.csv", AMBIGUOUS)
    with pytest.raises(SourceError, match=r"ambiguous dates: '01/02/2024' .*dayfirst=False"):
        _fetch(get_source("csv", OFFLINE, path=path), "X")
    day_first = _fetch(get_source("csv", OFFLINE, path=path, dayfirst=True), "X")
    assert _days(day_first) == ["2024-02-01", "2024-03-02"]
    month_first = _fetch(get_source("csv", OFFLINE, path=path, dayfirst=False), "X")
    assert _days(month_first) == ["2024-01-02", "2024-02-03"]
    given = _fetch(get_source("csv", OFFLINE, path=path, date_format="%d/%m/%Y"), "X")
    assert _days(given) == ["2024-02-01", "2024-03-02"]


def test_a_day_above_twelve_settles_day_first_without_options(tmp_path):
    path = _write(
        tmp_path / "Y.csv",
        "Date,Open,High,Low,Close,Volume\n"
        "02/01/2024,1,2,0.5,1.5,10\n13/01/2024,1,2,0.5,1.6,11\n03/02/2024,1,2,0.5,1.7,12",
    )
    assert _days(_fetch(get_source("csv", OFFLINE, path=path), "Y")) == [
        "2024-01-02",
        "2024-01-13",
        "2024-02-03",
    ]


def test_iso_dates_and_datetimes_with_offsets_and_z(tmp_path):
    daily = _write(tmp_path / "D.csv", "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10")
    assert _days(_fetch(get_source("csv", OFFLINE, path=daily), "D")) == ["2024-01-02"]
    intraday = _write(
        tmp_path / "I.csv",
        """
Datetime,Open,High,Low,Close,Volume
2024-01-02T14:30:00Z,1,2,0.5,1.5,10
2024-01-02T09:31:00-0500,1,2,0.5,1.5,10
2024-01-02 16:02:00+01:00,1,2,0.5,1.5,10
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=intraday), "I", interval="1m")
    assert list(bars["ts"]) == [
        _utc(2024, 1, 2, 14, 30),
        _utc(2024, 1, 2, 14, 31),
        _utc(2024, 1, 2, 15, 2),
    ]


def test_zone_names_and_us_abbreviations_across_the_dst_change(tmp_path):
    path = _write(
        tmp_path / "SPY.csv",
        """
Time,Open,High,Low,Close,Volume
2024-03-08 09:30:00 America/New_York,1,2,0.5,1.5,10
2024-03-08 10:30:00 EST,1,2,0.5,1.5,10
2024-03-11 09:30:00 America/New_York,1,2,0.5,1.5,10
2024-03-11 10:30:00 EDT,1,2,0.5,1.5,10
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path), "SPY", interval="1h")
    assert list(bars["ts"]) == [
        _utc(2024, 3, 8, 9, 30, tz=NY),
        _utc(2024, 3, 8, 10, 30, tz=NY),
        _utc(2024, 3, 11, 9, 30, tz=NY),
        _utc(2024, 3, 11, 10, 30, tz=NY),
    ]
    assert [t.strftime("%H:%M") for t in bars["ts"]] == ["14:30", "15:30", "13:30", "14:30"]


def test_epoch_seconds_and_milliseconds(tmp_path):
    first = int(datetime(2024, 1, 2, 14, 30, tzinfo=UTC).timestamp())
    rows = "\n".join(f"{first + 300 * i},1,2,0.5,{1 + i},10" for i in range(3))
    seconds = _write(tmp_path / "S.csv", f"timestamp,open,high,low,close,volume\n{rows}")
    bars = _fetch(get_source("csv", OFFLINE, path=seconds), "S", interval="5m")
    assert list(bars["ts"]) == [_utc(2024, 1, 2, 14, 30 + 5 * i) for i in range(3)]
    ms_rows = "\n".join(f"{(first + 60 * i) * 1000},1,2,0.5,1,10" for i in range(3))
    millis = _write(tmp_path / "M.csv", f"timestamp,open,high,low,close,volume\n{ms_rows}")
    bars = _fetch(get_source("csv", OFFLINE, path=millis), "M", interval="1m")
    assert list(bars["ts"]) == [_utc(2024, 1, 2, 14, 30 + i) for i in range(3)]
    # daily bars stamped at the open: the trading date, read in the exchange's zone
    days = "\n".join(f"{first + 86_400 * i},1,2,0.5,1,10" for i in range(3))
    daily = _write(tmp_path / "E.csv", f"timestamp,open,high,low,close,volume\n{days}")
    bars = _fetch(get_source("csv", OFFLINE, path=daily, tz="America/New_York"), "E")
    assert _days(bars) == ["2024-01-02", "2024-01-03", "2024-01-04"]


def test_alpha_vantage_adjusted_export_newest_first(tmp_path):
    path = _write(
        tmp_path / "daily_adjusted_IBM.csv",
        """
timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient
2024-01-03,161.0,161.73,160.08,160.1,152.5,4086100,0.0000,1.0
2024-01-02,162.83,163.29,160.5,161.5,153.83,3825045,0.0000,1.0
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path, symbol="IBM"), "IBM")
    assert _days(bars) == ["2024-01-02", "2024-01-03"]
    assert bars["adj_close"].tolist() == [153.83, 152.5]
    assert bars["volume"].tolist() == [3825045, 4086100]


def test_stooq_export_with_ticker_column_and_separate_time(tmp_path):
    path = _write(
        tmp_path / "stooq.txt",
        """
<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>
AAPL.US,5,20240102,153000,187.15,188.0,187.0,187.5,1000,0
MSFT.US,5,20240102,153000,370.0,371.0,369.5,370.5,2000,0
AAPL.US,5,20240102,153500,187.5,188.2,187.4,188.0,1100,0
MSFT.US,5,20240102,153500,370.5,372.0,370.0,371.5,2100,0
""",
    )
    src = get_source("csv", OFFLINE, path=path)
    assert src.available_symbols() == ["AAPL.US", "MSFT.US"]
    assert src.available_symbols("5m") == ["AAPL.US", "MSFT.US"]
    bars = _fetch(src, "msft.us", interval="5m")
    assert list(bars["ts"]) == [_utc(2024, 1, 2, 15, 30), _utc(2024, 1, 2, 15, 35)]
    assert bars["close"].tolist() == [370.5, 371.5]
    assert bars["volume"].tolist() == [2000, 2100]


def test_investing_style_month_names_price_column_and_volume_suffixes(tmp_path):
    path = _write(
        tmp_path / "Apple Stock Price History.csv",
        """
"Date","Price","Open","High","Low","Vol.","Change %"
"Jan 05, 2024","181.18","181.99","182.76","180.17","62.38M","-0.40%"
"Jan 04, 2024","181.91","182.15","183.09","180.88","71.98K","-1.27%"
"Jan 03, 2024","184.25","184.22","185.88","183.43","1,234","-0.75%"
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path, symbol="AAPL"), "AAPL")
    assert _days(bars) == ["2024-01-03", "2024-01-04", "2024-01-05"]
    assert bars["close"].tolist() == [184.25, 181.91, 181.18]
    assert bars["volume"].tolist() == [1234, 71980, 62380000]


def test_broker_export_with_dollar_signs_and_thousands_separators(tmp_path):
    path = _write(
        tmp_path / "HistoricalData_1704400000.csv",
        """
Date,Close/Last,Volume,Open,High,Low
01/04/2024,"$1,181.91","71,983,570","$1,182.15",$1183.0865,"$1,180.88"
12/29/2023,$184.25,58414460,$184.22,$185.88,$183.43
""",
    )
    bars = _fetch(get_source("csv", OFFLINE, path=path, symbol="AAPL"), "AAPL")
    assert _days(bars) == ["2023-12-29", "2024-01-04"]
    assert bars["close"].tolist() == [184.25, 1181.91]
    assert bars["high"].tolist() == [185.88, 1183.0865]
    assert bars["volume"].tolist() == [58414460, 71983570]


def test_a_comma_that_is_no_thousands_separator_asks_for_the_decimal_option(tmp_path):
    path = _write(
        tmp_path / "Z.csv", 'Date,Open,High,Low,Close,Volume\n2024-01-02,"1,5",2,1,1.5,10'
    )
    with pytest.raises(SourceError, match=r"'1,5' \(row 2\) is not a number.*decimal=','"):
        _fetch(get_source("csv", OFFLINE, path=path), "Z")


def test_a_symbol_column_a_directory_and_a_glob(tmp_path):
    _write(
        tmp_path / "many.csv",
        "Symbol,Date,Open,High,Low,Close,Volume\n"
        "aapl,2024-01-02,1,2,0.5,1.5,10\nmsft,2024-01-02,3,4,2.5,3.5,20\n"
        "aapl,2024-01-03,1,2,0.5,1.7,30",
    )
    _write(tmp_path / "ibm.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,5,6,4.5,5.5,40")
    (tmp_path / "notes.txt").write_text("not a csv")
    folder = get_source("csv", OFFLINE, path=tmp_path)
    assert sorted(folder.available_symbols()) == ["AAPL", "IBM", "MSFT"]
    assert _fetch(folder, "AAPL")["close"].tolist() == [1.5, 1.7]
    assert _fetch(folder, "IBM")["volume"].tolist() == [40]
    pattern = get_source("csv", OFFLINE, path=tmp_path / "m*.csv")
    assert pattern.available_symbols() == ["AAPL", "MSFT"]
    assert _fetch(pattern, "MSFT")["close"].tolist() == [3.5]
    with pytest.raises(ParameterError, match=r"`path`: '.*zz\*\.csv' is not a glob that matches"):
        get_source("csv", OFFLINE, path=tmp_path / "zz*.csv")


BAD_ROWS = """
Date,Open,High,Low,Close,Volume
1/4/1999,1,2,0.5,1.5,10
1/5/1999,1,2,0.5,1.6,11
13/45/1999,1,2,0.5,1.7,12
,1,2,0.5,1.8,13
1/7/1999,1,2,0.5,1.9,14
1/15/1999,1,2,0.5,2.0,15
"""


def test_an_unreadable_row_is_reported_with_its_number_and_the_layouts_tried(tmp_path):
    path = _write(tmp_path / "B.csv", BAD_ROWS)
    with pytest.raises(SourceError) as info:
        _fetch(get_source("csv", OFFLINE, path=path), "B")
    text = str(info.value)
    assert "B.csv: row 4: time '13/45/1999' does not parse as month first %m/%d/%Y" in text
    assert "layouts tried: ISO 8601" in text and "day-first D/M/Y" in text
    assert "2 of 6 rows cannot be read (errors='skip' reads the others)" in text


def test_errors_skip_reads_the_rest_and_counts_what_it_left_out(tmp_path):
    path = _write(tmp_path / "B.csv", BAD_ROWS)
    src = get_source("csv", OFFLINE, path=path, errors="skip")
    result = fetch_many(src, "B", batch_id="b", progress=False)
    assert _days(result.bars) == ["1999-01-04", "1999-01-05", "1999-01-07", "1999-01-15"]
    assert result.bars["close"].tolist() == [1.5, 1.6, 1.9, 2.0]
    note = result.summary().loc[0, "note"]
    assert note.startswith("B.csv: skipped 2 of 6 rows that cannot be read: row 4: time")
    assert "row 5: empty time" in note


def test_naive_times_mixed_with_zoned_ones_are_refused(tmp_path):
    path = _write(
        tmp_path / "MIX.csv",
        "Datetime,Open,High,Low,Close,Volume\n"
        "2024-01-02 09:30:00-05:00,1,2,0.5,1.5,10\n2024-01-02 09:35:00,1,2,0.5,1.5,10",
    )
    with pytest.raises(SourceError, match="some times carry a UTC offset or zone and some do not"):
        _fetch(get_source("csv", OFFLINE, path=path), "MIX", interval="5m")


def test_a_naive_time_that_does_not_exist_in_the_zone_is_a_bad_row(tmp_path):
    path = _write(
        tmp_path / "DST.csv",
        "Datetime,Open,High,Low,Close,Volume\n"
        "2024-03-10 01:30:00,1,2,0.5,1.5,10\n2024-03-10 02:30:00,1,2,0.5,1.5,10\n"
        "2024-03-10 03:30:00,1,2,0.5,1.5,10",
    )
    src = get_source("csv", OFFLINE, path=path, tz="America/New_York", errors="skip")
    bars = _fetch(src, "DST", interval="1h")
    assert list(bars["ts"]) == [_utc(2024, 3, 10, 1, 30, tz=NY), _utc(2024, 3, 10, 3, 30, tz=NY)]
    assert "row 3: time '2024-03-10 02:30:00' does not exist or is ambiguous" in src.note("DST")
